"""Per search: how many vectors the caller's scope holds, and so how to search them.

Exact scans cost time linear in the scope (about a microsecond or two per vector) and return
every true neighbour; HNSW answers large scopes in milliseconds but, filtered to one tenant,
PostgreSQL's plain index plan comes back short or wrong. So: exact below a threshold, the owner's
own partial index where one exists, else the global index with an iterative scan. Scope sizes come
from ``owner_stats`` (kept exact by triggers), not from counting rows per query.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from ragkeep.config import SearchConfig
from ragkeep.search.queries import Strategy
from ragkeep.search.scope import Scope

_OWNER_KEYS = ("owner_id", "user_id")

# One round trip: the scope's vector count, whether the owner has a valid partial index, whether a
# valid global cosine index exists. Shared collections are counted only up to the threshold: the
# planner needs to know "above or below", and that bound keeps the count cheap.
_PLAN_SQL = """
SELECT
  CASE WHEN %(all)s THEN (SELECT coalesce(sum(chunk_count), 0)::bigint FROM owner_stats)
       ELSE coalesce((SELECT chunk_count FROM owner_stats WHERE owner_id = %(owner)s), 0) END
  + CASE WHEN %(collections)s::uuid[] IS NULL THEN 0
         ELSE (SELECT count(*) FROM (SELECT 1 FROM chunks
               WHERE collection_ids && %(collections)s::uuid[] AND owner_id <> %(owner)s
               LIMIT %(cap)s) shared) END AS scope_size,
  %(index_owner)s::uuid IS NOT NULL AND EXISTS (
      SELECT 1 FROM tenant_indexes t
      JOIN pg_class ic ON ic.relname = t.index_name AND ic.relnamespace = current_schema()::regnamespace
      JOIN pg_index i ON i.indexrelid = ic.oid
      WHERE t.owner_id = %(index_owner)s AND t.measure = 'cosine_distance' AND i.indisvalid
  ) AS owner_index,
  EXISTS (
      SELECT 1 FROM pg_index i
      JOIN pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_am am ON am.oid = ic.relam
      JOIN pg_opclass opc ON opc.oid = i.indclass[0]
      WHERE i.indrelid = 'chunks'::regclass AND i.indpred IS NULL AND i.indisvalid
        AND am.amname IN ('hnsw', 'ivfflat') AND opc.opcname = 'vector_cosine_ops'
  ) AS global_index,
  CASE WHEN %(narrow)s::uuid IS NULL THEN NULL
       ELSE coalesce((SELECT chunk_count FROM owner_stats WHERE owner_id = %(narrow)s), 0) END AS narrow_size
"""


@dataclass(frozen=True)
class Plan:
    """What the planner chose, and what it saw (reported with the search's metrics)."""

    strategy: Strategy
    #: Vectors the scope holds (after an owner filter narrows it), as the planner counted them.
    scope_size: int
    #: Ran the exact scan after an index scan came back short.
    fallback: bool = False

    def with_fallback(self) -> Plan:
        return replace(self, strategy=Strategy.EXACT, fallback=True)


def filtered_owner(filters: dict[str, Any]) -> uuid.UUID | None:
    """The one owner an (already validated) filter pins the search to, at its top level or in a
    top-level ``$and``: ``{"user_id": {"$eq": X}}`` or ``{"owner_id": X}``. An owner filter is how
    a superuser (and R2R's clients) search one user's data, and the scope size must follow it."""
    terms: list[dict[str, Any]] = [filters]
    terms += [t for t in filters.get("$and", []) if isinstance(t, dict)]
    for term in terms:
        for key in _OWNER_KEYS:
            if key not in term:
                continue
            value = term[key]
            if isinstance(value, dict):
                if set(value) != {"$eq"}:
                    continue
                value = value["$eq"]
            try:
                return uuid.UUID(str(value))
            except ValueError:
                continue
    return None


async def plan_search(
    conn: psycopg.AsyncConnection, scope: Scope, filters: dict[str, Any], config: SearchConfig
) -> Plan:
    narrow = filtered_owner(filters)
    # A partial index serves a query only if its predicate (owner_id = X) follows from the WHERE
    # clause: a single-owner scope, or an owner filter.
    index_owner = narrow or (scope.owner_id if scope.is_single_owner else None)
    cur = await conn.execute(
        _PLAN_SQL,
        {
            "all": scope.owner_id is None,
            "owner": scope.owner_id,
            "collections": list(scope.collection_ids) or None,
            "cap": config.exact_threshold + 1,
            "narrow": narrow,
            "index_owner": index_owner,
        },
        prepare=True,
    )
    row = await cur.fetchone()
    assert row is not None
    scope_size, owner_index, global_index, narrow_size = row
    if narrow is not None:
        scope_size = min(scope_size, narrow_size)
    if scope_size <= config.exact_threshold:
        return Plan(Strategy.EXACT, scope_size)
    if owner_index:
        return Plan(Strategy.OWNER_INDEX, scope_size)
    if global_index:
        return Plan(Strategy.ITERATIVE if config.iterative_scan != "off" else Strategy.INDEX, scope_size)
    return Plan(Strategy.EXACT, scope_size)
