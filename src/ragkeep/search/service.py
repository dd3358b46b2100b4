"""Running a search: plan it, apply the index settings, execute one SQL statement, shape rows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ragkeep.config import SearchConfig
from ragkeep.db.citus_sql import on_citus
from ragkeep.search.filters import CompiledFilter
from ragkeep.search.planner import Plan, Planner, pinned_owner
from ragkeep.search.queries import Kind, Strategy, build_search_sql, websearch_text
from ragkeep.search.scope import Scope


@dataclass(frozen=True)
class HybridParams:
    """R2R's hybrid_settings, with R2R's defaults."""

    full_text_weight: float = 1.0
    semantic_weight: float = 5.0
    full_text_limit: int = 200
    rrf_k: int = 50


@dataclass(frozen=True)
class IndexParams:
    """Query-time index settings: R2R's chunk_settings ``ef_search`` and ``probes``; None takes
    the ``[search]`` default."""

    ef_search: int | None = None
    probes: int | None = None

    def resolved(self, config: SearchConfig) -> IndexParams:
        return IndexParams(self.ef_search or config.ef_search, self.probes or config.probes)


@dataclass
class SearchOutcome:
    rows: list[dict[str, Any]]
    plan: Plan
    #: Rows the semantic part found (for hybrid: before fusion), to tell a short index scan.
    semantic_found: int | None = None
    #: EXPLAIN (ANALYZE) of the statement that produced ``rows``, when asked for.
    explain: list[dict[str, Any]] | None = None


_ITERATIVE_SCANS = frozenset({"off", "relaxed_order", "strict_order"})


@lru_cache(maxsize=256)
def index_settings_sql(ef_search: int, probes: int, iterative: str, max_scan_tuples: int, citus: bool) -> bytes:
    """The ``SET LOCAL`` statements of one search as one string (one round trip, simple protocol).

    SET takes no parameters, so the values are rendered as literals, after checking them: whole
    numbers, and an iterative-scan mode of the known ones. On Citus, ``SET LOCAL`` reaches the
    workers that run the search's shard queries once ``citus.propagate_set_commands = 'local'``
    (``set_config`` calls do not propagate: a worker's planner would not see them)."""
    if iterative not in _ITERATIVE_SCANS:
        raise ValueError(f"unknown iterative_scan {iterative!r}")
    values = [
        ("hnsw.ef_search", str(int(ef_search))),
        ("ivfflat.probes", str(int(probes))),
        ("hnsw.iterative_scan", iterative),
        ("hnsw.max_scan_tuples", str(int(max_scan_tuples))),
        # ivfflat knows only relaxed_order.
        ("ivfflat.iterative_scan", "off" if iterative == "off" else "relaxed_order"),
        ("enable_sort", "off"),
        ("plan_cache_mode", "force_custom_plan"),
    ]
    if citus:
        values.insert(0, ("citus.propagate_set_commands", "local"))
    statements = [sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)) for name, value in values]
    return sql.SQL("; ").join(statements).as_string(None).encode()


async def _apply_index_settings(conn: psycopg.AsyncConnection, config: SearchConfig, index: IndexParams) -> None:
    """SET LOCAL: the values last until the transaction ends, so a pooled connection never carries
    one request's settings into the next (the caller runs the search in a transaction).

    ``enable_sort = off`` makes PostgreSQL take the index the planner chose: left to itself, it
    prefers the owner_id btree plus a sort for scopes of a few thousand rows (its cost model does
    not know what an exact scan of 384-dimensional vectors costs). With sorts disabled, the only
    plan without a disabled node is the vector index's ordered scan.

    ``plan_cache_mode = force_custom_plan``: the search statement is prepared (psycopg does so
    after a few runs), and a generic plan could not prove a partial index's predicate
    (``owner_id = X``) from a parameter; a custom plan is made with the owner's value each time.

    One round trip, as the ``set_config`` SELECT it replaces (which Citus does not propagate)."""
    assert index.ef_search is not None and index.probes is not None  # resolved by the caller
    await conn.execute(
        index_settings_sql(
            index.ef_search, index.probes, config.iterative_scan, config.max_scan_tuples, await on_citus(conn)
        )
    )


async def _execute(
    conn: psycopg.AsyncConnection,
    kind: Kind,
    scope: Scope,
    filters: CompiledFilter,
    strategy: Strategy,
    params: dict[str, Any],
    explain: list[Any] | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    query, scope_params = build_search_sql(kind, scope, filters, strategy, count_owner="count_owner" in params)
    # On Citus a worker plans its shard's statement with the values as parameters, so it cannot
    # prove a partial index's predicate (owner_id = X) and scans the shard's global index: the
    # owner's own index is only used when the values are sent inline (client-side binding).
    inline = strategy is Strategy.OWNER_INDEX and await on_citus(conn)
    cursor = psycopg.AsyncClientCursor(conn, row_factory=dict_row) if inline else conn.cursor(row_factory=dict_row)
    async with cursor as cur:
        if explain is not None:
            await cur.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query), {**scope_params, **params},
                              prepare=False)
            explain[:] = (await cur.fetchone() or {}).get("QUERY PLAN", [])
        # Prepared once psycopg has seen the text a few times (parsing it costs ~0.1 ms, a tenth
        # of a small search). Index strategies run under force_custom_plan (see
        # _apply_index_settings); an exact scan's plan is the same whatever the owner.
        await cur.execute(query, {**scope_params, **params})
        rows = await cur.fetchall()
    if kind is Kind.SEMANTIC:
        for r in rows:
            r["score"] = 1 - r["distance"]  # cosine similarity, as R2R reports it
        return rows, len(rows)
    if kind is Kind.HYBRID:
        found = rows[0]["semantic_found"] if rows else 0
        for r in rows:
            del r["semantic_found"]
        return rows, found
    return rows, None


async def run_search(
    conn: psycopg.AsyncConnection,
    kind: Kind,
    scope: Scope,
    filters: CompiledFilter,
    *,
    planner: Planner,
    limit: int,
    offset: int = 0,
    query_text: str | None = None,
    query_vector: np.ndarray | None = None,
    hybrid: HybridParams | None = None,
    index: IndexParams | None = None,
    config: SearchConfig | None = None,
    strategy: Strategy | None = None,
    explain: bool = False,
) -> SearchOutcome:
    """Rows with id, document_id, owner_id, collection_ids, text, metadata, score (and ranks for
    hybrid), and the plan that produced them. ``strategy`` overrides the planner (benchmarks);
    ``explain`` also runs EXPLAIN ANALYZE of the final statement (tests, benchmarks). ``planner``
    is the application's (``Services.planner``): it remembers the index directory and small owners'
    counts between searches (required, so that no caller plans without that memory by mistake)."""
    config = config or SearchConfig()
    if explain and await on_citus(conn):
        # The planner's directory reads reference tables by local execution on the coordinator;
        # after that, Citus refuses a multi-shard EXPLAIN ANALYZE in the same transaction (it needs
        # its own connections to the placements). Explaining only: searches keep local execution.
        await conn.execute("SET LOCAL citus.enable_local_execution = off")
    if kind is Kind.FULL_TEXT:
        plan = Plan(Strategy.EXACT, 0, owner=pinned_owner(scope, filters.raw))  # no vectors involved
    elif strategy is not None:
        plan = Plan(strategy, -1, owner=pinned_owner(scope, filters.raw))
    else:
        plan = await planner.plan(conn, scope, filters.raw, config)
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if kind is not Kind.FULL_TEXT:
        if query_vector is None:
            raise ValueError(f"a {kind.value} search needs query_vector")
        params["q"] = query_vector
    if kind is not Kind.SEMANTIC:
        if query_text is None:
            raise ValueError(f"a {kind.value} search needs query_text")
        params["text"] = websearch_text(query_text)
    wanted = limit + offset
    if kind is Kind.HYBRID:
        h = hybrid or HybridParams()
        params.update(
            semantic_limit=wanted,
            full_text_limit=h.full_text_limit + offset,
            rrf_k=h.rrf_k,
            semantic_weight=float(h.semantic_weight),
            full_text_weight=float(h.full_text_weight),
        )
    plans: list[Any] | None = [] if explain else None
    if plan.strategy.uses_index:
        await _apply_index_settings(conn, config, (index or IndexParams()).resolved(config))
    if plan.count_owner is not None:
        params["count_owner"] = plan.count_owner  # counted by the search statement itself
    rows, found = await _execute(conn, kind, scope, filters, plan.strategy, params, plans)
    if (count_owner := plan.count_owner) is not None and rows:
        plan = replace(plan, scope_size=rows[0]["scope_count"])
        planner.remember_count(count_owner, plan.scope_size)
        for r in rows:
            del r["scope_count"]
    if plan.strategy.uses_index and config.exact_fallback and found is not None and found < wanted:
        # Short: the index ran out (filters too selective for max_scan_tuples, or a plain index
        # plan). Only the exact scan can tell "fewer rows match" from "the index missed them".
        plan = plan.with_fallback()
        rows, found = await _execute(conn, kind, scope, filters, Strategy.EXACT, params, plans)
    return SearchOutcome(rows, plan, found, plans)
