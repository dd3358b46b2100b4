"""Memory and CPU of this server process (psutil), for Prometheus and for ``metrics_instances``.

Every replica writes its own row at each flush, so ``GET /v3/system/stats`` answered by any
replica lists all of them. CPU percent is computed from the process's CPU seconds between two
samples (100 = one core busy), not with ``psutil.cpu_percent(None)``, whose first call returns a
meaningless 0.0 and whose state is shared with anything else calling it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psutil
import psycopg

from ragkeep import __version__
from ragkeep.db.replica import replica_name

_UPSERT = """
INSERT INTO metrics_instances AS m (replica, host, pid, version, started_at, seen_at, rss_bytes, cpu_seconds,
    cpu_percent, threads, cpu_count, memory_total_bytes, memory_available_bytes)
VALUES (%(replica)s, %(host)s, %(pid)s, %(version)s, %(started_at)s, %(seen_at)s, %(rss_bytes)s, %(cpu_seconds)s,
    %(cpu_percent)s, %(threads)s, %(cpu_count)s, %(memory_total_bytes)s, %(memory_available_bytes)s)
ON CONFLICT (replica) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, version = excluded.version, started_at = excluded.started_at,
    seen_at = excluded.seen_at, rss_bytes = excluded.rss_bytes, cpu_seconds = excluded.cpu_seconds,
    cpu_percent = excluded.cpu_percent, threads = excluded.threads, cpu_count = excluded.cpu_count,
    memory_total_bytes = excluded.memory_total_bytes, memory_available_bytes = excluded.memory_available_bytes
"""



@dataclass(frozen=True)
class InstanceSample:
    replica: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    rss_bytes: int
    cpu_seconds: float
    cpu_percent: float
    threads: int
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int


class InstanceProbe:
    """Samples this process; CPU percent is over the time since the previous sample."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.started_at = datetime.fromtimestamp(self.process.create_time(), UTC)
        self._last: tuple[float, float] | None = None  # (monotonic time, cpu seconds)

    def cpu_seconds(self) -> float:
        t = self.process.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> InstanceSample:
        now = time.monotonic()
        cpu = self.cpu_seconds()
        if self._last is None:
            # No previous sample: the average since the process started.
            elapsed = max(time.time() - self.started_at.timestamp(), 1e-6)
            percent = 100.0 * cpu / elapsed
        else:
            elapsed = max(now - self._last[0], 1e-6)
            percent = 100.0 * max(cpu - self._last[1], 0.0) / elapsed
        self._last = (now, cpu)
        memory = psutil.virtual_memory()
        return InstanceSample(
            replica=replica_name(),
            host=socket.gethostname(),
            pid=self.process.pid,
            version=__version__,
            started_at=self.started_at,
            seen_at=datetime.now(UTC),
            rss_bytes=int(self.process.memory_info().rss),
            cpu_seconds=round(cpu, 3),
            cpu_percent=round(percent, 1),
            threads=self.process.num_threads(),
            cpu_count=psutil.cpu_count() or 1,
            memory_total_bytes=int(memory.total),
            memory_available_bytes=int(memory.available),
        )


async def write_sample(conn: psycopg.AsyncConnection, sample: InstanceSample) -> None:
    await conn.execute(_UPSERT, asdict(sample))


async def forget_gone(conn: psycopg.AsyncConnection, older_than_days: int = 1) -> int:
    """Drop rows of replicas unseen for a day: the table holds live replicas, not history."""
    cur = await conn.execute(
        "DELETE FROM metrics_instances WHERE seen_at < now() - make_interval(days => %s)", (older_than_days,)
    )
    return cur.rowcount
