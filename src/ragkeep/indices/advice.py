"""Does this deployment need vector indexes, and which? Answered from live data.

The rule the planner follows at query time decides here too: a scope of at most
``[search] exact_threshold`` vectors is searched exactly (recall 1.0, milliseconds), so an index
helps only scopes above it. Large single users are served best by their own partial HNSW index
(a few at most: each costs a build and memory); when many users are large, or cross-user searches
(superusers, shared collections) cover more than the threshold, one global HNSW index serves them
with iterative scans. Builds are proposed for the hour with the least search traffic.

A power user (a dominant share of all vectors, or of all searches) is named for dedicated capacity
(``recommendation.isolation``): on Citus a shard of their own (``ragkeep tenant isolate``), on a
single node their own partial index, as above.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from ragkeep.config import Settings
from ragkeep.indices.catalog import list_vector_indexes
from ragkeep.indices.isolation import on_citus, owner_shard
from ragkeep.indices.memory import MIB, plan_build
from ragkeep.indices.sizing import index_bytes

#: At most this many partial indexes are proposed; more large users call for a global index.
MAX_PARTIAL = 20
#: Cross-user searches above this share of all searches justify a global index.
CROSS_USER_SHARE = 0.05
#: Default build parameters (pgvector's), which reach recall@10 >= 0.97 with iterative scans in
#: bench/filtered.py.
M, EF_CONSTRUCTION = 16, 64
#: HNSW build cost per row per core at m=16, ef_construction=64, 384 dimensions, graph in memory,
#: measured by bench/filtered.py on this project's 2-core machine. Scales roughly with
#: ef_construction and the dimension.
BUILD_SECONDS_PER_ROW = 0.0006
#: Exact-scan cost per vector when no search has been observed yet (bench/search.py: ~1.4 us).
EXACT_MS_PER_VECTOR = 0.0015
#: A user holding at least this share of all vectors, or making this share of all searches, is a
#: power user: a candidate for dedicated capacity (their own shard on Citus).
DOMINANT_SHARE = 0.30
#: Below this many searches in the window, shares of searches say nothing.
MIN_SEARCHES_FOR_SHARE = 100

_VECTORS = """
SELECT coalesce(sum(chunk_count), 0)::bigint AS total,
       count(*) FILTER (WHERE chunk_count > 0) AS users,
       coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY chunk_count) FILTER (WHERE chunk_count > 0), 0) AS p50,
       coalesce(percentile_disc(0.99) WITHIN GROUP (ORDER BY chunk_count) FILTER (WHERE chunk_count > 0), 0) AS p99,
       coalesce(max(chunk_count), 0) AS max
FROM owner_stats
"""
_MEMORY = """
SELECT (SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers') AS shared_buffers,
       (SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'effective_cache_size') AS effective_cache_size
"""
_EMAILS = "SELECT id, email FROM users WHERE id = ANY(%(ids)s)"
_LARGE_USERS = """
SELECT s.owner_id AS user_id, u.email, s.chunk_count AS vectors,
       EXISTS (SELECT 1 FROM tenant_indexes t JOIN pg_class ic ON ic.relname = t.index_name
               WHERE t.owner_id = s.owner_id) AS has_index
FROM owner_stats s JOIN users u ON u.id = s.owner_id
WHERE s.chunk_count > %(threshold)s
ORDER BY s.chunk_count DESC
"""


class Traffic(Protocol):
    """What the advice needs to know of recent searches; ``ragkeep.monitoring.traffic.SearchTraffic``
    is one (the caller reads it: indices knows nothing of the metrics tables)."""

    @property
    def days(self) -> int: ...
    @property
    def searches(self) -> int: ...
    @property
    def cross_user(self) -> int: ...
    @property
    def by_hour(self) -> dict[int, int]: ...
    @property
    def by_scope(self) -> list[dict[str, Any]]: ...
    @property
    def exact_ms(self) -> float: ...
    @property
    def exact_vectors(self) -> int: ...
    @property
    def by_user(self) -> list[tuple[uuid.UUID, int]]: ...
    def off_peak_hour(self) -> int: ...


async def _rows(conn: psycopg.AsyncConnection, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _size(n: float) -> str:
    return f"{n / MIB / 1024:,.1f} GiB" if n >= 1024 * MIB else f"{n / MIB:,.0f} MiB"


def fit_warning(what: str, size: int, shared_buffers: int, effective_cache_size: int) -> str | None:
    """What to do when ``size`` bytes of vector index will not stay in shared_buffers (None if
    they do): the sizes come from ``ragkeep.indices.sizing`` (bench/sizing.py)."""
    if size <= shared_buffers:
        return None
    beyond_ram = (f"; it exceeds effective_cache_size ({_size(effective_cache_size)}) too, so the server's RAM "
                  "will not hold it either") if size > effective_cache_size else ""
    return (f"{what} will take about {_size(size)}, more than shared_buffers ({_size(shared_buffers)}){beyond_ram}: "
            "searches will read index pages from the OS cache or disk and slow down. Raise shared_buffers to at "
            f"least {_size(size * 1.2)} (the server needs that RAM free), or shard by user on Citus so that each "
            "node holds a part (docs/scaling.md, Sizing).")


def _build(settings: Settings, rows: int, dimension: int, owner: dict[str, Any] | None,
           memory: dict[str, int]) -> dict[str, Any]:
    plan = plan_build("hnsw", {"m": M, "ef_construction": EF_CONSTRUCTION}, rows, dimension, settings.indices)
    workers = plan.parallel_workers + 1
    config: dict[str, Any] = {
        "table_name": "vectors", "index_method": "hnsw", "index_measure": "cosine_distance",
        "index_arguments": {"m": M, "ef_construction": EF_CONSTRUCTION},
    }
    if owner:
        config["filters"] = {"owner_id": {"$eq": str(owner["user_id"])}}
    size = index_bytes(rows, dimension, M)
    what = f"the HNSW index for {rows:,} vectors (m = {M}{', ' + str(owner['email']) if owner else ''})"
    return {
        "scope": "owner" if owner else "global",
        "user_id": owner["user_id"] if owner else None,
        "email": owner["email"] if owner else None,
        "vectors": rows,
        "m": M,
        "ef_construction": EF_CONSTRUCTION,
        "memory_bytes": plan.estimate_bytes,
        "maintenance_work_mem_mb": plan.maintenance_work_mem_mb,
        "warning": plan.warning,
        "index_bytes": size,
        "memory_warning": fit_warning(what, size, memory["shared_buffers"], memory["effective_cache_size"]),
        "build_seconds": math.ceil(rows * BUILD_SECONDS_PER_ROW / workers),
        "request": {"config": config},
    }


async def _isolation(conn: psycopg.AsyncConnection, traffic: Traffic, total: int, threshold: int,
                     large: list[dict[str, Any]], promoted: set[uuid.UUID]) -> dict[str, Any]:
    """Power users (DOMINANT_SHARE of the vectors, above the exact threshold, or of the searches)
    and what dedicated capacity means here: their own shard on Citus, their own index otherwise."""
    citus = await on_citus(conn)
    searches = traffic.searches
    by_user = dict(traffic.by_user) if searches >= MIN_SEARCHES_FOR_SHARE else {}
    vectors = {u["user_id"]: u["vectors"] for u in large}
    ids = [u for u in vectors if total and vectors[u] / total >= DOMINANT_SHARE]
    # A query-dominant user: on Citus their load alone calls for a shard (and node) of their own;
    # on a single node only an index could help them, and only above the exact threshold.
    ids += [u for u, n in by_user.items()
            if n / searches >= DOMINANT_SHARE and u not in ids and (citus or u in vectors)]
    emails = {r["id"]: r["email"] for r in await _rows(conn, _EMAILS, {"ids": ids})} if ids else {}
    candidates = []
    for uid in ids:
        if uid not in emails:  # a deleted user's searches
            continue
        n = vectors.get(uid)
        if n is None:
            row = await _rows(conn, "SELECT coalesce(max(chunk_count), 0) AS n FROM owner_stats WHERE owner_id = %(o)s",
                              {"o": uid})
            n = row[0]["n"]
        vector_share = n / total if total else 0.0
        search_share = by_user.get(uid, 0) / searches if searches else 0.0
        reasons = []
        if n > threshold and vector_share >= DOMINANT_SHARE:
            reasons.append(f"holds {vector_share:.0%} of all vectors ({n:,})")
        if search_share >= DOMINANT_SHARE:
            reasons.append(f"makes {search_share:.0%} of all searches ({by_user[uid]:,} in {traffic.days} days)")
        shard = await owner_shard(conn, uid, "chunks") if citus else None
        candidates.append({
            "user_id": uid, "email": emails[uid], "vectors": n, "vector_share": vector_share,
            "searches": by_user.get(uid, 0), "search_share": search_share, "reasons": reasons,
            "action": "isolate_shard" if citus else "partial_index",
            "done": bool(shard["isolated"]) if shard else uid in promoted,
            "shard_id": shard["shard_id"] if shard else None, "node": shard["node"] if shard else None,
            "command": f"ragkeep tenant isolate {uid}",
            "request": {"method": "POST", "path": f"/v3/indices/tenants/{uid}/isolate"},
        })
    return {"mode": "citus" if citus else "single_node", "dominant_share": DOMINANT_SHARE, "candidates": candidates}


async def advise(conn: psycopg.AsyncConnection, settings: Settings, dimension: int, traffic: Traffic) -> dict[str, Any]:
    """The advice from live vector counts and indexes, and ``traffic`` (the recent searches)."""
    threshold = settings.search.exact_threshold
    vectors = (await _rows(conn, _VECTORS, {}))[0]
    large = await _rows(conn, _LARGE_USERS, {"threshold": threshold})
    indexes, _ = await list_vector_indexes(conn, table="chunks", limit=10_000)
    memory = (await _rows(conn, _MEMORY, {}))[0]
    by_hour = traffic.by_hour
    ms_per_vector = traffic.exact_ms / traffic.exact_vectors if traffic.exact_vectors > 1000 else EXACT_MS_PER_VECTOR
    searches = traffic.searches
    cross_share = traffic.cross_user / searches if searches else 0.0

    global_exists = any(ix["owner_id"] is None for ix in indexes)
    promoted = {ix["owner_id"] for ix in indexes if ix["owner_id"] is not None}
    unserved = [u for u in large if u["user_id"] not in promoted]
    builds: list[dict[str, Any]] = []
    reasons: list[str] = []
    cross_needs_index = vectors["total"] > threshold and cross_share >= CROSS_USER_SHARE
    many_large = len(unserved) > MAX_PARTIAL
    if (cross_needs_index or many_large) and not global_exists:
        builds.append(_build(settings, vectors["total"], dimension, None, memory))
        if cross_needs_index:
            reasons.append(f"{cross_share:.0%} of searches cross users over up to {vectors['total']:,} vectors, "
                           f"above the exact threshold of {threshold:,}")
        if many_large:
            reasons.append(f"{len(unserved)} users hold more than {threshold:,} vectors each, too many for one "
                           "partial index apiece")
    elif unserved and not global_exists:
        builds.extend(_build(settings, u["vectors"], dimension, u, memory) for u in unserved)
        reasons.append(f"{len(unserved)} user(s) hold more than {threshold:,} vectors: each gets a partial HNSW "
                       "index (1-3 ms per search) while everyone else keeps exact scans (recall 1.0)")
    largest_exact_ms = vectors["max"] * ms_per_vector
    if not builds:
        if not large and not cross_needs_index:
            reasons.append(f"every scope holds at most {threshold:,} vectors (largest user: {vectors['max']:,}); "
                           f"exact scans are complete and take about {largest_exact_ms:.0f} ms at the largest")
        else:
            reasons.append("the indexes that exist already serve every scope above the exact threshold")
    needed = {ix["name"] for ix in indexes if ix["owner_id"] is None and (large or cross_needs_index)}
    needed |= {ix["name"] for ix in indexes if ix["owner_id"] in {u["user_id"] for u in large}}
    isolation = await _isolation(conn, traffic, vectors["total"], threshold, large, promoted)
    pending = [c for c in isolation["candidates"] if not c["done"]]
    if pending and isolation["mode"] == "citus":
        reasons.append("; ".join(f"{c['email']} {' and '.join(c['reasons'])}" for c in pending)
                       + ": give them a shard of their own (ragkeep tenant isolate USER [--node HOST:PORT])")
    hour = traffic.off_peak_hour()
    existing = sum(int(ix["size_in_bytes"]) for ix in indexes if ix["status"] == "valid")
    proposed = sum(b["index_bytes"] for b in builds)
    return {
        "exact_threshold": threshold,
        "vectors": {
            "total": vectors["total"], "users": vectors["users"],
            "per_user": {"p50": vectors["p50"], "p99": vectors["p99"], "max": vectors["max"]},
            "above_threshold": [{"user_id": u["user_id"], "email": u["email"], "vectors": u["vectors"],
                                 "has_index": u["user_id"] in promoted} for u in large[:50]],
        },
        "traffic": {
            "days": traffic.days, "searches": searches, "cross_user_share": cross_share,
            "exact_ms_per_1000_vectors": ms_per_vector * 1000,
            "by_scope_size": traffic.by_scope,
            "searches_by_hour_utc": [by_hour.get(h, 0) for h in range(24)],
            "top_users": [{"user_id": u, "searches": n, "share": n / searches if searches else 0.0}
                          for u, n in traffic.by_user],
        },
        "indexes": [{"name": ix["name"], "owner_id": ix["owner_id"], "valid": ix["status"] == "valid",
                     "needed": ix["name"] in needed} for ix in indexes],
        "recommendation": {
            "action": ("global" if any(b["scope"] == "global" for b in builds) else "partial") if builds else "none",
            "reason": "; ".join(reasons),
            "builds": builds,
            "off_peak_hour_utc": hour,
            "when": f"{hour:02d}:00 UTC" + (f" (fewest searches in the last {traffic.days} days)" if by_hour else
                                            " (no searches recorded yet)"),
            "unneeded_indexes": [ix["name"] for ix in indexes if ix["name"] not in needed],
            "isolation": isolation,
            "memory": {
                "shared_buffers_bytes": memory["shared_buffers"],
                "effective_cache_size_bytes": memory["effective_cache_size"],
                "vector_indexes_bytes": existing,
                "proposed_indexes_bytes": proposed,
                "warning": fit_warning(
                    "the valid vector indexes" + (" with the proposed builds" if builds else ""),
                    existing + proposed, memory["shared_buffers"], memory["effective_cache_size"]),
            },
        },
    }
