"""Test data for index tests: random unit vectors written straight into chunks for one user.

Index builds need rows, not meaning; real ingestion of thousands of chunks would cost minutes.
The rows are real (a documents row, chunks rows, owner_stats recounted as the store keeps it) and deleted
afterwards by deleting the document (chunks cascade).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg

from ragkeep.db.database import connect_sync
from ragkeep.ingest.store import RECOUNT_OWNER_STATS_SQL, recount_params


def dimension(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def seeded(url: str, owner: uuid.UUID, rows: int, seed: int = 0) -> Iterator[uuid.UUID]:
    """``rows`` chunks for ``owner`` in one document; yields the document id, deletes it after."""
    dim = dimension(url)
    doc = uuid.uuid4()
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with connect_sync(url) as conn:
        conn.execute(
            "INSERT INTO documents (owner_id, id, document_type, title, content_hash, ingestion_status, chunk_count)"
            " VALUES (%s, %s, 'txt', 'index test', %s, 'success', %s)",
            (owner, doc, uuid.uuid4().hex, rows),
        )
        with conn.cursor().copy(
            "COPY chunks (owner_id, id, document_id, chunk_order, text, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "uuid", "uuid", "int4", "text", "vector"])
            for i, v in enumerate(vectors):
                copy.write_row((owner, uuid.uuid4(), doc, i, f"chunk {i}", v))
        conn.execute(RECOUNT_OWNER_STATS_SQL, recount_params([owner]))
        conn.execute("ANALYZE chunks")
        conn.commit()
    try:
        yield doc
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM documents WHERE owner_id = %s AND id = %s", (owner, doc))
            conn.execute(RECOUNT_OWNER_STATS_SQL, recount_params([owner]))
