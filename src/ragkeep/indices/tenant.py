"""Tenant promotion: the one-owner ``filters`` of ``POST /v3/indices`` that asks for a partial index.

Only a single owner is accepted (``{"owner_id": {"$eq": uuid}}``, ``user_id`` alike, or a bare uuid
value): a partial index answers exactly the searches whose scope is that owner, and any other
filter shape would build an index the planner could never match. Everything else is refused.
"""

from __future__ import annotations

import uuid
from typing import Any

from ragkeep.indices.build import IndexSpecError

OWNER_FIELDS = ("owner_id", "user_id")
_SHAPE = 'filters: expected exactly one owner, e.g. {"owner_id": {"$eq": "<uuid>"}} (or user_id)'


def owner_from_filters(filters: Any) -> uuid.UUID | None:
    """The owner a filter names; None for no filter (or an empty one); IndexSpecError otherwise."""
    if filters is None or filters == {}:
        return None
    if not isinstance(filters, dict) or len(filters) != 1:
        raise IndexSpecError(_SHAPE)
    (field, condition), = filters.items()
    if field not in OWNER_FIELDS:
        raise IndexSpecError(f"{_SHAPE}; {str(field)[:60]!r} is not an owner field")
    if isinstance(condition, dict):
        if set(condition) != {"$eq"}:
            raise IndexSpecError(f"filters.{field}: only $eq with one user id is supported")
        condition = condition["$eq"]
    if not isinstance(condition, str):
        raise IndexSpecError(f"filters.{field}: expected one user id (a UUID string)")
    try:
        return uuid.UUID(condition)
    except ValueError:
        raise IndexSpecError(f"filters.{field}: not a valid UUID: {condition[:60]!r}") from None
