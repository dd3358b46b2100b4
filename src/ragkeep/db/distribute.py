"""Turning a migrated single-node ragkeep database into a Citus one (``ragkeep db distribute``).

The order is the one found to work on Citus 14 (docs/citus-notes.md): Citus cannot distribute
``documents`` while ``chunks`` references it, nor co-locate ``chunks`` with a table that is not
distributed yet, so the foreign key between them is dropped first and put back last. In between,
the tables every node needs (users, keys, collections, settings) become reference tables (a copy
on every node), and the tenant tables are distributed by ``owner_id``, co-located, so one owner's
documents, chunks and counts live on one shard and a pinned query is a single-shard one. The
metrics, limits and maintenance tables stay on the coordinator.

Each step is its own transaction (Citus copies the rows of a table it distributes); a run that
stops half-way is refused the next time, naming what is already distributed.

Vector indexes on ``chunks`` are rebuilt on every shard while Citus copies the rows (one build per
shard, the slow part); :func:`check_vector_indexes` verifies afterwards that each one is on every
shard, and recreates one that is not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ragkeep.db.migrate import latest_version

#: Shared tables, copied to every node; in foreign-key order (a referenced table first).
REFERENCE_TABLES = (
    "ragkeep_meta",
    "schema_version",
    "users",
    "api_keys",
    "revoked_tokens",
    "collections",
    "collection_users",
    "tenant_indexes",
)
#: Tenant tables, distributed by owner_id and co-located with the first.
DISTRIBUTED_TABLES = ("documents", "chunks", "owner_stats")
#: The foreign key Citus refuses while its tables are being distributed.
CHUNKS_FK = "chunks_owner_id_document_id_fkey"

#: Called as progress(step, done, total) before each step and once at the end (done == total).
Progress = Callable[[str, int, int], None]


class DistributeError(RuntimeError):
    """A precondition of distributing does not hold; the message says which and what to do."""


_WORKERS_SQL = "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0"
_SHARDS_SQL = "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'chunks'::regclass"
# Sessions of clients (not Citus' own connections between nodes) on this database but ours.
_OTHER_SESSIONS_SQL = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND application_name NOT LIKE 'citus%'"""


def other_sessions(conn: psycopg.Connection) -> int:
    """Other client sessions on the database: ragkeep servers still running would wait on the
    copy of each table (and must be restarted afterwards anyway)."""
    row = conn.execute(_OTHER_SESSIONS_SQL).fetchone()
    return int(row[0]) if row else 0


def layout(conn: psycopg.Connection) -> tuple[int, int]:
    """(shards of chunks, worker nodes) of a distributed database."""
    shards, workers = conn.execute(_SHARDS_SQL).fetchone(), conn.execute(_WORKERS_SQL).fetchone()
    return (int(shards[0]) if shards else 0), (int(workers[0]) if workers else 0)


def check_ready(conn: psycopg.Connection) -> None:
    """Raise :class:`DistributeError` unless ``conn``'s database can be distributed: the citus
    extension, a ragkeep schema at this version, workers, and nothing distributed yet."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is None:
        raise DistributeError(
            "the citus extension is not installed in this database: run the server with "
            "shared_preload_libraries = 'citus' (ragkeep db start --citus-workers N) and CREATE EXTENSION citus"
        )
    known = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not known or not known[0]:
        raise DistributeError("no ragkeep schema in this database: start ragkeep once against it (it migrates)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    version = row[0] if row else None
    if version != latest_version():
        raise DistributeError(
            f"the schema is at version {version}, this ragkeep's is {latest_version()}: start ragkeep once "
            "against the database (it migrates), then distribute"
        )
    workers = conn.execute(_WORKERS_SQL).fetchone()
    if not workers or not workers[0]:
        raise DistributeError("the coordinator has no worker nodes (citus_add_node)")
    done = conn.execute(
        "SELECT logicalrelid::text FROM pg_dist_partition WHERE logicalrelid::text = ANY(%s) ORDER BY 1",
        (list(REFERENCE_TABLES + DISTRIBUTED_TABLES),),
    ).fetchall()
    # users as a reference table turns the tenant tables into Citus local tables (partmethod 'n');
    # those are not distributed yet, but any entry means a run already started.
    if done:
        raise DistributeError(
            "already (partly) distributed: " + ", ".join(r[0] for r in done)
            + "; a run that stopped half-way has to be finished by hand (docs/citus-notes.md)"
        )


def distribute(
    conn: psycopg.Connection, shard_count: int | None = None, progress: Progress | None = None
) -> None:
    """Distribute the ragkeep schema of ``conn``'s database (on the coordinator, autocommit).

    ``shard_count``: shards of the tenant tables (Citus' default, 32, when None); a few per
    worker core is plenty, each cross-shard search runs one task per shard."""
    if not conn.autocommit:
        raise DistributeError("distribute needs an autocommit connection: each step is its own transaction")
    if shard_count is not None and shard_count < 1:
        raise DistributeError(f"shard_count must be at least 1, not {shard_count}")
    check_ready(conn)
    fk = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'chunks'::regclass AND conname = %s",
        (CHUNKS_FK,),
    ).fetchone()
    steps: list[tuple[str, sql.SQL | sql.Composed, tuple[object, ...]]] = []
    if fk is not None:
        steps.append((f"drop {CHUNKS_FK}", sql.SQL("ALTER TABLE chunks DROP CONSTRAINT {}").format(
            sql.Identifier(CHUNKS_FK)), ()))
    steps.extend(
        (f"reference table {table}", sql.SQL("SELECT create_reference_table(%s)"), (table,))
        for table in REFERENCE_TABLES
    )
    first, *colocated = DISTRIBUTED_TABLES
    if shard_count is None:
        steps.append((f"distribute {first}", sql.SQL("SELECT create_distributed_table(%s, 'owner_id')"), (first,)))
    else:
        steps.append((f"distribute {first} ({shard_count} shards)", sql.SQL(
            "SELECT create_distributed_table(%s, 'owner_id', shard_count => %s)"), (first, shard_count)))
    steps.extend(
        (f"distribute {table} with {first}",
         sql.SQL("SELECT create_distributed_table(%s, 'owner_id', colocate_with => %s)"), (table, first))
        for table in colocated
    )
    if fk is not None:
        # The definition as it was: (owner_id, document_id) -> documents (owner_id, id), cascading.
        steps.append((f"re-add {CHUNKS_FK}", sql.SQL("ALTER TABLE chunks ADD CONSTRAINT {} {}").format(
            sql.Identifier(CHUNKS_FK), sql.SQL(fk[0])), ()))
    for done, (name, statement, params) in enumerate(steps):
        if progress is not None:
            progress(name, done, len(steps))
        conn.execute(statement, params)
    if progress is not None:
        progress("distributed", len(steps), len(steps))


#: The valid vector indexes of chunks as the coordinator lists them (on the shell table).
_VECTOR_INDEXES_SQL = """
SELECT ic.relname, am.amname, pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = 'chunks'::regclass AND am.amname IN ('hnsw', 'ivfflat')
ORDER BY ic.relname
"""
# Run on every shard of chunks (Citus puts the shard's name for %s): its valid vector indexes.
_SHARD_INDEXES_COMMAND = """SELECT coalesce(json_agg(ic.relname), '[]') FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = '%s'::regclass AND i.indisvalid AND am.amname IN ('hnsw', 'ivfflat')"""
_SHARD_INDEXES_SQL = "SELECT shardid, success, result FROM run_command_on_shards('chunks', %s) ORDER BY shardid"


@dataclass(frozen=True)
class ShardIndex:
    """A vector index of chunks and on how many of its shards it is (valid)."""

    name: str
    method: str
    shards: int
    present: int
    recreated: bool = False

    @property
    def complete(self) -> bool:
        return self.present == self.shards


def _on_shard(index: str, shard_index: str, shardid: int) -> bool:
    """Citus names an index's shard copy ``<index>_<shardid>``, shortening a long name (keeping
    its start and the suffix)."""
    suffix = f"_{shardid}"
    return shard_index.endswith(suffix) and (shard_index == index + suffix or shard_index.startswith(index[:20]))


def _shard_counts(conn: psycopg.Connection, names: list[str]) -> tuple[int, dict[str, int]]:
    rows = conn.execute(_SHARD_INDEXES_SQL, (_SHARD_INDEXES_COMMAND,)).fetchall()
    failed = [str(r[2]) for r in rows if not r[1]]
    if failed:
        raise DistributeError(f"cannot list the indexes of every shard of chunks: {failed[0]}")
    present = dict.fromkeys(names, 0)
    for shardid, _, result in rows:
        on_shard = json.loads(result)
        for name in names:
            present[name] += any(_on_shard(name, s, int(shardid)) for s in on_shard)
    return len(rows), present


def check_vector_indexes(conn: psycopg.Connection, repair: bool = True) -> list[ShardIndex]:
    """Every vector index of chunks (the coordinator's list) and on how many shards it is valid;
    with ``repair``, one missing on a shard is dropped and created again from its definition
    (Citus creates it on every shard). Autocommit, on the coordinator of a distributed database."""
    found = conn.execute(_VECTOR_INDEXES_SQL).fetchall()
    names = [str(r[0]) for r in found]
    if not names:
        return []
    shards, present = _shard_counts(conn, names)
    result = []
    for name, method, definition in found:
        if present[name] == shards or not repair:
            result.append(ShardIndex(name, method, shards, present[name]))
            continue
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL(definition))  # pg_get_indexdef: the statement that made it
        _, again = _shard_counts(conn, [name])
        result.append(ShardIndex(name, method, shards, again[name], recreated=True))
    return result
