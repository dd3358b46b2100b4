"""Semantic search over chunks: one function builds the SQL from (scope, filters, strategy).

Tenant isolation is not a filter the caller can replace: the scope clause is ANDed outside
whatever the caller's filters compile to, so no ``$or`` can widen it.

Each strategy has its own SQL text, so a prepared statement's cached generic plan for one can
never be reused for another (PostgreSQL keys plans by text, not by session settings).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ragkeep.auth.users import Principal
from ragkeep.search.filters import CompiledFilter


class Strategy(enum.Enum):
    #: Compute every distance in scope: recall 1.0, cost linear in the scope's size.
    EXACT = "exact"
    #: Let PostgreSQL use a vector index (approximate); the planner issue adds its settings.
    INDEX = "index"


@dataclass(frozen=True)
class Scope:
    """The rows a caller may read: everything (superuser), or their own plus their collections'."""

    owner_id: uuid.UUID | None
    collection_ids: tuple[uuid.UUID, ...] = ()

    @classmethod
    def for_principal(cls, principal: Principal) -> Scope:
        if principal.is_superuser:
            return cls(owner_id=None)
        return cls(owner_id=principal.id, collection_ids=principal.collection_ids)

    def clause(self, alias: str = "c") -> tuple[sql.Composable, dict[str, Any]]:
        if self.owner_id is None:
            return sql.SQL("TRUE"), {}
        owner = sql.SQL("{} = %(scope_owner)s").format(sql.Identifier(alias, "owner_id"))
        if not self.collection_ids:
            return owner, {"scope_owner": self.owner_id}
        shared = sql.SQL("{} && %(scope_collections)s::uuid[]").format(sql.Identifier(alias, "collection_ids"))
        return (
            sql.SQL("({} OR {})").format(owner, shared),
            {"scope_owner": self.owner_id, "scope_collections": list(self.collection_ids)},
        )


RESULT_COLUMNS = sql.SQL("c.id, c.document_id, c.owner_id, c.collection_ids, c.text, c.metadata, c.chunk_order")


def build_semantic_sql(
    scope: Scope, filters: CompiledFilter, strategy: Strategy, *, include_vectors: bool = False
) -> tuple[sql.Composable, dict[str, Any]]:
    """The query and its parameters; ``%(q)s`` is the query vector, then limit and offset."""
    scope_sql, params = scope.clause("c")
    params = {**params, **filters.params}
    distance = sql.SQL("c.embedding <=> %(q)s::vector")
    # "+ 0" makes the sort key an expression no vector index can serve: an exact scan, by construction.
    order = distance if strategy is Strategy.INDEX else sql.SQL("({}) + 0").format(distance)
    extra = sql.SQL(", c.embedding") if include_vectors else sql.SQL("")
    query = sql.SQL(
        "SELECT {cols}{extra}, 1 - ({distance}) AS score FROM chunks c "
        "WHERE {scope} AND {filters} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s"
    ).format(
        cols=RESULT_COLUMNS,
        extra=extra,
        distance=distance,
        scope=scope_sql,
        filters=filters.clause,
        order=order,
    )
    return query, params


def choose_strategy(scope: Scope) -> Strategy:
    """Exact scan until ragkeep manages vector indices (the planner issue decides per scope size)."""
    return Strategy.EXACT


async def semantic_search(
    conn: psycopg.AsyncConnection,
    scope: Scope,
    query_vector: np.ndarray,
    filters: CompiledFilter,
    *,
    limit: int,
    offset: int = 0,
    strategy: Strategy | None = None,
) -> list[dict[str, Any]]:
    strategy = strategy or choose_strategy(scope)
    query, params = build_semantic_sql(scope, filters, strategy)
    params.update(q=query_vector, limit=limit, offset=offset)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
