"""Hostile input for the issue-10 input tests and ``bench/hostile.py``: each request was a 500
(or stalled the server) on a7b43bf; each must now be a 4xx that says what was wrong.

The requests are built, not sent: a test sends them on one keep-alive connection and checks it
survives; the benchmark sends them at a fixed rate while timing ``/v3/health``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

#: Past PostgreSQL's bigint: "bigint out of range" on every list route before the fix.
HUGE_OFFSET = 2**63
#: Nesting that made ``json.loads`` raise ``RecursionError``.
DEEP = 50_000
DASHES = "-" * 60
FULL_TEXT = {"use_semantic_search": False, "use_fulltext_search": True}
HYBRID = {"use_semantic_search": True, "use_hybrid_search": True}


@dataclass
class Hostile:
    name: str
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: False: sent without credentials (log-in, registration).
    auth: bool = True

    def send(self, client: httpx.Client) -> httpx.Response:
        return client.request(self.method, self.path, **self.kwargs)


def deep_json(levels: int = DEEP) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def hostile_requests(document_id: str) -> list[Hostile]:
    """One of each input of findings 2 and 3; ``document_id`` is a ready document of the caller."""
    nul_email = f"nul-{uuid.uuid4().hex[:8]}\x00@ragkeep.test"
    return [
        Hostile("NUL in log-in username", "POST", "/v3/users/login",
                {"data": {"username": nul_email, "password": "whatever-password"}}, auth=False),
        Hostile("NUL in registration email", "POST", "/v3/users",
                {"json": {"email": nul_email, "password": "long-enough-password"}}, auth=False),
        Hostile("offset 2^63 (documents)", "GET", "/v3/documents", {"params": {"offset": HUGE_OFFSET}}),
        Hostile("offset 2^63 (chunks)", "GET", "/v3/chunks", {"params": {"offset": HUGE_OFFSET}}),
        Hostile("NaN metadata upload", "POST", "/v3/documents",
                {"data": {"raw_text": "nan metadata", "metadata": '{"a": NaN}'}}),
        Hostile("Infinity metadata upload", "POST", "/v3/documents",
                {"data": {"raw_text": "infinite metadata", "metadata": '{"a": -Infinity}'}}),
        Hostile("NaN metadata PATCH", "PATCH", f"/v3/documents/{document_id}/metadata",
                {"content": '[{"a": NaN}]', "headers": {"Content-Type": "application/json"}}),
        Hostile("1e999 metadata PATCH", "PATCH", f"/v3/documents/{document_id}/metadata",
                {"content": '[{"a": 1e999}]', "headers": {"Content-Type": "application/json"}}),
        Hostile("metadata nested 50,000 deep", "POST", "/v3/documents",
                {"data": {"raw_text": "deep metadata", "metadata": deep_json()}}),
        Hostile("hybrid weights both 0", "POST", "/v3/retrieval/search",
                {"json": {"query": "hostile input", "search_settings": {
                    **HYBRID, "hybrid_settings": {"full_text_weight": 0, "semantic_weight": 0}}}}),
        Hostile("dash run, full-text", "POST", "/v3/retrieval/search",
                {"json": {"query": f"hostile {DASHES} input", "search_settings": FULL_TEXT}}),
        Hostile("dash run, hybrid", "POST", "/v3/retrieval/search",
                {"json": {"query": f"hostile {DASHES} input", "search_settings": HYBRID}}),
        Hostile("bad JSON body", "POST", "/v3/retrieval/search",
                {"content": '{"query": "x", ', "headers": {"Content-Type": "application/json"}}),
    ]


def upload_ready(client: httpx.Client, text: str, timeout: float = 120) -> str:
    """A document of ``text``, once its chunks are searchable (hybrid's division needs rows)."""
    r = client.post("/v3/documents", data={"raw_text": text})
    assert r.status_code == 201, r.text
    doc_id = r.json()["results"]["document_id"]
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/v3/documents/{doc_id}").json()["results"]["ingestion_status"]
        if status == "success":
            return doc_id
        assert status not in ("failed",) and time.monotonic() < deadline, f"ingestion {status}"
        time.sleep(0.2)


def sender(base_url: str, token: str) -> Callable[[Hostile], httpx.Response]:
    """Sends each hostile request on a new connection (as an attacker's script would); the clients
    are made once, since making one costs the sender ~10 ms of CPU (its TLS context)."""
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    bearer = {"Authorization": f"Bearer {token}"}
    authed = httpx.Client(base_url=base_url, headers=bearer, timeout=60, limits=no_keep_alive)
    anonymous = httpx.Client(base_url=base_url, timeout=60, limits=no_keep_alive)

    def send(h: Hostile) -> httpx.Response:
        return h.send(authed if h.auth else anonymous)

    return send
