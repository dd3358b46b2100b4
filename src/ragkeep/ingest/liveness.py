"""Which replica is alive to finish a document: a session-level advisory lock per replica.

Each server process holds one lock ``(LEASE_CLASS, key)`` on a connection of its own for as long
as it runs, and stamps the key on every document it claims (``documents.ingest_lease``). When
the process dies (``kill -9``, a lost machine), PostgreSQL ends its session and the lock goes with
it; any replica can then take the lock with ``pg_try_advisory_xact_lock`` and so knows, without
clocks or heartbeats, that the documents stamped with that key will never be finished. A live
replica's lock cannot be taken, so its documents are never swept however long they take.

The two-integer lock form is a key space of its own: it never meets the one-bigint locks of
maintenance and of the document-id claim.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterable

import psycopg

from ragkeep.errors import InternalError

log = logging.getLogger(__name__)

#: The first half of every lease lock ("rgki").
LEASE_CLASS = 0x72676B69


class IngestLease:
    """This replica's lease: its key and the connection holding its lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key: int | None = None
        self._conn: psycopg.AsyncConnection | None = None

    async def acquire(self) -> int:
        """Hold a fresh key; documents a dead earlier holder of the same key left are failed."""
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, application_name="ragkeep lease")
        try:
            while True:
                key = secrets.randbelow(2**31 - 1) + 1
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LEASE_CLASS, key))
                row = await cur.fetchone()
                if row and row[0]:
                    break
            # Nothing of ours carries the key yet: any row that does is a dead replica's.
            await conn.execute(
                """UPDATE documents SET ingestion_status = 'failed', updated_at = now(), error = %s
                    WHERE ingest_lease = %s AND ingestion_status NOT IN ('success', 'failed')""",
                (INTERRUPTED, key),
            )
        except BaseException:
            await conn.close()
            raise
        old, self._conn, self.key = self._conn, conn, key
        if old is not None:
            await old.close()
        return key

    async def ensure(self, in_flight: Iterable[uuid.UUID] = ()) -> int:
        """The key, after checking the lock's session is alive; a lost one is replaced and the
        attempts still running here (``in_flight``) are moved to the new key (those already swept
        meanwhile stay failed: the attempt's own writes then stop)."""
        if self._conn is not None and self.key is not None and not self._conn.closed:
            try:
                await self._conn.execute("SELECT 1")
                return self.key
            except psycopg.Error as e:
                log.warning("the ingestion lease's database session was lost (%s); taking a new one", e)
        key = await self.acquire()
        attempts = list(in_flight)
        if attempts:
            if self._conn is None:  # acquire() just opened it
                raise InternalError("the ingestion lease has no database session after acquiring one")
            await self._conn.execute(
                """UPDATE documents SET ingest_lease = %s
                   WHERE ingest_attempt = ANY(%s::uuid[]) AND ingestion_status NOT IN ('success', 'failed')""",
                (key, attempts),
            )
        return key

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()  # ends the session: the lock goes with it
        self._conn, self.key = None, None


INTERRUPTED = "ingestion was interrupted (the server processing it stopped); upload the document again"

#: The leases among ``%(leases)s`` whose replica is gone: their lock is free (taken here until the
#: transaction ends). A query on no table: on Citus it runs on the coordinator, where the replicas
#: hold their lease locks (in a statement on a distributed table it would run on a worker, and
#: Citus refuses a volatile function in the WHERE of an UPDATE there anyway).
#: S608: the only value formatted in is the constant LEASE_CLASS (an int), never input.
_DEAD_LEASES = f"SELECT l FROM unnest(%(leases)s::int[]) AS l WHERE pg_try_advisory_xact_lock({LEASE_CLASS}, l)"  # noqa: S608

#: One owner's documents in flight with this id or content (their lease, and whether a row from
#: before leases has made no progress for 15 minutes).
_IN_FLIGHT_CLAIMS = """
SELECT ingest_lease, updated_at < now() - interval '15 minutes' FROM documents
WHERE owner_id = %(owner)s AND (id = %(id)s OR content_hash = %(hash)s)
  AND ingestion_status NOT IN ('success', 'failed')
"""

_FAIL_DEAD_CLAIMS = """
UPDATE documents d SET ingestion_status = 'failed', updated_at = now(), error = %(error)s
WHERE d.owner_id = %(owner)s AND (d.id = %(id)s OR d.content_hash = %(hash)s)
  AND d.ingestion_status NOT IN ('success', 'failed')
  AND (d.ingest_lease = ANY(%(dead)s::int[])
       OR (d.ingest_lease IS NULL AND d.updated_at < now() - interval '15 minutes'))
"""


async def fail_dead_claims(
    conn: psycopg.AsyncConnection, owner_id: uuid.UUID, document_id: uuid.UUID, content_hash: str
) -> None:
    """Fail the owner's documents in flight with this id or content that nobody will finish: their
    replica's lease lock is free, or (rows claimed before leases existed) no progress for 15
    minutes. In the caller's transaction; one query when there are none (the usual case)."""
    key = {"owner": owner_id, "id": document_id, "hash": content_hash}
    rows = await (await conn.execute(_IN_FLIGHT_CLAIMS, key)).fetchall()
    leases = sorted({r[0] for r in rows if r[0] is not None})
    dead = [r[0] for r in await (await conn.execute(_DEAD_LEASES, {"leases": leases})).fetchall()] if leases else []
    if dead or any(r[0] is None and r[1] for r in rows):
        await conn.execute(_FAIL_DEAD_CLAIMS, {**key, "dead": dead, "error": INTERRUPTED})


async def sweep(conn: psycopg.AsyncConnection) -> int:
    """Fail every document in flight whose replica is gone; returns how many."""
    async with conn.transaction():
        # S608: the only value formatted in is the constant LEASE_CLASS (an int), never input.
        cur = await conn.execute(
            f"""WITH leases AS (
                    SELECT DISTINCT ingest_lease FROM documents
                    WHERE ingestion_status NOT IN ('success', 'failed') AND ingest_lease IS NOT NULL),
                dead AS (
                    SELECT ingest_lease FROM leases d
                    WHERE pg_try_advisory_xact_lock({LEASE_CLASS}, d.ingest_lease))
                UPDATE documents d SET ingestion_status = 'failed', updated_at = now(), error = %(error)s
                WHERE d.ingestion_status NOT IN ('success', 'failed')
                  AND (d.ingest_lease IN (SELECT ingest_lease FROM dead)
                       OR (d.ingest_lease IS NULL AND d.updated_at < now() - interval '15 minutes'))""",  # noqa: S608
            {"error": INTERRUPTED},
        )
        return cur.rowcount
