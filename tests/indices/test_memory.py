"""The memory estimates against pgvector itself.

pgvector reports where an HNSW graph stopped fitting ("hnsw graph no longer fits into
maintenance_work_mem after N tuples"): at 1 MB, 1 MiB / N is what one element really costs.
IVFFlat refuses a build whose k-means sample does not fit ("memory required is N MB").
Measured on a scratch table of random vectors at the embedding model's dimension.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from ragkeep.config import IndicesConfig
from ragkeep.indices.memory import MIB, hnsw_bytes_per_element, ivfflat_bytes, plan_build
from tests.indices.seed import dimension

ROWS = 2_000


@pytest.fixture(scope="module")
def probe(server, settings) -> Iterator[tuple[psycopg.Connection, int]]:
    dim = dimension(settings.database.url)
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE ix_mem_probe (embedding vector({dim}))")
        rng = np.random.default_rng(7)
        with conn.cursor().copy("COPY ix_mem_probe (embedding) FROM STDIN") as copy:
            for v in rng.standard_normal((ROWS, dim)).astype(np.float32):
                copy.write_row(["[" + ",".join(f"{x:.5f}" for x in v) + "]"])
        conn.execute("ANALYZE ix_mem_probe")
        try:
            yield conn, dim
        finally:
            conn.execute("DROP TABLE ix_mem_probe")


@pytest.mark.parametrize("m", [8, 16])
def test_hnsw_bytes_per_element_matches_pgvector(probe, m: int) -> None:
    conn, dim = probe
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("SET maintenance_work_mem = '1MB'")
    conn.execute("SET max_parallel_maintenance_workers = 0")
    try:
        conn.execute(f"CREATE INDEX ix_mem_hnsw ON ix_mem_probe USING hnsw (embedding vector_l2_ops) "
                     f"WITH (m = {m}, ef_construction = {2 * m})")
    finally:
        conn.execute("DROP INDEX IF EXISTS ix_mem_hnsw")
        conn.execute("RESET maintenance_work_mem")
        conn.execute("RESET max_parallel_maintenance_workers")
    fits = [int(x) for n in notices for x in re.findall(r"after (\d+) tuples", n)]
    assert fits, notices
    measured = MIB / fits[0]
    predicted = hnsw_bytes_per_element(dim, m)
    assert abs(predicted - measured) / measured < 0.03, (predicted, measured)


def test_ivfflat_estimate_covers_pgvector_requirement(probe) -> None:
    conn, dim = probe
    lists = 100
    conn.execute("SET maintenance_work_mem = '1MB'")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded) as e:
        conn.execute(
            f"CREATE INDEX ix_mem_ivf ON ix_mem_probe USING ivfflat (embedding vector_l2_ops) WITH (lists = {lists})"
        )
    required_mb = int(re.search(r"memory required is (\d+) MB", str(e.value)).group(1))  # type: ignore[union-attr]
    estimate = ivfflat_bytes(ROWS, dim, lists)
    assert estimate > (required_mb - 1) * MIB
    # With the estimate as maintenance_work_mem the build succeeds; our headroom is on top of it.
    conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (f"{math.ceil(estimate / MIB)}MB",))
    try:
        conn.execute(
            f"CREATE INDEX ix_mem_ivf ON ix_mem_probe USING ivfflat (embedding vector_l2_ops) WITH (lists = {lists})"
        )
    finally:
        conn.execute("DROP INDEX IF EXISTS ix_mem_ivf")
        conn.execute("RESET maintenance_work_mem")


def test_plan_caps_memory_and_says_what_to_do() -> None:
    config = IndicesConfig(build_memory_cap_mb=1024, build_parallel_workers=3)
    small = plan_build("hnsw", {"m": 16}, 10_000, 384, config)
    assert small.warning is None and small.maintenance_work_mem_mb == 64 and small.parallel_workers == 3
    big = plan_build("hnsw", {"m": 16}, 1_000_000, 384, config)
    assert big.maintenance_work_mem_mb == 1024 and big.estimate_bytes > 2 * 10**9
    assert big.warning and "build_memory_cap_mb" in big.warning and "lower m" in big.warning
    need = int(re.search(r"build_memory_cap_mb to (\d+)", big.warning).group(1))  # type: ignore[union-attr]
    assert need * MIB >= big.estimate_bytes
    assert plan_build("ivfflat", {"n_lists": 4000}, 1_000_000, 384, config).warning
