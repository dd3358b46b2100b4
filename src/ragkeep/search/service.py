"""Running a search: pick the kind and strategy, execute the one SQL statement, shape rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row

from ragkeep.search.filters import CompiledFilter
from ragkeep.search.queries import Kind, Strategy, build_search_sql
from ragkeep.search.scope import Scope


@dataclass(frozen=True)
class HybridParams:
    """R2R's hybrid_settings, with R2R's defaults."""

    full_text_weight: float = 1.0
    semantic_weight: float = 5.0
    full_text_limit: int = 200
    rrf_k: int = 50


def choose_strategy(scope: Scope) -> Strategy:
    """Exact scan until ragkeep manages vector indices (the planner issue decides per scope size)."""
    return Strategy.EXACT


async def run_search(
    conn: psycopg.AsyncConnection,
    kind: Kind,
    scope: Scope,
    filters: CompiledFilter,
    *,
    limit: int,
    offset: int = 0,
    query_text: str | None = None,
    query_vector: np.ndarray | None = None,
    hybrid: HybridParams | None = None,
    strategy: Strategy | None = None,
) -> list[dict[str, Any]]:
    """Rows with id, document_id, owner_id, collection_ids, text, metadata, score (and ranks for hybrid)."""
    strategy = strategy or choose_strategy(scope)
    query, params = build_search_sql(kind, scope, filters, strategy)
    params.update(limit=limit, offset=offset)
    if kind is not Kind.FULL_TEXT:
        assert query_vector is not None
        params["q"] = query_vector
    if kind is not Kind.SEMANTIC:
        assert query_text is not None
        params["text"] = query_text
    if kind is Kind.HYBRID:
        h = hybrid or HybridParams()
        params.update(
            semantic_limit=limit + offset,
            full_text_limit=h.full_text_limit + offset,
            rrf_k=h.rrf_k,
            semantic_weight=float(h.semantic_weight),
            full_text_weight=float(h.full_text_weight),
        )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
