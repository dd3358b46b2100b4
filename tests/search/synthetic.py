"""Deterministic synthetic vectors for planner tests: the plan depends on how many vectors a scope
holds, not on what they mean, and thousands of real embeddings would take minutes to compute.
Rows go through the real schema (users, documents, chunks; owner_stats recounted as the store would keep it)."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from ragkeep.ingest.store import RECOUNT_OWNER_STATS_SQL, recount_params

DIM = 384


def unit(rng: np.random.Generator, n: int, centres: np.ndarray, spread: float = 0.35) -> np.ndarray:
    """n vectors around randomly chosen centres, normalised (cosine)."""
    v = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, DIM)) / np.sqrt(DIM)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def add_chunks(url: str, owner_id: uuid.UUID, vectors: np.ndarray, tags: list[str] | None = None) -> uuid.UUID:
    """One document holding ``vectors`` as chunks; chunk i gets metadata {"tag": tags[i]}."""
    doc = uuid.uuid4()
    with psycopg.connect(url) as conn:
        register_vector(conn)
        conn.execute(
            "INSERT INTO documents (owner_id, id, document_type, content_hash, ingestion_status)"
            " VALUES (%s, %s, 'txt', %s, 'success')",
            (owner_id, doc, uuid.uuid4().hex),
        )
        with conn.cursor().copy(
            "COPY chunks (owner_id, id, document_id, chunk_order, text, metadata, embedding) FROM STDIN"
        ) as copy:
            for i, v in enumerate(vectors):
                tag = tags[i] if tags else "common"
                copy.write_row((owner_id, uuid.uuid4(), doc, i, f"synthetic chunk {i}", f'{{"tag": "{tag}"}}', v))
        conn.execute(RECOUNT_OWNER_STATS_SQL, recount_params([owner_id]))
    return doc


def exact_top(url: str, owner_id: uuid.UUID, q: np.ndarray, k: int = 10, tag: str | None = None) -> list[uuid.UUID]:
    """The true nearest chunks by cosine distance, computed in numpy from the stored vectors."""
    with psycopg.connect(url) as conn:
        register_vector(conn)
        rows = conn.execute(
            "SELECT id, embedding FROM chunks WHERE owner_id = %s AND (%s::text IS NULL OR metadata->>'tag' = %s)",
            (owner_id, tag, tag),
        ).fetchall()
    ids = [r[0] for r in rows]
    m = np.array([r[1].to_numpy() for r in rows])
    d = 1 - (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
    return [ids[i] for i in np.argsort(d, kind="stable")[:k]]
