"""Reading a distributed database's figures: whether it runs on Citus, which tables Citus owns, and
one command run on every shard of a table.

On Citus the coordinator's tables are empty shells: ``pg_relation_size``, ``pg_class.reltuples``,
``pg_stat_user_tables`` and the progress views describe nothing there, the data lives in shards
on the workers (``<table>_<shardid>``, their indexes ``<index>_<shardid>``). The figures ragkeep
shows (index list, storage sizes, VACUUM's dead tuples) are summed from the shards with
:func:`on_shards`; the commands themselves stay next to the code that owns each figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import psycopg

from ragkeep.errors import Unavailable

__all__ = ["ShardResult", "ShardsUnavailable", "citus_tables", "on_citus", "on_shards", "shell_name"]

#: Known to run on Citus or not, per connection (asked once: whether the citus extension is in
#: this database). A connection made before ``CREATE EXTENSION citus`` keeps its answer.
_on_citus: WeakKeyDictionary[psycopg.AsyncConnection[Any], bool] = WeakKeyDictionary()

#: Tables of the current schema that Citus owns: hash-distributed ('h') and reference ('n').
_CITUS_TABLES = """
SELECT c.relname, p.partmethod FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
WHERE c.relnamespace = current_schema()::regnamespace
"""
#: ``command`` on one placement of each shard of ``table`` (a reference table has one shard with a
#: placement on every node: counted once). ``%s`` in the command is the shard's name.
_ON_PLACEMENTS = """
SELECT DISTINCT ON (shardid) shardid, nodename, nodeport, success, result
FROM run_command_on_placements(%(table)s::regclass, %(command)s)
WHERE %(shard)s::bigint IS NULL OR shardid = %(shard)s::bigint
ORDER BY shardid, nodename, nodeport
"""


class ShardsUnavailable(Unavailable):
    """A shard did not answer (a worker down): its figures would be missing from the sums."""


@dataclass(frozen=True)
class ShardResult:
    """One shard's answer to a command: its JSON ``value``, and the worker that holds it."""

    shard_id: int
    node: str  # host:port as in pg_dist_node
    value: Any


async def on_citus(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether this connection's database has the citus extension (cached for the connection)."""
    known = _on_citus.get(conn)
    if known is None:
        cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        row = await cur.fetchone()
        known = _on_citus[conn] = bool(row and row[0])
    return known


async def citus_tables(conn: psycopg.AsyncConnection[Any]) -> dict[str, str]:
    """Tables of the schema Citus owns, with their ``partmethod`` ('h' distributed, 'n' reference);
    empty without Citus. Not cached: ``ragkeep db distribute`` changes it under running servers."""
    if not await on_citus(conn):
        return {}
    cur = await conn.execute(_CITUS_TABLES)
    return {str(name): str(method) for name, method in await cur.fetchall()}


async def on_shards(
    conn: psycopg.AsyncConnection[Any], table: str, command: str, shard: int | None = None
) -> list[ShardResult]:
    """``command`` (one SELECT returning JSON text; ``%s`` is the shard's name) on each shard of
    ``table`` (or only on ``shard``), in shard order. ShardsUnavailable when a shard fails: a sum
    without it would lie."""
    cur = await conn.execute(_ON_PLACEMENTS, {"table": table, "command": command, "shard": shard})
    out = []
    for shard_id, host, port, success, result in await cur.fetchall():
        if not success:
            raise ShardsUnavailable(f"shard {shard_id} of {table} on {host}:{port} did not answer: {result}")
        out.append(ShardResult(int(shard_id), f"{host}:{port}", json.loads(result) if result else None))
    return out


def shell_name(shard_relation: str, shard_id: int) -> str | None:
    """The coordinator's name of a shard's relation (``chunks_102008`` -> ``chunks``); None when
    the name does not end with the shard id (Citus shortens names that would pass 63 bytes)."""
    suffix = f"_{shard_id}"
    return shard_relation[: -len(suffix)] if shard_relation.endswith(suffix) else None
