"""The search SQL: built in one place from (kind, scope, filters, strategy).

The caller's filters are ANDed inside the scope clause, so no ``$or`` can widen what a tenant
reads. Each strategy has its own SQL text, so a prepared statement's cached generic plan for one
is never reused for another (PostgreSQL keys plans by text, not by session settings).
"""

from __future__ import annotations

import enum
import functools
import re
from typing import Any

from psycopg import sql

from ragkeep.search.filters import CompiledFilter
from ragkeep.search.scope import Scope, clause_sql


class Strategy(enum.Enum):
    #: Compute every distance in scope: recall 1.0, cost linear in the scope's size.
    EXACT = "exact"
    #: The global vector index as PostgreSQL plans it (R2R's plan): filtered scopes may come back short.
    INDEX = "index"
    #: The global index with an iterative scan (pgvector 0.8): keeps scanning until enough rows pass
    #: the filters, within max_scan_tuples; the rows are re-sorted exactly.
    ITERATIVE = "iterative"
    #: The owner's own partial HNSW index (tenant promotion).
    OWNER_INDEX = "owner_index"

    @property
    def uses_index(self) -> bool:
        return self is not _EXACT  # not Strategy.EXACT: a member look-up is a Python call in 3.11


_EXACT = Strategy.EXACT


class Kind(enum.Enum):
    SEMANTIC = "semantic"
    FULL_TEXT = "full_text"
    HYBRID = "hybrid"


COLUMNS = sql.SQL("c.id, c.document_id, c.owner_id, c.collection_ids, c.text, c.metadata")
DISTANCE = sql.SQL("c.embedding <=> %(q)s::vector")
TSQUERY = sql.SQL("websearch_to_tsquery('english', %(text)s)")
#: A run of negations: ``-`` not inside a word, then more ``-`` with only separators between
#: (``--x``, ``- - x``, ``-(-(-x``). Quotes end a run: a phrase keeps its own text.
_NEGATIONS = re.compile(r'(?<![\w-])-(?:[^\w"]*-)+')


def websearch_text(text: str) -> str:
    """``text`` as :data:`TSQUERY` may take it: PostgreSQL nests one NOT per ``-`` and fails with
    "tsquery stack too small" past ~32 in a row, so each run of negations becomes one ``-`` or
    none (the same parity, hence the same meaning)."""
    return _NEGATIONS.sub(lambda m: " -" if m.group().count("-") % 2 else " ", text)
SCOPE_COUNT = sql.SQL(
    ", (SELECT coalesce(max(chunk_count), 0) FROM owner_stats WHERE owner_id = %(count_owner)s) AS scope_count"
)


def _distance(strategy: Strategy) -> sql.Composable:
    # "+ 0" makes the sort key an expression no vector index can serve: an exact scan by construction.
    return DISTANCE if strategy.uses_index else sql.SQL("({}) + 0").format(DISTANCE)


def build_search_sql(
    kind: Kind, scope: Scope, filters: CompiledFilter, strategy: Strategy = Strategy.EXACT, count_owner: bool = False
) -> tuple[sql.SQL, dict[str, Any]]:
    """The query and its scope/filter parameters.

    The caller adds: ``q`` (query vector) for semantic and hybrid, ``text`` for full-text and
    hybrid, ``limit``/``offset``, and for hybrid ``semantic_limit``, ``full_text_limit``, ``rrf_k``,
    ``semantic_weight``, ``full_text_weight``.

    ``count_owner`` adds ``scope_count``, the vectors of owner ``%(count_owner)s`` (owner_stats), to
    every row: the planner's scope size for the metrics, at no extra round trip.

    Semantic rows carry ``distance`` (cosine), not a score: ``run_search`` adds ``score = 1 -
    distance``, so an exact scan needs no outer query to compute it. Full-text and hybrid rows
    carry ``score``.

    Outer sorts are on ``distance + 0``: an index scan with relaxed order claims a sort order it
    only approximates, and PostgreSQL would trust it and skip a sort on ``distance`` itself.
    """
    query = _search_sql(kind, scope.shape, filters.text, strategy, count_owner)
    return query, {**scope.params(), **filters.params}


@functools.lru_cache(maxsize=1024)
def _search_sql(kind: Kind, scope_shape: str, filter_text: str, strategy: Strategy, count_owner: bool) -> sql.SQL:
    """Composed once per shape and rendered to plain text: composing costs ~80 us a search, and the
    same text each time lets psycopg prepare it (and cache its placeholder parsing)."""
    where = sql.SQL("{} AND {}").format(clause_sql("c", scope_shape), sql.SQL(filter_text))
    count = SCOPE_COUNT if count_owner else sql.SQL("")
    # Distances and ranks are computed once per row, in an inner query, and sorted by alias: the
    # vector is read once (a second <=> in the select list doubled the cost of exact scans).
    if kind is Kind.SEMANTIC and not strategy.uses_index:
        # One level: the scan is exact, so its order is final (a nested re-sort cost ~0.1 ms of a
        # 1.3 ms small-scope search). The score (1 - distance) is added by the caller.
        query = sql.SQL(
            "SELECT {cols}, {distance} AS distance{count} FROM chunks c WHERE {where} "
            "ORDER BY distance, c.id LIMIT %(limit)s::bigint OFFSET %(offset)s::bigint"
        ).format(cols=COLUMNS, distance=_distance(strategy), where=where, count=count)
    elif kind is Kind.SEMANTIC:
        query = sql.SQL(
            "SELECT c.*{count} FROM ("
            "SELECT {cols}, {distance} AS distance FROM chunks c WHERE {where} "
            "ORDER BY distance LIMIT %(limit)s::bigint + %(offset)s::bigint) c "
            "ORDER BY c.distance + 0, c.id LIMIT %(limit)s::bigint OFFSET %(offset)s::bigint"
        ).format(cols=COLUMNS, distance=_distance(strategy), where=where, count=count)
    elif kind is Kind.FULL_TEXT:
        query = sql.SQL(
            "SELECT {cols}, ts_rank(c.tsv, {tsq}) AS score FROM chunks c WHERE {where} AND c.tsv @@ {tsq} "
            "ORDER BY score DESC, c.id LIMIT %(limit)s::bigint OFFSET %(offset)s::bigint"
        ).format(cols=COLUMNS, tsq=TSQUERY, where=where)  # ORDER BY an alias: ts_rank runs once
    else:
        # Reciprocal rank fusion as R2R computes it: a chunk missing from one list takes that
        # list's limit as its rank; the score is the weighted mean of 1 / (rrf_k + rank).
        # The final join repeats the scope (true of every fused row already): on Citus it pins the
        # join to the owner's shard too, so a user's hybrid search is one task, not one per shard.
        query = sql.SQL(
            """WITH semantic AS (
                   SELECT s.owner_id, s.id, row_number() OVER (ORDER BY s.distance + 0, s.id) AS rank
                   FROM (SELECT c.owner_id, c.id, {distance} AS distance FROM chunks c WHERE {where}
                         ORDER BY distance LIMIT %(semantic_limit)s::bigint) s
               ), full_text AS (
                   SELECT f.owner_id, f.id, row_number() OVER (ORDER BY f.r DESC, f.id) AS rank
                   FROM (SELECT c.owner_id, c.id, ts_rank(c.tsv, {tsq}) AS r FROM chunks c
                         WHERE {where} AND c.tsv @@ {tsq} ORDER BY r DESC, c.id LIMIT %(full_text_limit)s::bigint) f
               ), fused AS (
                   SELECT coalesce(s.owner_id, f.owner_id) AS owner_id, coalesce(s.id, f.id) AS id,
                          coalesce(s.rank, %(semantic_limit)s::bigint) AS semantic_rank,
                          coalesce(f.rank, %(full_text_limit)s::bigint) AS full_text_rank
                   FROM semantic s FULL OUTER JOIN full_text f ON s.owner_id = f.owner_id AND s.id = f.id
               )
               SELECT {cols}, fused.semantic_rank, fused.full_text_rank{count},
                      (SELECT count(*) FROM semantic) AS semantic_found,
                      (%(semantic_weight)s::float8 / (%(rrf_k)s::int + fused.semantic_rank)
                       + %(full_text_weight)s::float8 / (%(rrf_k)s::int + fused.full_text_rank))
                      / (%(semantic_weight)s::float8 + %(full_text_weight)s::float8) AS score
               FROM fused JOIN chunks c ON c.owner_id = fused.owner_id AND c.id = fused.id
               WHERE {where}
               ORDER BY score DESC, c.id LIMIT %(limit)s::bigint OFFSET %(offset)s::bigint"""
        ).format(cols=COLUMNS, distance=_distance(strategy), tsq=TSQUERY, where=where, count=count)
    return sql.SQL(query.as_string(None))
