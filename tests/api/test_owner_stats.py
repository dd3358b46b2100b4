"""owner_stats equals the rows it counts after every kind of write, for several owners.

Until migration 0011 statement triggers kept the counts whatever path wrote; now each path of
``ingest/store.py`` keeps them itself, so a path that forgets shows up here as a difference from
a fresh ``count(*)``."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from tests.api.test_documents import upload
from tests.texts import paragraphs


def counted(url: str, owners: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
    """(documents, chunks) per owner, counted from the tables."""
    with psycopg.connect(url) as conn:
        return {
            o: (
                conn.execute("SELECT count(*) FROM documents WHERE owner_id = %s", (o,)).fetchone()[0],  # type: ignore[index]
                conn.execute("SELECT count(*) FROM chunks WHERE owner_id = %s", (o,)).fetchone()[0],  # type: ignore[index]
            )
            for o in owners
        }


def kept(url: str, owners: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
    """(documents, chunks) per owner as owner_stats has them; (0, 0) for an owner without a row."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT owner_id, document_count, chunk_count FROM owner_stats WHERE owner_id = ANY(%s::uuid[])",
            (owners,),
        ).fetchall()
    found = {r[0]: (r[1], r[2]) for r in rows}
    return {o: found.get(o, (0, 0)) for o in owners}


def doc_id(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return str(r.json()["results"]["document_id"])


def test_owner_stats_equal_the_rows_after_a_mixed_sequence(make_user, admin, settings) -> None:
    url = settings.database.url
    a, b, c = make_user("stats-a"), make_user("stats-b"), make_user("stats-c")
    owners = [a.id, b.id, c.id]
    tag = uuid.uuid4().hex

    def check(step: str) -> None:
        assert kept(url, owners) == counted(url, owners), step

    # Uploads: ready-made chunks and parsed text, several per owner.
    a1 = doc_id(upload(a.client, chunks=[paragraphs("import", 1), paragraphs("nonlocal", 1), paragraphs("yield", 1)],
                       metadata={"tag": tag}))
    a2 = doc_id(upload(a.client, raw_text=paragraphs("assert", 4)))
    doc_id(upload(b.client, chunks=[paragraphs("global", 1), paragraphs("del", 1)], metadata={"tag": tag}))
    b2 = doc_id(upload(b.client, raw_text=paragraphs("pass", 3)))
    c1 = doc_id(upload(c.client, chunks=[paragraphs("lambda", 1), paragraphs("return", 1)]))
    doc_id(upload(c.client, raw_text=paragraphs("raise", 2), metadata={"tag": tag}))
    check("after uploads")

    # A duplicate upload is refused and counts nothing.
    assert upload(b.client, raw_text=paragraphs("pass", 3)).status_code == 409
    check("after a refused duplicate")

    # One chunk deleted: its document stays.
    chunks = a.client.get(f"/v3/documents/{a1}/chunks").json()["results"]
    assert a.client.delete(f"/v3/chunks/{chunks[0]['id']}").status_code == 200
    check("after a chunk delete")

    # Metadata and chunk updates change no count.
    assert a.client.patch(f"/v3/documents/{a2}/metadata", json=[{"x": 1}]).status_code == 200
    check("after a metadata update")

    # One document deleted.
    assert b.client.delete(f"/v3/documents/{b2}").status_code == 200
    check("after a document delete")

    # Re-ingest: a failed attempt that holds chunks (as one left by a crash could) is replaced by
    # a new upload with its id.
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE documents SET ingestion_status = 'failed' WHERE id = %s", (c1,))
    assert doc_id(upload(c.client, raw_text=paragraphs("class", 2), id=c1)) == c1
    check("after a re-ingest over a failed attempt")

    # A superuser's filter delete across owners (a1, b1 and c's third document).
    r = admin.request("DELETE", "/v3/documents/by-filter", json={"tag": tag})
    assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 3, r.text
    check("after a delete by filter across owners")

    # An owner's own filter delete.
    r = a.client.request("DELETE", "/v3/documents/by-filter", json={"document_id": a2})
    assert r.status_code == 200 and r.json()["results"]["deleted_count"] == 1, r.text
    check("after an owner's delete by filter")

    # A user deleted: their row goes with them, the others' stay exact.
    doc_id(upload(b.client, raw_text=paragraphs("while", 2)))
    r = b.client.request("DELETE", f"/v3/users/{b.id}", json={"password": b.password})
    assert r.status_code == 200, r.text
    check("after a user delete")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM owner_stats WHERE owner_id = %s", (b.id,)).fetchone()[0] == 0  # type: ignore[index]
    assert kept(url, [a.id, c.id]) != {a.id: (0, 0), c.id: (0, 0)}  # the check above compared counts, not zeros
