"""Real text for tests, written by nobody here: the Python reference topics and licence texts."""

from __future__ import annotations

import pydoc_data.topics
from pathlib import Path

TOPICS: dict[str, str] = pydoc_data.topics.topics
LICENSES = Path("/usr/share/common-licenses")


def topic(name: str, max_chars: int | None = None) -> str:
    text = TOPICS[name]
    return text[:max_chars] if max_chars else text


def paragraphs(name: str, count: int) -> str:
    """The first ``count`` non-trivial paragraphs of a topic: short documents embed fast."""
    paras = [p.strip() for p in TOPICS[name].split("\n\n") if len(p.strip()) > 80]
    return "\n\n".join(paras[:count])


def license_text(name: str, max_chars: int | None = None) -> str:
    path = LICENSES / name
    text = path.read_text(encoding="utf-8") if path.exists() else TOPICS["with"]
    return text[:max_chars] if max_chars else text
