"""Ingestion through the API: every file type, all-or-nothing, duplicates, status, bad input."""

from __future__ import annotations

import io
import json
import time
import uuid

import httpx
import psycopg
import pytest

from tests.texts import license_text, paragraphs


def make_pdf(text: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 5, text.encode("latin-1", "replace").decode("latin-1"))
    return bytes(pdf.output())


def make_docx(text: str) -> bytes:
    import docx

    d = docx.Document()
    for para in text.split("\n\n"):
        d.add_paragraph(para)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def upload(client: httpx.Client, **kw) -> httpx.Response:
    files = kw.pop("files", None)
    data = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in kw.items()}
    return client.post("/v3/documents", data=data, files=files)


def chunk_texts(client: httpx.Client, doc_id: str) -> list[str]:
    r = client.get(f"/v3/documents/{doc_id}/chunks", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [c["text"] for c in r.json()["results"]]


SAMPLE = paragraphs("assert", 3)


@pytest.mark.parametrize(
    "name, content",
    [
        ("assert.txt", SAMPLE.encode()),
        ("assert.md", ("# The assert statement\n\n" + SAMPLE).encode()),
        ("assert.html", f"<html><head><title>assert</title><style>p{{color:red}}</style></head>"
                        f"<body><p>{SAMPLE}</p><script>var secret = 1;</script></body></html>".encode()),
        ("assert.json", json.dumps({"topic": "assert", "body": SAMPLE, "tags": ["python", "statements"]}).encode()),
        ("assert.pdf", make_pdf(SAMPLE)),
        ("assert.docx", make_docx(SAMPLE)),
    ],
)
def test_every_file_type_is_ingested_and_searchable(make_user, name: str, content: bytes) -> None:
    user = make_user()
    r = upload(user.client, files={"file": (name, content, "application/octet-stream")}, metadata={"kind": name})
    assert r.status_code in (201, 202), r.text
    doc_id = r.json()["results"]["document_id"]
    doc = user.client.get(f"/v3/documents/{doc_id}").json()["results"]
    assert doc["ingestion_status"] == "success", doc
    assert doc["document_type"] == name.rsplit(".", 1)[1]
    text = " ".join(chunk_texts(user.client, doc_id))
    assert "assert" in text and "debugging" in text.lower()
    assert "secret = 1" not in text and "color:red" not in text
    hits = user.client.post("/v3/retrieval/search", json={"query": "assertions for debugging a program"}).json()
    results = hits["results"]["chunk_search_results"]
    assert results and results[0]["document_id"] == doc_id
    assert results[0]["metadata"]["kind"] == name
    assert 0 < results[0]["score"] <= 1


def test_raw_text_and_chunks(make_user) -> None:
    user = make_user()
    r = upload(user.client, raw_text=paragraphs("while", 2))
    assert r.status_code == 201, r.text
    chunks = [paragraphs("for", 1), paragraphs("if", 1)]
    r = upload(user.client, chunks=chunks, metadata={"source": "precut"})
    assert r.status_code == 201, r.text
    doc_id = r.json()["results"]["document_id"]
    assert chunk_texts(user.client, doc_id) == chunks


def test_precomputed_embeddings_are_used_and_dimension_checked(server, make_user) -> None:
    user = make_user()
    text = paragraphs("try", 1)
    vec = server.services.embedder.embed_sync([paragraphs("lambda", 1)])[0].tolist()
    r = upload(user.client, chunks=[{"text": text, "embedding": vec, "metadata": {"n": 1}}])
    assert r.status_code == 201, r.text
    hits = user.client.post("/v3/retrieval/search", json={"query": paragraphs("lambda", 1)}).json()
    best = hits["results"]["chunk_search_results"][0]
    assert best["text"] == text and best["score"] > 0.999  # the given vector, not the text's own
    r = upload(user.client, chunks=[{"text": "x" * 50, "embedding": [0.1] * 17}])
    assert r.status_code == 422 and "384 dimensions" in r.json()["detail"]["message"]
    r = upload(user.client, chunks=[{"text": "aaaa", "embedding": vec}, {"text": "bbbb"}])
    assert r.status_code == 422 and "every chunk" in r.json()["detail"]["message"]


def test_duplicate_content_is_409_naming_the_existing_document(make_user) -> None:
    user, other = make_user(), make_user()
    text = paragraphs("return", 2)
    first = upload(user.client, raw_text=text).json()["results"]["document_id"]
    r = upload(user.client, raw_text=text)
    assert r.status_code == 409
    assert first in r.json()["detail"]["message"]
    # Another owner may upload the same text: duplicates are per owner.
    assert upload(other.client, raw_text=text).status_code == 201


def test_document_id_cannot_be_reused_across_owners(make_user) -> None:
    a, b = make_user(), make_user()
    doc_id = str(uuid.uuid4())
    assert upload(a.client, raw_text=paragraphs("pass", 1), id=doc_id).status_code == 201
    r = upload(b.client, raw_text=paragraphs("del", 1), id=doc_id)
    assert r.status_code == 409


FAULT = "RAGKEEP-TEST-FAULT"


@pytest.fixture
def failing_third_row(settings):
    """A real PostgreSQL error in the middle of COPY: a trigger rejects rows carrying a marker."""
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            f"""CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'injected fault at chunk %', NEW.chunk_order; END $$;
                CREATE TRIGGER test_fault BEFORE INSERT ON chunks FOR EACH ROW
                WHEN (NEW.text LIKE '%{FAULT}%') EXECUTE FUNCTION test_fault();"""
        )
    yield
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER test_fault ON chunks; DROP FUNCTION test_fault()")


def test_failure_midway_leaves_no_chunks_and_a_failed_status(make_user, settings, failing_third_row) -> None:
    user = make_user()
    # Two good chunks reach the table before the third fails inside the same COPY.
    chunks = [paragraphs("class", 1), paragraphs("function", 1), f"{FAULT} " + paragraphs("lambda", 1)]
    r = upload(user.client, chunks=chunks)
    assert r.status_code == 422, r.text
    assert "injected fault at chunk 2" in r.json()["detail"]["message"]
    doc_id = r.json()["detail"]["document_id"]
    doc = user.client.get(f"/v3/documents/{doc_id}").json()["results"]
    assert doc["ingestion_status"] == "failed" and "injected fault" in doc["error"]
    assert chunk_texts(user.client, doc_id) == []
    with psycopg.connect(settings.database.url) as conn:
        n = conn.execute("SELECT count(*) FROM chunks WHERE document_id = %s", (doc_id,)).fetchone()[0]
    assert n == 0
    # A failed attempt does not block uploading the same content again.
    r = upload(user.client, chunks=[*chunks[:2], paragraphs("lambda", 1)])
    assert r.status_code == 201
    assert len(chunk_texts(user.client, r.json()["results"]["document_id"])) == 3


def test_corrupt_pdf_fails_cleanly(make_user) -> None:
    user = make_user()
    pdf = make_pdf(SAMPLE)
    broken = pdf[: len(pdf) // 3]
    r = upload(user.client, files={"file": ("broken.pdf", broken, "application/pdf")})
    assert r.status_code == 422
    doc_id = r.json()["detail"]["document_id"]
    doc = user.client.get(f"/v3/documents/{doc_id}").json()["results"]
    assert doc["ingestion_status"] == "failed"
    assert chunk_texts(user.client, doc_id) == []


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({}, 422, "exactly one of"),
        ({"raw_text": "abc", "chunks": ["abc"]}, 422, "exactly one of"),
        ({"raw_text": "   "}, 422, "raw_text"),
        ({"raw_text": "text", "metadata": "{not json"}, 422, "metadata"),
        ({"raw_text": "text", "metadata": "[1, 2]"}, 422, "metadata"),
        ({"raw_text": "text", "collection_ids": '["not-a-uuid"]'}, 422, "collection_ids[0]"),
        ({"raw_text": "text", "id": "nope"}, 422, "id"),
        ({"chunks": "[]"}, 422, "chunks"),
        ({"chunks": '[{"text": ""}]'}, 422, "chunks[0].text"),
        ({"chunks": '[{"text": "ok", "embedding": ["a"]}]'}, 422, "chunks[0].embedding"),
        ({"chunks": '["fine", "lone \\ud800 surrogate"]'}, 422, "invalid Unicode"),
        ({"raw_text": "text", "metadata": '{"a": "nul \\u0000 byte"}'}, 422, "NUL"),
        ({"raw_text": "text", "collection_ids": json.dumps([str(uuid.uuid4())])}, 404, "collection_ids: collection"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(make_user, kwargs, status, words) -> None:
    user = make_user()
    r = upload(user.client, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]["message"]
    assert user.client.get("/v3/documents").json()["total_entries"] == 0  # nothing written


def test_unsupported_and_empty_files(make_user) -> None:
    user = make_user()
    r = upload(user.client, files={"file": ("image.xyz", b"\x00\x01", "application/octet-stream")})
    assert r.status_code == 415 and "xyz" in r.json()["detail"]["message"]
    r = upload(user.client, files={"file": ("empty.txt", b"", "text/plain")})
    assert r.status_code == 422 and "empty" in r.json()["detail"]["message"]
    assert user.client.get("/v3/documents").json()["total_entries"] == 0


def test_large_file_runs_in_background_with_readable_status(make_user, settings) -> None:
    user = make_user()
    text = license_text("GPL-3")
    text = (text * (settings.ingestion.background_threshold_bytes // len(text) + 1))
    # Make the content unique to this test run so duplicates never interfere.
    text = f"run {uuid.uuid4()}\n\n" + text[: settings.ingestion.background_threshold_bytes + 1000]
    r = upload(user.client, files={"file": ("gpl.txt", text.encode(), "text/plain")})
    assert r.status_code == 202, r.text
    doc_id = r.json()["results"]["document_id"]
    seen = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = user.client.get(f"/v3/documents/{doc_id}").json()["results"]["ingestion_status"]
        seen.add(status)
        if status in ("success", "failed"):
            break
        time.sleep(0.2)
    assert status == "success", seen
    assert seen & {"pending", "parsing", "embedding", "storing"}  # observed while it ran
    assert len(chunk_texts(user.client, doc_id)) > 10


def test_list_paginates_with_total_and_delete_removes_chunks(make_user) -> None:
    user = make_user()
    ids = [upload(user.client, raw_text=paragraphs(t, 1)).json()["results"]["document_id"]
           for t in ("break", "continue", "global")]
    page = user.client.get("/v3/documents", params={"limit": 2, "offset": 0}).json()
    assert page["total_entries"] == 3 and len(page["results"]) == 2
    past = user.client.get("/v3/documents", params={"limit": 2, "offset": 5}).json()
    assert past["total_entries"] == 3 and past["results"] == []
    assert user.client.delete(f"/v3/documents/{ids[0]}").json()["results"]["success"] is True
    assert user.client.get(f"/v3/documents/{ids[0]}").status_code == 404
    assert user.client.get("/v3/documents").json()["total_entries"] == 2


def test_owner_stats_follow_ingest_and_delete(make_user, settings) -> None:
    user = make_user()
    r = upload(user.client, chunks=[paragraphs("import", 1), paragraphs("nonlocal", 1)])
    doc = r.json()["results"]["document_id"]
    with psycopg.connect(settings.database.url) as conn:
        row = conn.execute(
            "SELECT document_count, chunk_count FROM owner_stats WHERE owner_id = %s", (user.id,)
        ).fetchone()
        assert row == (1, 2)
        user.client.delete(f"/v3/documents/{doc}")
        row = conn.execute(
            "SELECT document_count, chunk_count FROM owner_stats WHERE owner_id = %s", (user.id,)
        ).fetchone()
        assert row == (0, 0)
