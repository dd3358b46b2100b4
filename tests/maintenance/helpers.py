"""Seeding chunks straight into PostgreSQL (no model needed to make dead tuples), and following runs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import psycopg

from ragkeep.ingest.store import RECOUNT_OWNER_STATS_SQL, recount_params

DIMENSION = 384
FINISHED = ("succeeded", "failed", "skipped")


def seed_chunks(url: str, owner_id: uuid.UUID, n: int) -> uuid.UUID:
    """One document of ``n`` chunks with random vectors for ``owner_id``; returns the document id."""
    with psycopg.connect(url, autocommit=True) as conn:
        # A new table's reltuples is unknown, so autovacuum's threshold is its 50-row base: it
        # would clean a test's deletes between the DELETE and the VACUUM the test runs (seen in
        # CI as "dead tuples before: 0"). Tests that count dead tuples need it off.
        conn.execute("ALTER TABLE chunks SET (autovacuum_enabled = off)")
        conn.execute("ALTER TABLE documents SET (autovacuum_enabled = off)")
        doc = uuid.uuid4()
        conn.execute(
            "INSERT INTO documents (owner_id, id, document_type, title, content_hash, ingestion_status, chunk_count) "
            "VALUES (%s, %s, 'txt', 'seeded', %s, 'success', %s)",
            (owner_id, doc, uuid.uuid4().hex, n),
        )
        conn.execute(
            "INSERT INTO chunks (owner_id, id, document_id, chunk_order, text, embedding) "
            "SELECT %(owner)s, gen_random_uuid(), %(doc)s, g, 'seeded chunk ' || g, "
            "  (SELECT array_agg(random()) FROM generate_series(1, %(dim)s) WHERE g IS NOT NULL)::vector "
            "FROM generate_series(1, %(n)s) g",
            {"owner": owner_id, "doc": doc, "n": n, "dim": DIMENSION},
        )
        conn.execute(RECOUNT_OWNER_STATS_SQL, recount_params([owner_id]))
        conn.execute("SELECT pg_stat_force_next_flush()")
    return doc


def delete_chunks(url: str, owner_id: uuid.UUID, every: int) -> int:
    """Delete every ``every``-th chunk of the owner; the counts reach pg_stat_user_tables at once."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute("DELETE FROM chunks WHERE owner_id = %s AND chunk_order %% %s = 0", (owner_id, every))
        deleted = cur.rowcount
        conn.execute(RECOUNT_OWNER_STATS_SQL, recount_params([owner_id]))
        # Statistics are flushed asynchronously; this makes the deletes visible when this
        # transaction ends, so "dead tuples before" can be asserted.
        conn.execute("SELECT pg_stat_force_next_flush()")
    return deleted


def dead_tuples(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_run(client: httpx.Client, run_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/v3/system/maintenance/{run_id}")
        resp.raise_for_status()
        run = resp.json()["results"]
        if run["status"] in FINISHED:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"maintenance run {run_id} still {run['status']}")
        time.sleep(0.1)
