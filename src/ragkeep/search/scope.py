"""The rows a caller may read. Tenant isolation is this clause, not a filter the caller sends."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import sql


@dataclass(frozen=True)
class Scope:
    """Everything (superuser), or the caller's own rows plus their collections'. Built from plain
    values (``ragkeep.api.deps.scope_of`` makes the caller's): search knows no users."""

    owner_id: uuid.UUID | None
    collection_ids: tuple[uuid.UUID, ...] = ()

    @property
    def is_single_owner(self) -> bool:
        return self.owner_id is not None and not self.collection_ids

    @property
    def shape(self) -> str:
        """What the clause's SQL text depends on (its values travel as parameters)."""
        if self.owner_id is None:
            return "all"
        return "shared" if self.collection_ids else "owner"

    def clause(self, alias: str = "c") -> tuple[sql.Composable, dict[str, Any]]:
        """SQL for ``alias`` (a chunks or documents row) and its parameters."""
        return clause_sql(alias, self.shape), self.params()

    def params(self) -> dict[str, Any]:
        if self.owner_id is None:
            return {}
        if not self.collection_ids:
            return {"scope_owner": self.owner_id}
        return {"scope_owner": self.owner_id, "scope_collections": list(self.collection_ids)}


@functools.lru_cache(maxsize=16)
def clause_sql(alias: str, shape: str) -> sql.Composable:
    """The scope clause of a :attr:`Scope.shape`, for a row aliased ``alias``."""
    if shape == "all":
        return sql.SQL("TRUE")
    owner = sql.SQL("{} = %(scope_owner)s").format(sql.Identifier(alias, "owner_id"))
    if shape == "owner":
        return owner
    shared = sql.SQL("{} && %(scope_collections)s::uuid[]").format(sql.Identifier(alias, "collection_ids"))
    return sql.SQL("({} OR {})").format(owner, shared)
