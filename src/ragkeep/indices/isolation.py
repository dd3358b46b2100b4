"""Dedicated capacity for a power user: ``ragkeep tenant isolate USER [--node HOST:PORT]``.

On Citus (the tenant tables distributed by ``owner_id``), the owner's hash value gets a shard of
its own (``isolate_tenant_to_new_shard`` with CASCADE: documents, chunks and owner_stats split
together, so they stay co-located), and that shard group may then move to a named worker
(``citus_move_shard_placement``). Citus creates every index of the table on the new shards, so
the global HNSW index's copy on the owner's shard indexes that owner's vectors only: the pinned
search is routed to that one shard and its worker's planner uses that copy. Without any vector
index on ``chunks`` the owner gets the partial index below (created on every shard by Citus,
empty on all but theirs).

On a single node the same operation is today's tenant promotion: the owner's partial HNSW index
(``WHERE owner_id = ...``, registered in ``tenant_indexes``), built through :class:`IndexBuilder`,
or kept when one is valid or being built.

Isolating and moving copy the owner's rows (``transfer_mode``: writes to that shard wait with
``block_writes``, the default; logical replication keeps them going): they take as long as the
rows take to copy, on a connection of their own (autocommit).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from ragkeep.db.citus_sql import citus_tables, on_shards
from ragkeep.errors import Conflict, InvalidInput, NotFound, Unavailable
from ragkeep.indices.build import IndexBuilder, IndexSpec
from ragkeep.indices.catalog import list_vector_indexes

#: The table the others are co-located with; isolating it with CASCADE splits the whole group.
ANCHOR = "documents"
#: The co-located tenant tables, whose shards for one owner report together.
TENANT_TABLES = ("documents", "chunks", "owner_stats")

#: Citus's ``shard_transfer_mode`` for the split and the move. ``block_writes`` copies the rows
#: while writes to the user's shard wait (reads go on); ``auto``/``force_logical`` copy with
#: logical replication, writes going on. The default is ``block_writes``: on this project's
#: bundle (PostgreSQL 18.6, Citus 14.0.1) logical replication with Citus's decoder does not work
#: (docs/citus-notes.md, "Isolating power users"); managed Citus can take ``auto``.
TransferMode = Literal["block_writes", "auto", "force_logical"]
DEFAULT_TRANSFER_MODE: TransferMode = "block_writes"

#: The shard holding ``owner`` in ``table``, its hash range and where its placement lives.
_SHARD = """
SELECT s.shardid, s.shardminvalue::bigint AS min_hash, s.shardmaxvalue::bigint AS max_hash,
       n.nodename, n.nodeport
FROM pg_dist_shard s
JOIN pg_dist_placement pl ON pl.shardid = s.shardid
JOIN pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
WHERE s.shardid = get_shard_id_for_distribution_column(%(table)s::regclass, %(owner)s::uuid)
ORDER BY n.nodeid LIMIT 1
"""
_NODES = """
SELECT nodename, nodeport FROM pg_dist_node
WHERE isactive AND noderole = 'primary' AND shouldhaveshards ORDER BY nodeid
"""
#: Run on every shard of chunks by Citus (``%s`` is the shard's name): the vector indexes on it.
_SHARD_INDEXES = """SELECT coalesce(json_agg(c.relname ORDER BY c.relname), '[]')::text
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
WHERE i.indrelid = '%s'::regclass AND i.indisvalid AND a.amname IN ('hnsw', 'ivfflat')"""


class IsolationFailed(Conflict):
    """Citus refused a step (the message names the step and carries Citus's reason)."""


@dataclass(frozen=True)
class NodeAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_node(text: str) -> NodeAddress:
    """``host:port`` as a worker is named in ``pg_dist_node``; InvalidInput otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"node: expected host:port (e.g. 127.0.0.1:5433), got {text[:80]!r}")
    return NodeAddress(host, int(port))


async def _rows(
    conn: psycopg.AsyncConnection, query: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def on_citus(conn: psycopg.AsyncConnection) -> bool:
    """True when ``chunks`` is hash-distributed by Citus in this database."""
    return (await citus_tables(conn)).get("chunks") == "h"


async def owner_shard(conn: psycopg.AsyncConnection, owner_id: uuid.UUID, table: str = ANCHOR) -> dict[str, Any]:
    """The owner's shard of ``table``: shard id, hash range, node, and whether it holds only this owner."""
    row = (await _rows(conn, _SHARD, {"table": table, "owner": owner_id}))[0]
    return {
        "shard_id": row["shardid"],
        "node": str(NodeAddress(row["nodename"], row["nodeport"])),
        "min_hash": row["min_hash"],
        "max_hash": row["max_hash"],
        "isolated": row["min_hash"] == row["max_hash"],
    }


async def shard_vector_indexes(conn: psycopg.AsyncConnection, shard_id: int) -> list[str]:
    """The valid vector indexes on one shard of chunks (their names on the worker)."""
    found = await on_shards(conn, "chunks", _SHARD_INDEXES, shard=shard_id)  # ShardsUnavailable: a 503
    if not found:
        raise Unavailable(f"could not list the indexes of shard {shard_id}: no such shard")
    return [str(name) for name in found[0].value]


async def _citus_step(conn: psycopg.AsyncConnection, what: str, query: str, params: dict[str, Any]) -> Any:
    try:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    except psycopg.OperationalError as e:
        raise Unavailable(f"{what} failed, a node could not be reached: {str(e).strip()}") from None
    except psycopg.Error as e:
        raise IsolationFailed(f"{what} failed: {str(e).strip()}") from None
    return row[0] if row else None


async def _citus(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, node: NodeAddress | None, transfer_mode: TransferMode
) -> dict[str, Any]:
    nodes = [NodeAddress(r["nodename"], r["nodeport"]) for r in await _rows(conn, _NODES)]
    if node is not None and node not in nodes:
        raise InvalidInput(f"node: {node} is not an active worker that holds shards; the nodes are "
                           f"{', '.join(map(str, nodes)) or 'none'}")
    before = await owner_shard(conn, owner_id)
    isolated_now = False
    if not before["isolated"]:
        await _citus_step(conn, f"isolating user {owner_id}'s shard {before['shard_id']}",
                          "SELECT isolate_tenant_to_new_shard(%(table)s::regclass, %(owner)s::uuid, 'CASCADE', "
                          "%(mode)s::citus.shard_transfer_mode)",
                          {"table": ANCHOR, "owner": owner_id, "mode": transfer_mode})
        isolated_now = True
    shard = await owner_shard(conn, owner_id)
    moved_from = None
    if node is not None and str(node) != shard["node"]:
        source = parse_node(shard["node"])
        # Moves the placement of every co-located shard of the group with it.
        await _citus_step(
            conn, f"moving shard {shard['shard_id']} from {source} to {node}",
            "SELECT citus_move_shard_placement(%(shard)s::bigint, %(from_host)s::text, %(from_port)s::int, "
            "%(to_host)s::text, %(to_port)s::int, %(mode)s::citus.shard_transfer_mode)",
            {"mode": transfer_mode, "shard": shard["shard_id"], "from_host": source.host, "from_port": source.port,
             "to_host": node.host, "to_port": node.port},
        )
        moved_from = shard["node"]
        shard = await owner_shard(conn, owner_id)
    shards = {t: (await owner_shard(conn, owner_id, t))["shard_id"] for t in TENANT_TABLES}
    return {
        "mode": "citus",
        "shard_id": shards["chunks"],
        "shards": shards,
        "node": shard["node"],
        "hash": shard["min_hash"],
        "isolated_now": isolated_now,
        "moved_from": moved_from,
        "transfer_mode": transfer_mode,
        "indexes": await shard_vector_indexes(conn, shards["chunks"]),
    }


async def _tenant_index(conn: psycopg.AsyncConnection, owner_id: uuid.UUID) -> dict[str, Any] | None:
    """The owner's partial index that is valid or being built, if any (the newest)."""
    rows, _ = await list_vector_indexes(conn, table="chunks", limit=10_000)
    mine = [r for r in rows if r["owner_id"] == owner_id and r["status"] in ("valid", "building")]
    return max(mine, key=lambda r: r["name"]) if mine else None


async def isolate_tenant(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, *, node: str | None = None, builder: IndexBuilder,
    transfer_mode: TransferMode = DEFAULT_TRANSFER_MODE,
) -> dict[str, Any]:
    """Give ``owner_id`` dedicated capacity (module docstring); ``conn`` in autocommit mode.

    The answer says what was done: ``mode`` (citus or single_node), on Citus the new ``shard_id``
    (of chunks), ``shards`` per table, ``node``, ``isolated_now``, ``moved_from``, the
    ``transfer_mode`` and the vector ``indexes`` on the shard; ``partial_index`` names the owner's
    partial index and ``build`` its build plan when one was started now (None when kept or not
    needed)."""
    cur = await conn.execute("SELECT 1 FROM users WHERE id = %s", (owner_id,))
    if await cur.fetchone() is None:
        raise NotFound(f"no user with id {owner_id}")
    address = parse_node(node) if node is not None else None
    citus = await on_citus(conn)
    if address is not None and not citus:
        raise InvalidInput("node: this database is a single PostgreSQL node (chunks is not distributed by Citus); "
                           "leave node out to give the user their own index here")
    result: dict[str, Any] = {"user_id": owner_id, "mode": "single_node", "shard_id": None, "shards": None,
                              "node": None, "hash": None, "isolated_now": False, "moved_from": None, "indexes": []}
    if citus:
        result |= await _citus(conn, owner_id, address, transfer_mode)
    existing = await _tenant_index(conn, owner_id)
    build: dict[str, Any] | None = None
    partial: str | None = existing["name"] if existing else None
    status: str | None = existing["status"] if existing else None
    if existing is None and not result["indexes"]:
        spec = IndexSpec("hnsw", "cosine_distance", owner_id=owner_id).validated()
        build = (await builder.start(spec)).as_dict()
        partial, status = spec.name, "building"
    result |= {"partial_index": partial, "partial_index_status": status, "build": build}
    return result
