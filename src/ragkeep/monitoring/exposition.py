"""One Prometheus scrape: this process's metrics, its memory/CPU, and the database's figures.

prometheus-client calls collectors synchronously, while the database is read with async psycopg;
so the scrape reads the database first and hands the figures to a one-off collector, instead of
registering a collector that would block the event loop. The database figures are the same on
every replica (aggregate them with ``max``, or scrape one); the process figures are each
replica's own. When the database does not answer, ``ragkeep_database_up`` is 0 and the process's
metrics are still served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from psycopg_pool import AsyncConnectionPool

from ragkeep import __version__
from ragkeep.db.reads import ReadRouter
from ragkeep.monitoring import database
from ragkeep.monitoring.instance import InstanceProbe
from ragkeep.monitoring.prom import ProcessMetrics

log = logging.getLogger(__name__)


@dataclass
class DatabaseFigures:
    up: bool
    cache: dict[str, Any] = field(default_factory=dict)
    sizes: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)


async def read_database(pool: AsyncConnectionPool, timeout: float = 5.0) -> DatabaseFigures:
    try:
        async with pool.connection(timeout=timeout) as conn:
            return DatabaseFigures(
                up=True,
                cache=await database.cache_stats(conn),
                sizes=await database.relation_sizes(conn),
                totals=await database.totals(conn),
                active=await database.active_now(conn),
            )
    except Exception as e:  # the scrape still reports the process, and that the database is down
        log.warning("metrics: could not read the database: %s", e)
        return DatabaseFigures(up=False)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    if value is not None:
        g.add_metric([], value)
    return g


def _labelled(
    cls: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    rows: Iterable[tuple[list[str], float | None]],
) -> Metric:
    family = cls(name, doc, labels=labels)
    for values, value in rows:
        if value is not None:
            family.add_metric(values, value)
    return family


def database_families(db: DatabaseFigures) -> Iterator[Metric]:
    yield _gauge("ragkeep_database_up", "1 when the database answered this scrape.", 1 if db.up else 0)
    if not db.up:
        return
    cache = db.cache["database"]
    yield CounterMetricFamily("ragkeep_db_blocks_hit", "Shared-buffer hits in this database (pg_stat_database).",
                              value=cache["blks_hit"])
    yield CounterMetricFamily("ragkeep_db_blocks_read", "Blocks read from outside shared buffers (pg_stat_database).",
                              value=cache["blks_read"])
    yield _gauge("ragkeep_db_cache_hit_ratio",
                 "blks_hit / (blks_hit + blks_read) of this database, since the stats reset.", cache["hit_ratio"])
    parts = db.cache["chunks"]
    yield _labelled(CounterMetricFamily, "ragkeep_chunks_blocks_hit",
                    "Shared-buffer hits on chunks (pg_statio_user_tables).",
                    ["part"], (([p], v["blks_hit"]) for p, v in parts.items()))
    yield _labelled(CounterMetricFamily, "ragkeep_chunks_blocks_read",
                    "Blocks of chunks read from outside shared buffers.",
                    ["part"], (([p], v["blks_read"]) for p, v in parts.items()))
    yield _labelled(GaugeMetricFamily, "ragkeep_chunks_cache_hit_ratio",
                    "Hit ratio of chunks' heap, indexes and TOAST.",
                    ["part"], (([p], v["hit_ratio"]) for p, v in parts.items()))
    idx = db.cache["chunk_indexes"]
    yield _labelled(CounterMetricFamily, "ragkeep_chunks_index_blocks_hit",
                    "Shared-buffer hits per chunks index (pg_statio_user_indexes).",
                    ["index", "method"], (([i["index"], i["method"]], i["blks_hit"]) for i in idx))
    yield _labelled(CounterMetricFamily, "ragkeep_chunks_index_blocks_read",
                    "Blocks read per chunks index.",
                    ["index", "method"], (([i["index"], i["method"]], i["blks_read"]) for i in idx))
    yield _labelled(GaugeMetricFamily, "ragkeep_chunks_index_cache_hit_ratio",
                    "Hit ratio per chunks index.",
                    ["index", "method"], (([i["index"], i["method"]], i["hit_ratio"]) for i in idx))
    yield _labelled(CounterMetricFamily, "ragkeep_chunks_index_scans",
                    "Scans per chunks index (pg_stat_user_indexes.idx_scan).",
                    ["index", "method"], (([i["index"], i["method"]], i["scans"]) for i in idx))
    yield _labelled(CounterMetricFamily, "ragkeep_chunks_index_tuples_read",
                    "Index entries returned by scans per chunks index (idx_tup_read): "
                    "tuples visited, where the index reports them.",
                    ["index", "method"], (([i["index"], i["method"]], i["tuples_read"]) for i in idx))
    tables = [s for s in db.sizes if s["kind"] == "table"]
    indexes = [s for s in db.sizes if s["kind"] == "index"]
    yield _labelled(GaugeMetricFamily, "ragkeep_table_size_bytes",
                    "pg_table_size of each table (heap, TOAST, maps).",
                    ["table"], (([t["relation"]], t["bytes"]) for t in tables))
    yield _labelled(GaugeMetricFamily, "ragkeep_index_size_bytes",
                    "Size of each index.",
                    ["table", "index"], (([i["table_name"], i["relation"]], i["bytes"]) for i in indexes))
    yield _labelled(GaugeMetricFamily, "ragkeep_table_rows_estimate",
                    "pg_class.reltuples of each table (-1: never analysed).",
                    ["table"], (([t["relation"]], t["est_rows"]) for t in tables))
    yield _labelled(GaugeMetricFamily, "ragkeep_active_users",
                    "Users with an authenticated request in the current UTC hour / day (flushed activity).",
                    ["period"], (([p], v) for p, v in db.active.items()))
    yield _gauge("ragkeep_users", "Registered users.", db.totals["users"])
    yield _gauge("ragkeep_documents", "Documents stored (owner_stats).", db.totals["documents"])
    yield _gauge("ragkeep_chunks", "Chunks (vectors) stored (owner_stats).", db.totals["chunks"])


def process_families(probe: InstanceProbe, replica: str) -> Iterator[Metric]:
    proc = probe.process
    memory = proc.memory_info()
    info = GaugeMetricFamily("ragkeep_instance_info", "This server process.", labels=["replica", "version"])
    info.add_metric([replica, __version__], 1)
    yield info
    yield _gauge("ragkeep_process_resident_memory_bytes", "Resident memory of this process (psutil).", memory.rss)
    yield _gauge("ragkeep_process_virtual_memory_bytes", "Virtual memory of this process (psutil).", memory.vms)
    yield CounterMetricFamily("ragkeep_process_cpu_seconds", "User + system CPU time of this process (psutil).",
                              value=probe.cpu_seconds())
    yield _gauge("ragkeep_process_threads", "Threads of this process.", proc.num_threads())
    yield _gauge("ragkeep_process_start_time_seconds", "Start of this process, Unix time.",
                 probe.started_at.timestamp())
    import psutil

    vm = psutil.virtual_memory()
    yield _gauge("ragkeep_host_memory_total_bytes", "Memory of the host (psutil.virtual_memory).", vm.total)
    yield _gauge("ragkeep_host_memory_available_bytes", "Memory available on the host.", vm.available)
    yield _gauge("ragkeep_host_cpus", "Logical CPUs of the host.", psutil.cpu_count() or 1)


def standby_families(router: ReadRouter | None) -> Iterator[Metric]:
    """Each standby of ``read_urls`` as this process sees it, and where its reads ran."""
    if router is None or not router.enabled:
        return
    yield _labelled(GaugeMetricFamily, "ragkeep_standby_in_rotation",
                    "1 when reads may go to the standby (reachable, in recovery, within max_replica_lag_seconds).",
                    ["standby"], (([s.name], float(s.in_rotation)) for s in router.standbys))
    yield _labelled(GaugeMetricFamily, "ragkeep_standby_lag_seconds",
                    "How long ago the primary first had WAL the standby has not replayed (0: caught up).",
                    ["standby"], (([s.name], s.lag_seconds) for s in router.standbys))
    reads = [(["primary"], float(router.primary_reads))] + [([s.name], float(s.reads)) for s in router.standbys]
    yield _labelled(CounterMetricFamily, "ragkeep_reads", "Routed reads (searches, lists) by where they ran.",
                    ["target"], reads)


class _Scrape:
    """A collector for one scrape: generate_latest only needs ``collect``."""

    def __init__(self, parts: list[Iterable[Metric]]) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part


async def render(
    metrics: ProcessMetrics,
    probe: InstanceProbe,
    pool: AsyncConnectionPool,
    replica: str,
    reads: ReadRouter | None = None,
) -> bytes:
    db = await read_database(pool)
    scrape = _Scrape(
        [metrics.registry.collect(), process_families(probe, replica), database_families(db), standby_families(reads)]
    )
    return generate_latest(scrape)
