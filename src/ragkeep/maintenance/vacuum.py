"""VACUUM, one table at a time, with the figures before and after each.

VACUUM cannot run inside a transaction block, so it runs on the maintenance run's own autocommit
connection, never on the request pool (whose connections open transactions, and which requests
need while a long VACUUM runs).

About the figures: dead tuples come from ``pg_stat_user_tables``. Other sessions publish their
counts asynchronously (at most about once a second, and within ~10 s once idle), so "before"
may miss the very latest deletes; VACUUM publishes its own result at once, so "after" is
current. Sizes are the data pages of the table, its indexes and its TOAST (not the free space
and visibility maps VACUUM itself creates). A plain VACUUM makes dead space reusable but only
returns the empty pages at the end of a table to the operating system, so its ``bytes_reclaimed``
is often 0, and negative when it merges a GIN index's pending list into the index proper (chunks'
full-text index); ``VACUUM FULL`` rewrites the table and returns everything dead.

On Citus, VACUUM of a table Citus owns runs on the coordinator and Citus runs it on every shard;
its figures are the shards' (the coordinator's table is an empty shell), summed, and each item
also has them per worker (``nodes``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ragkeep.config import MaintenanceConfig
from ragkeep.db.citus_sql import citus_tables, on_shards
from ragkeep.errors import InvalidInput


class UnknownTables(InvalidInput, ValueError):
    """Tables asked for that the schema does not have; ``names`` lists them."""

    def __init__(self, names: list[str], known: list[str]) -> None:
        self.names = names
        self.known = known
        super().__init__(
            f"unknown table(s) {', '.join(repr(n) for n in names)}; ragkeep's tables are: {', '.join(known)}"
        )


@dataclass(frozen=True)
class TableStats:
    table: str
    live_tuples: int
    dead_tuples: int
    deleted_total: int
    bytes: int
    #: On Citus: {"host:port": {"live_tuples", "dead_tuples", "deleted_total", "bytes"}} over the
    #: shards each worker holds; None for a table on this server.
    nodes: dict[str, dict[str, int]] | None = None

    @property
    def dead_share(self) -> float:
        total = self.live_tuples + self.dead_tuples
        return self.dead_tuples / total if total else 0.0


async def schema_tables(conn: psycopg.AsyncConnection) -> list[str]:
    """Ordinary tables of the schema ragkeep's objects live in (its search_path's first)."""
    cur = await conn.execute(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() ORDER BY relname"
    )
    return [r[0] for r in await cur.fetchall()]


async def resolve_tables(conn: psycopg.AsyncConnection, asked: Sequence[str] | None) -> list[str]:
    """``asked`` checked against the schema (UnknownTables if any is missing); None = all."""
    known = await schema_tables(conn)
    if asked is None:
        return known
    missing = [t for t in asked if t not in known]
    if missing:
        raise UnknownTables(missing, known)
    return list(dict.fromkeys(asked))


#: The table's data pages: its main fork, its indexes', its TOAST table's and that one's index.
#: Free space and visibility maps are left out: VACUUM creates them, and they would show as
#: space "lost" by a VACUUM that reclaimed nothing.
_DATA_BYTES = (
    "pg_relation_size(c.oid) "
    "+ coalesce((SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_index i WHERE i.indrelid = c.oid), 0) "
    "+ CASE WHEN c.reltoastrelid = 0 THEN 0 ELSE pg_relation_size(c.reltoastrelid) + coalesce(("
    "SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_index i WHERE i.indrelid = c.reltoastrelid), 0) END"
)


#: TableStats' figures of one shard (``%s``), for a table Citus owns.
_SHARD_STATS = (
    "SELECT json_build_object('live_tuples', s.n_live_tup, 'dead_tuples', s.n_dead_tup, "
    "'deleted_total', s.n_tup_del, 'bytes', " + _DATA_BYTES + ") "
    "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.relid = '%s'::regclass"
)
_FIGURES = ("live_tuples", "dead_tuples", "deleted_total", "bytes")


async def table_stats(conn: psycopg.AsyncConnection, tables: Sequence[str]) -> dict[str, TableStats]:
    cur = await conn.execute(
        "SELECT s.relname, s.n_live_tup, s.n_dead_tup, s.n_tup_del, " + _DATA_BYTES + " "
        "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
        "WHERE s.schemaname = current_schema() AND s.relname = ANY(%s)",
        (list(tables),),
    )
    out = {r[0]: TableStats(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in await cur.fetchall()}
    owned = await citus_tables(conn)
    for table in [t for t in out if t in owned]:
        out[table] = await _shard_stats(conn, table)
    return out


async def _shard_stats(conn: psycopg.AsyncConnection, table: str) -> TableStats:
    """A Citus table's figures: its shards' sums, in total and per worker."""
    nodes: dict[str, dict[str, int]] = {}
    for shard in await on_shards(conn, table, _SHARD_STATS):
        node = nodes.setdefault(shard.node, dict.fromkeys(_FIGURES, 0))
        for key in _FIGURES:
            node[key] += int((shard.value or {}).get(key) or 0)
    total = {key: sum(n[key] for n in nodes.values()) for key in _FIGURES}
    return TableStats(table, total["live_tuples"], total["dead_tuples"], total["deleted_total"], total["bytes"],
                      nodes=dict(sorted(nodes.items())))


def below_threshold(stats: TableStats, config: MaintenanceConfig) -> str | None:
    """Why a scheduled VACUUM leaves this table alone, or None to vacuum it."""
    override = config.thresholds.get(stats.table)
    min_dead = override.min_dead_tuples if override and override.min_dead_tuples is not None else config.min_dead_tuples
    min_share = override.min_dead_share if override and override.min_dead_share is not None else config.min_dead_share
    if stats.dead_tuples < min_dead:
        return f"below threshold: {stats.dead_tuples} dead tuples < min_dead_tuples {min_dead}"
    if min_share and stats.dead_share < min_share:
        return f"below threshold: dead share {stats.dead_share:.3f} < min_dead_share {min_share}"
    return None


def vacuum_statement(table: str, *, analyze: bool, full: bool) -> sql.Composed:
    flag = {True: sql.SQL("true"), False: sql.SQL("false")}
    return sql.SQL("VACUUM (ANALYZE {a}, FULL {f}) {t}").format(a=flag[analyze], f=flag[full], t=sql.Identifier(table))


Progress = Callable[[list[dict[str, Any]]], Awaitable[None]]


async def vacuum_tables(
    conn: psycopg.AsyncConnection,
    tables: Sequence[str],
    *,
    analyze: bool,
    full: bool,
    config: MaintenanceConfig | None = None,
    progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], dict[str, TableStats]]:
    """VACUUM each table; with ``config`` (scheduled runs) tables below their threshold are skipped.

    Returns one item per table and the stats read before (the REINDEX advice uses them). A table
    that fails (e.g. dropped meanwhile) is recorded as failed and the others still run.
    """
    if not conn.autocommit:
        raise ValueError("VACUUM needs an autocommit connection")
    before = await table_stats(conn, tables)
    items: list[dict[str, Any]] = []
    for table in tables:
        # Read again just before: a long run's later tables may have changed since the start.
        stats = (await table_stats(conn, [table])).get(table) if items else before.get(table)
        item: dict[str, Any] = {"table": table, "status": "running"}
        if stats is None:
            items.append({**item, "status": "skipped", "note": "no such table"})
            continue
        item.update(
            dead_tuples_before=stats.dead_tuples, live_tuples_before=stats.live_tuples, bytes_before=stats.bytes
        )
        if stats.nodes is not None:
            item["nodes"] = {node: {"dead_tuples_before": f["dead_tuples"], "bytes_before": f["bytes"]}
                             for node, f in stats.nodes.items()}
        reason = below_threshold(stats, config) if config is not None else None
        if reason:
            items.append({**item, "status": "skipped", "note": reason})
            continue
        items.append(item)
        if progress:
            await progress(items)
        started = time.perf_counter()
        try:
            await conn.execute(vacuum_statement(table, analyze=analyze, full=full))
        except psycopg.errors.QueryCanceled:
            raise
        except psycopg.Error as e:
            item.update(status="failed", note=str(e).strip(), seconds=round(time.perf_counter() - started, 3))
            continue
        item["seconds"] = round(time.perf_counter() - started, 3)
        after = (await table_stats(conn, [table])).get(table)
        if after is not None:
            item.update(
                dead_tuples_after=after.dead_tuples,
                live_tuples_after=after.live_tuples,
                bytes_after=after.bytes,
                bytes_reclaimed=stats.bytes - after.bytes,
            )
            for node, f in (after.nodes or {}).items():
                item.setdefault("nodes", {}).setdefault(node, {}).update(
                    dead_tuples_after=f["dead_tuples"], bytes_after=f["bytes"]
                )
        item["status"] = "done"
    return items, before
