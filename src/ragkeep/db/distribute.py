"""Turning a migrated single-node ragkeep database into a Citus one (the core of the future
``ragkeep db distribute``).

The order is the one found to work on Citus 14 (docs/citus-notes.md): Citus cannot distribute
``documents`` while ``chunks`` references it, nor co-locate ``chunks`` with a table that is not
distributed yet, so the foreign key between them is dropped first and put back last. In between,
the tables every node needs (users, keys, collections, settings) become reference tables (a copy
on every node), and the tenant tables are distributed by ``owner_id``, co-located, so one owner's
documents, chunks and counts live on one shard and a pinned query is a single-shard one. The
metrics, limits and maintenance tables stay on the coordinator.

Each step is its own transaction (Citus copies the rows of a table it distributes); a run that
stops half-way is refused the next time, naming what is already distributed.
"""

from __future__ import annotations

from collections.abc import Callable

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


def _check(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone() is None:
        raise DistributeError(
            "the citus extension is not installed in this database: run the server with "
            "shared_preload_libraries = 'citus' (ragkeep db start --citus-workers N) and CREATE EXTENSION citus"
        )
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    version = row[0] if row else None
    if version != latest_version():
        raise DistributeError(
            f"the schema is at version {version}, this ragkeep's is {latest_version()}: start ragkeep once "
            "against the database (it migrates), then distribute"
        )
    workers = conn.execute("SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0").fetchone()
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
    _check(conn)
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
