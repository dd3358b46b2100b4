"""How much memory a vector index build needs, and the session settings a build runs with.

pgvector builds an HNSW graph in ``maintenance_work_mem`` (in shared memory for parallel builds).
Once the graph outgrows it, pgvector says "hnsw graph no longer fits into maintenance_work_mem
after N tuples" and inserts the rest into the on-disk index one by one, far slower (measured
here: 6,000 rows, m = 16, 384 dimensions: 11 s at 1 MB against well under a second in memory).
IVFFlat instead refuses to build ("memory required is N MB") when its k-means sample does not fit.

The formulas follow pgvector 0.8's build code (``hnswbuild.c``, ``ivfkmeans.c``) and were checked
against real builds (``tests/indices/test_memory.py``; see docs/indices.md).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from ragkeep.config import IndicesConfig

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Our estimate is raised by this share before it becomes maintenance_work_mem: pgvector's
#: allocator rounds and its level draw is random, so the graph may be a little larger.
HEADROOM = 1.25
#: Never set maintenance_work_mem below PostgreSQL's default.
FLOOR_MB = 64
#: Per-element bytes outside the vector and the neighbour lists: the element struct (heap TIDs,
#: lock, offsets), the neighbour-array headers and pointers, allocation alignment. Fitted to
#: pgvector 0.8.x builds at 384 dimensions, m = 8/16/32 (197-201 bytes).
HNSW_ELEMENT_OVERHEAD = 200


def vector_bytes(dimension: int) -> int:
    """``VECTOR_SIZE``: a 4-byte varlena header, 2-byte dim, 2 unused, then float4s (8-aligned)."""
    return (8 + 4 * dimension + 7) // 8 * 8


def hnsw_bytes_per_element(dimension: int, m: int) -> float:
    """One graph element in memory.

    Layer 0 keeps 2*m neighbour candidates (16 bytes each: a pointer, a float distance, a flag);
    an element reaches layer l >= 1 with probability m**-l, i.e. 1/(m-1) upper layers on average,
    each of m candidates."""
    upper_layers = 1 / (m - 1)
    return vector_bytes(dimension) + 16 * 2 * m + 16 * m * upper_layers + HNSW_ELEMENT_OVERHEAD


def hnsw_bytes(rows: int, dimension: int, m: int) -> int:
    return math.ceil(rows * hnsw_bytes_per_element(dimension, m))


def ivfflat_bytes(rows: int, dimension: int, lists: int) -> int:
    """k-means over a sample of max(50 * lists, 10,000) vectors (the array is allocated at that
    size whatever the row count, unless the table is empty): samples, two centre arrays, the
    lower-bound matrix (samples x lists floats) and the centre-distance matrix (lists x lists)."""
    v = vector_bytes(dimension)
    capacity = max(50 * lists, 10_000) if rows > 0 else 1
    n = max(1, min(rows, capacity))
    return capacity * v + 2 * lists * v + n * lists * 4 + n * 8 + lists * lists * 4 + lists * 12


@dataclass
class BuildPlan:
    """What a build was started with; shown by GET for builds this process started."""

    rows: int
    dimension: int
    estimate_bytes: int
    maintenance_work_mem_mb: int
    parallel_workers: int
    memory_cap_mb: int
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parallel_workers(config: IndicesConfig) -> int:
    if config.build_parallel_workers is not None:
        return config.build_parallel_workers
    return max(0, (os.cpu_count() or 1) - 1)


async def count_rows(
    conn: psycopg.AsyncConnection, table: str, owner_id: uuid.UUID | None = None
) -> int:
    """The rows the build will read: the planner's estimate (reltuples) for a whole table, or the
    owner's cached count (owner_stats, kept exact by the store) for a partial index; counted when
    neither is known (a table never analysed has reltuples = -1)."""
    if owner_id is not None:
        cur = await conn.execute("SELECT chunk_count FROM owner_stats WHERE owner_id = %s", (owner_id,))
        row = await cur.fetchone()
        if row is not None:
            return max(0, int(row[0]))
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE owner_id = %s").format(sql.Identifier(table)), (owner_id,)
        )
        return int((await cur.fetchone())[0])  # type: ignore[index]
    cur = await conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table,))
    row = await cur.fetchone()
    if row is not None and row[0] >= 0:
        return int(row[0])
    cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    return int((await cur.fetchone())[0])  # type: ignore[index]


async def column_dimension(conn: psycopg.AsyncConnection, table: str, column: str) -> int:
    cur = await conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        (table, column),
    )
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] > 0 else 0


def plan_build(
    method: str, arguments: dict[str, int], rows: int, dimension: int, config: IndicesConfig
) -> BuildPlan:
    """maintenance_work_mem = estimate x HEADROOM, at least FLOOR_MB, at most the configured cap;
    a warning (what to do) when the estimate does not fit under the cap."""
    if method == "hnsw":
        estimate = hnsw_bytes(rows, dimension, arguments.get("m", 16))
    else:
        estimate = ivfflat_bytes(rows, dimension, arguments.get("n_lists", 100))
    cap = config.build_memory_cap_mb
    wanted = max(FLOOR_MB, math.ceil(estimate * HEADROOM / MIB))
    warning = None
    if wanted > cap:
        need = math.ceil(estimate * HEADROOM / MIB)
        if method == "hnsw":
            warning = (
                f"the HNSW graph for {rows:,} rows needs about {estimate / MIB:,.0f} MB, more than "
                f"[indices] build_memory_cap_mb = {cap}; pgvector will build far slower once the graph "
                f"outgrows memory. Raise build_memory_cap_mb to {need} (the server must have that "
                "memory free), lower m, or build off-peak."
            )
        else:
            warning = (
                f"IVFFlat k-means for {arguments.get('n_lists', 100)} lists needs about "
                f"{estimate / MIB:,.0f} MB, more than [indices] build_memory_cap_mb = {cap}; the build "
                f"will fail. Raise build_memory_cap_mb to {need} or use fewer lists."
            )
        log.warning("index build: %s", warning)
    return BuildPlan(
        rows=rows,
        dimension=dimension,
        estimate_bytes=estimate,
        maintenance_work_mem_mb=min(wanted, cap),
        parallel_workers=parallel_workers(config),
        memory_cap_mb=cap,
        warning=warning,
    )


async def apply_plan(conn: psycopg.AsyncConnection, plan: BuildPlan) -> None:
    """Session settings for the build connection (set_config: parameterised, unlike SET)."""
    await conn.execute(
        "SELECT set_config('maintenance_work_mem', %s, false), "
        "set_config('max_parallel_maintenance_workers', %s, false)",
        (f"{plan.maintenance_work_mem_mb}MB", str(plan.parallel_workers)),
    )
