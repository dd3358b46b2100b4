"""The documentation keeps up with the code: every setting is in docs/configuration.md, and the
README's layout paragraph names every package under src/ragkeep.

Both lists come from the code (the pydantic models, the source tree), so a new setting or package
fails here until it is documented.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

import ragkeep
from ragkeep.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(ragkeep.__file__).parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"

#: A TOML table header, commented out or not: ``[database.maintenance]``, ``# [metrics]``.
HEADER = re.compile(r"^\s*#?\s*\[([^\]]+)\]")
#: A quoted key in a header (``."/v3/retrieval/search"``, ``.chunks``) stands for any key of a table.
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _model_of(annotation: object) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def settings_paths(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every setting: ``database.maintenance.vacuum_full``; a table keyed by the
    user (``dict[str, Model]``) contributes its own name and its model's keys under ``*``."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section = _model_of(field.annotation)
        if section is not None:
            yield from settings_paths(section, f"{path}.")
            continue
        yield path
        if typing.get_origin(field.annotation) is dict:
            value = _model_of(typing.get_args(field.annotation)[1])
            if value is not None:
                yield from settings_paths(value, f"{path}.*.")


def _section_name(header: str, keyed: set[str]) -> str:
    """``limits.route_limits."/v3/retrieval/search"`` -> ``limits.route_limits.*``: the key that
    follows a table keyed by the user (``keyed``) stands for any key."""
    parts = [p.strip() for p in re.findall(r'"[^"]*"|[^.]+', header.strip())]
    for i in range(1, len(parts)):
        if ".".join(parts[:i]) in keyed:
            parts[i] = "*"
    return ".".join(parts)


def documented_paths(text: str, keyed: set[str]) -> set[str]:
    """Every ``section.word`` the TOML blocks of a page mention (as a key or in a comment), every
    table a header names, and every dotted name in backticks in its prose."""
    found = set(re.findall(r"`([a-z_]+(?:\.[a-z_*]+)+)`", text))
    for block in re.findall(r"```toml\n(.*?)```", text, flags=re.S):
        section = ""
        for line in block.splitlines():
            header = HEADER.match(line)
            if header:
                section = _section_name(header.group(1), keyed)
                parts = section.split(".")
                found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
                continue
            found.update(f"{section}.{word}" for word in WORD.findall(line))
    return found


def test_every_setting_is_documented() -> None:
    paths = list(settings_paths())
    keyed = {path.split(".*.")[0] for path in paths if ".*." in path}
    documented = documented_paths(CONFIGURATION.read_text(encoding="utf-8"), keyed)
    missing = [path for path in paths if path not in documented]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_the_walk_finds_nested_and_keyed_settings() -> None:
    """The test above can fail: the walk reaches nested sections and per-key tables."""
    paths = set(settings_paths())
    assert {"app.port", "database.maintenance.vacuum_full", "limits.route_limits.*.route_per_min"} <= paths
    assert "database.maintenance.thresholds.*.min_dead_share" in paths
    assert "database.maintenance" not in paths


def test_readme_layout_names_every_package() -> None:
    text = README.read_text(encoding="utf-8")
    layout = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert layout, "README.md has no ## Layout section"
    named = set(re.findall(r"`([a-z_]+)`", layout.group(1)))
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert packages, "no packages found under src/ragkeep"
    missing = [p for p in packages if p not in named]
    assert not missing, f"packages missing from README.md's layout paragraph: {missing}"
