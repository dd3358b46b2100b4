"""Findings 5 and 8 of issue 10: hostile document content on ``POST /v3/documents``.

5: a .docx zip bomb and a .docx of millions of empty paragraphs must be refused (422 naming
the limit) without the server's memory jumping or ``/v3/health`` stalling: parses run in worker
processes with limits. 8: content the docs promise to refuse must not be stored quietly
(invalid UTF-8, NUL, binary bytes named .html, a second ``file`` part), and another owner's
document id must not be confirmed as existing.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
import zipfile

import httpx
import psutil

from tests import support


def outcome(client: httpx.Client, resp: httpx.Response, timeout: float = 180) -> tuple[int, str]:
    """(status, message) of an upload: a 422 answered at once, or a background ingestion's end
    (202, then the document's ``failed`` status and error)."""
    if resp.status_code != 202:
        detail = resp.json().get("detail", {})
        return resp.status_code, detail.get("message", "") if isinstance(detail, dict) else str(detail)
    doc_id = resp.json()["results"]["document_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = client.get(f"/v3/documents/{doc_id}").json()["results"]
        if doc["ingestion_status"] == "failed":
            return 422, doc["error"] or ""
        if doc["ingestion_status"] == "success":
            return 201, ""
        time.sleep(0.25)
    raise AssertionError(f"document {doc_id} was still being ingested after {timeout:.0f} s")


def docx_bytes(document_xml_writer) -> bytes:  # type: ignore[no-untyped-def]
    """A minimal .docx whose word/document.xml is written by ``document_xml_writer(stream)``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'wordprocessingml.document.main+xml"/></Types>',
        )
        z.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'officeDocument" Target="word/document.xml"/></Relationships>',
        )
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            document_xml_writer(f)
    return buf.getvalue()


W = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'


def zip_bomb() -> bytes:
    """~1 MB that inflates to 1.1 GB: XML opening, then zeros (the central directory tells the truth)."""

    def write(f) -> None:  # type: ignore[no-untyped-def]
        f.write(W)
        zeros = b"\0" * (1 << 24)
        for _ in range(66):
            f.write(zeros)

    return docx_bytes(write)


def many_paragraphs(count: int) -> bytes:
    """``count`` one-letter paragraphs: ~100 MB of XML in a ~300 KB file."""

    def write(f) -> None:  # type: ignore[no-untyped-def]
        f.write(W)
        block = b"<w:p><w:r><w:t>x</w:t></w:r></w:p>" * 100_000
        for _ in range(count // 100_000):
            f.write(block)
        f.write(b"<w:p><w:r><w:t>the end</w:t></w:r></w:p></w:body></w:document>")

    return docx_bytes(write)


class PeakRss:
    """The largest resident size of this process (the in-process test server) while active."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- finding 5 ----------------------------------------------------------------------------------


def test_docx_zip_bomb_is_refused_without_inflating(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("bomb")
    bomb = zip_bomb()
    assert len(bomb) < 2_000_000
    with PeakRss() as rss:
        r = user.client.post("/v3/documents", files={"file": ("bomb.docx", bomb, "application/octet-stream")})
        status, message = outcome(user.client, r)
    grew = (rss.peak - rss.before) / 2**20
    assert status == 422, message
    assert "max_decompressed_bytes" in message, message
    assert grew < 300, f"the server's memory grew by {grew:.0f} MB for a 1 MB upload"


def test_docx_of_millions_of_paragraphs_is_refused_while_health_answers(make_user, base_url: str) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("paras")
    data = many_paragraphs(3_000_000)
    result: dict[str, object] = {}

    def upload() -> None:
        with httpx.Client(base_url=base_url, headers=user.client.headers, timeout=240) as c:
            try:
                r = c.post("/v3/documents", files={"file": ("paras.docx", data, "application/octet-stream")})
                result["outcome"] = outcome(c, r, timeout=240)
            except (httpx.HTTPError, AssertionError) as e:  # a parse that never ends
                result["outcome"] = (0, f"no answer: {e!r}")

    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    slowest = 0.0
    while worker.is_alive():  # health during the whole parse (a correctness bound for a stall)
        start = time.monotonic()
        assert httpx.get(f"{base_url}/v3/health", timeout=30).status_code == 200
        slowest = max(slowest, time.monotonic() - start)
        worker.join(0.2)
    status, message = result["outcome"]  # type: ignore[misc]
    assert status in (201, 422), message
    if status == 422:
        assert "ingestion." in message, message  # names the limit's setting
    assert slowest < 2.0, f"/v3/health took {slowest:.1f} s while the document was parsed"


# -- finding 8 ----------------------------------------------------------------------------------


def _message(r: httpx.Response) -> str:
    detail = r.json().get("detail")
    return detail.get("message", "") if isinstance(detail, dict) else str(detail)


def test_invalid_utf8_in_raw_text_is_422_naming_the_offset(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("utf8")
    r = user.client.post("/v3/documents", files={"raw_text": (None, b"caf\xe9 au lait")})
    assert r.status_code == 422, f"stored as {r.status_code}: {r.text}"
    assert "raw_text" in _message(r) and "byte offset 3" in _message(r)


def test_valid_utf8_raw_text_in_latin1_range_is_kept(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("utf8ok")
    text = f"café au lait {uuid.uuid4().hex}"
    r = user.client.post("/v3/documents", files={"raw_text": (None, text.encode())})
    assert r.status_code in (200, 201), r.text
    doc_id = r.json()["results"]["document_id"]
    chunks = user.client.get(f"/v3/documents/{doc_id}/chunks").json()["results"]
    assert chunks[0]["text"] == text


def test_nul_in_a_text_file_is_422(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("nul")
    r = user.client.post("/v3/documents", files={"file": ("notes.txt", b"first\x00second", "text/plain")})
    assert r.status_code == 422, f"stored as {r.status_code}: {r.text}"
    assert "NUL" in _message(r) and "offset 5" in _message(r)


def test_random_bytes_named_html_are_422(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("binhtml")
    data = os.urandom(20_000).replace(b"\x00", b"\x01")  # no NUL: the sniff, not the NUL check
    r = user.client.post("/v3/documents", files={"file": ("page.html", data, "text/html")})
    status, message = outcome(user.client, r)
    assert status == 422, f"binary bytes ingested as HTML: {r.status_code} {r.text}"
    assert "binary" in message


def test_legacy_html_is_still_read(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("legacy")
    page = (
        '<html><head><meta charset="windows-1252"></head>'
        f"<body><p>Caf\xe9 cr\xe8me {uuid.uuid4().hex}</p></body></html>"
    )
    r = user.client.post("/v3/documents", files={"file": ("menu.html", page.encode("cp1252"), "text/html")})
    assert r.status_code in (200, 201), r.text


def test_a_second_file_part_is_422(make_user) -> None:  # type: ignore[no-untyped-def]
    user: support.TestUser = make_user("twofiles")
    r = user.client.post(
        "/v3/documents",
        files=[
            ("file", ("one.txt", b"the first file", "text/plain")),
            ("file", ("two.txt", b"the second", "text/plain")),
        ],
    )
    assert r.status_code == 422, f"one file silently ignored: {r.status_code} {r.text}"
    assert "file" in _message(r) and "2 times" in _message(r)


def test_another_owners_document_id_is_not_confirmed(make_user) -> None:  # type: ignore[no-untyped-def]
    owner: support.TestUser = make_user("idowner")
    other: support.TestUser = make_user("idprobe")
    doc_id = str(uuid.uuid4())
    r = owner.client.post("/v3/documents", data={"id": doc_id}, files={"raw_text": (None, f"mine {uuid.uuid4().hex}")})
    assert r.status_code in (200, 201), r.text
    r = other.client.post("/v3/documents", data={"id": doc_id}, files={"raw_text": (None, f"probe {uuid.uuid4().hex}")})
    assert r.status_code == 409, r.text
    message = _message(r)
    assert "exist" not in message, f"the refusal confirms the document exists: {message}"
    assert str(owner.id) not in r.text and "idowner" not in r.text
    assert "document_id" not in r.json()["detail"]
    # The owner is still told plainly about their own document.
    r = owner.client.post("/v3/documents", data={"id": doc_id}, files={"raw_text": (None, f"again {uuid.uuid4().hex}")})
    assert r.status_code == 409 and "already exists" in _message(r)
