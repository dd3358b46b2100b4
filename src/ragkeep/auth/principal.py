"""Who is asking: the identity every request is checked against (``auth.users`` loads it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is asking, and what they may read: their own rows and their collections'."""

    id: uuid.UUID
    email: str
    is_superuser: bool
    collection_ids: tuple[uuid.UUID, ...]
