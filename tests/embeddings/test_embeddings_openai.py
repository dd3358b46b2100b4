"""The OpenAI-compatible provider against a real local HTTP server that serves MiniLM embeddings."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from ragkeep.config import EmbeddingConfig
from ragkeep.embeddings import EmbeddingError, create_provider
from ragkeep.embeddings.minilm import MiniLMProvider
from ragkeep.embeddings.openai import OpenAICompatibleProvider

API_KEY = "sk-test-123"
TEXTS = [
    'The "try" statement specifies exception handlers and/or cleanup code for a group of statements.',
    "Lambda expressions (sometimes called lambda forms) are used to create anonymous functions.",
    "x",
    'The "while" statement is used for repeated execution as long as an expression is true.',
    "Assert statements are a convenient way to insert debugging assertions into a program.",
]


@dataclass
class Server:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def minilm() -> Iterator[MiniLMProvider]:
    p = MiniLMProvider()
    yield p
    p.close()


@pytest.fixture(scope="module")
def server(minilm: MiniLMProvider) -> Iterator[Server]:
    """Answers like OpenAI: error bodies under ``error.message``, refuses ``dimensions`` like
    text-embedding-ada-002 does, and lists the vectors in reverse so that ``index`` matters."""
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(body)
            if self.path != "/v1/embeddings":
                self._send(404, {"error": {"message": f"Unknown path {self.path}"}})
                return
            if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
                self._send(401, {"error": error})
                return
            if "dimensions" in body and body["dimensions"] != 384:
                refusal = "This model does not support specifying dimensions."
                self._send(400, {"error": {"message": refusal}})
                return
            vectors = minilm.embed_sync(body["input"]) * 3.0  # not unit length: the client normalises
            data = [
                {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)
            ]
            self._send(200, {"object": "list", "data": data[::-1], "model": body["model"], "usage": {}})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: the OS picks a free one
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def make(server: Server, **kwargs: Any) -> OpenAICompatibleProvider:
    args: dict[str, Any] = {"model": "all-MiniLM-L6-v2", "dimensions": 384, "api_key": API_KEY}
    args["batch_size"] = 2
    return OpenAICompatibleProvider(server.url + "/", **(args | kwargs))


def test_matches_local_model(server: Server, minilm: MiniLMProvider) -> None:
    provider = make(server)
    try:
        vectors = provider.embed_sync(TEXTS)  # three requests of at most two texts
    finally:
        provider.close()
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, minilm.embed_sync(TEXTS), atol=1e-5)
    assert server.requests[-1] == {"model": "all-MiniLM-L6-v2", "input": TEXTS[4:], "dimensions": 384}
    assert provider.busy_seconds > 0


def test_async_embed(server: Server, minilm: MiniLMProvider) -> None:
    provider = make(server)

    async def main() -> tuple[np.ndarray, np.ndarray]:
        try:
            return await provider.embed(TEXTS), await provider.embed_query(TEXTS[1])
        finally:
            await provider.aclose()

    vectors, query = asyncio.run(main())
    np.testing.assert_allclose(vectors, minilm.embed_sync(TEXTS), atol=1e-5)
    assert query.shape == (384,)
    np.testing.assert_allclose(query, vectors[1], atol=1e-5)


def test_empty_input_sends_nothing(server: Server) -> None:
    before = len(server.requests)
    assert make(server).embed_sync([]).shape == (0, 384)
    assert len(server.requests) == before


def test_dimension_mismatch(server: Server) -> None:
    provider = make(server, dimensions=256)
    with pytest.raises(EmbeddingError) as info:
        provider.embed_sync(TEXTS[:1])
    message = str(info.value)
    assert "384" in message and "expected 256" in message
    # The server refused the field, so the request was repeated once without it.
    assert "dimensions" in server.requests[-2] and "dimensions" not in server.requests[-1]


def test_dimension_mismatch_when_always_sending(server: Server) -> None:
    provider = make(server, dimensions=256, send_dimensions=True)
    with pytest.raises(EmbeddingError, match="HTTP 400: This model does not support specifying dimensions"):
        provider.embed_sync(TEXTS[:1])


def test_wrong_api_key(server: Server) -> None:
    provider = make(server, api_key="sk-wrong")
    with pytest.raises(EmbeddingError) as info:
        provider.embed_sync(TEXTS[:1])
    message = str(info.value)
    assert "401" in message and "Incorrect API key provided" in message
    assert f"{server.url}/embeddings" in message and "api_key" in message

    async def main() -> None:
        await provider.embed(TEXTS[:1])

    with pytest.raises(EmbeddingError, match="401"):
        asyncio.run(main())


def test_unreachable_server() -> None:
    provider = OpenAICompatibleProvider("http://127.0.0.1:9/v1", "m", 3, timeout_seconds=2)
    with pytest.raises(EmbeddingError, match=re.escape("127.0.0.1:9/v1/embeddings")):
        provider.embed_sync(["text"])


def test_factory_builds_both(server: Server) -> None:
    remote = create_provider(
        EmbeddingConfig(provider="openai", base_url=server.url, dimensions=384, api_key=API_KEY)
    )
    assert isinstance(remote, OpenAICompatibleProvider)
    assert (remote.dimension, remote.batch_size, remote.max_tokens) == (384, 64, 8191)
    assert remote.embed_sync(TEXTS[:1]).shape == (1, 384)
    remote.close()

    local = create_provider(EmbeddingConfig(threads=1, batch_size=8, max_tokens=128))
    assert isinstance(local, MiniLMProvider)
    assert (local.model_name, local.dimension) == ("all-MiniLM-L6-v2", 384)
    assert (local.max_tokens, local.batch_size, local.threads) == (128, 8, 1)
    local.close()

    with pytest.raises(EmbeddingError, match="only runs all-MiniLM-L6-v2"):
        create_provider(EmbeddingConfig(model="bge-small-en"))
