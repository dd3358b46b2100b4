"""Any OpenAI-compatible ``POST /embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI, LiteLLM...)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from ragkeep.embeddings.base import EmbeddingError, EmbeddingProvider, check_texts, l2_normalise
from ragkeep.embeddings.tokenizer import minilm_tokenizer, tokenizer_from_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_HINTS = {
    401: "check embedding.api_key",
    403: "check embedding.api_key and the key's permissions",
    404: "check embedding.base_url (it usually ends in /v1) and embedding.model",
    429: "the server is rate limiting; retry later or lower embedding.batch_size",
}


class OpenAICompatibleProvider(EmbeddingProvider):
    """Remote embeddings, checked as strictly as the local ones: count, order, dimension, unit norm.

    ``dimensions`` is sent so that models with shortened outputs (text-embedding-3-*) return the
    configured size. Many models and servers refuse the field, so by default (``send_dimensions``
    None) it is dropped for good after the first refusal that mentions it; the length check still
    catches a real mismatch.

    ``max_tokens`` is the remote model's window, taken from configuration; chunkers keep every
    chunk within it, counting with ``tokenizer_path`` (the model's own ``tokenizer.json``) when
    given, else with MiniLM's WordPiece tokenizer as a stand-in (English WordPiece splits into
    at least as many pieces as common BPE vocabularies, so the count errs long, i.e. safe).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        dimensions: int,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_seconds: float = 60,
        max_tokens: int = 8191,
        *,
        send_dimensions: bool | None = None,
        query_cache_size: int = 1024,
        tokenizer_path: str | Path | None = None,
    ) -> None:
        if dimensions < 1 or batch_size < 1 or max_tokens < 1:
            raise EmbeddingError(
                f"dimensions, batch_size and max_tokens must be >= 1 (got {dimensions}, {batch_size}, {max_tokens})"
            )
        super().__init__(model, dimensions, max_tokens, query_cache_size)
        self._tokenizer = tokenizer_from_file(Path(tokenizer_path)) if tokenizer_path else minilm_tokenizer()
        self.url = base_url.rstrip("/") + "/embeddings"
        self.batch_size = batch_size
        self._send_dimensions = send_dimensions
        self._client_args: dict[str, Any] = {
            "timeout": httpx.Timeout(timeout_seconds),
            "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        }
        self._client: httpx.Client | None = None
        # An AsyncClient's connections belong to the loop that opened them, so it is kept per loop.
        self._aclient: httpx.AsyncClient | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    # -- requests ------------------------------------------------------------------------------

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        if self._closed:
            raise EmbeddingError("this embedding provider is closed; create a new one")
        if not texts:
            return self._empty()
        if self._client is None:
            self._client = httpx.Client(**self._client_args)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            while True:
                payload = self._payload(batch)
                try:
                    with self._busy():
                        response = self._client.post(self.url, json=payload)
                except httpx.HTTPError as e:
                    raise self._transport_error(e) from e
                if not self._refused_dimensions(payload, response):
                    break
            parts.append(self._parse(response, len(batch)))
        return np.concatenate(parts)

    async def embed(self, texts: list[str], token_ids: list[list[int]] | None = None) -> np.ndarray:
        texts = check_texts(texts)
        if self._closed:
            raise EmbeddingError("this embedding provider is closed; create a new one")
        if not texts:
            return self._empty()
        client = self._async_client()
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            while True:
                payload = self._payload(batch)
                try:
                    with self._busy():
                        response = await client.post(self.url, json=payload)
                except httpx.HTTPError as e:
                    raise self._transport_error(e) from e
                if not self._refused_dimensions(payload, response):
                    break
            parts.append(self._parse(response, len(batch)))
        return np.concatenate(parts)

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            self._aclient, self._aloop = httpx.AsyncClient(**self._client_args), loop
        return self._aclient

    def _payload(self, batch: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model_name, "input": batch}
        if self._send_dimensions is not False:
            payload["dimensions"] = self.dimension
        return payload

    def _refused_dimensions(self, payload: dict[str, Any], response: httpx.Response) -> bool:
        """True when the request should be repeated without ``dimensions``."""
        if self._send_dimensions is not None or "dimensions" not in payload:
            return False
        if response.status_code in (400, 422) and "dimension" in response.text.lower():
            self._send_dimensions = False
            return True
        if response.is_success:
            self._send_dimensions = True
        return False

    # -- answers -------------------------------------------------------------------------------

    def _transport_error(self, e: httpx.HTTPError) -> EmbeddingError:
        kind = "timed out" if isinstance(e, httpx.TimeoutException) else f"failed ({type(e).__name__}: {e})"
        return EmbeddingError(
            f"the embedding request to {self.url} {kind}; check that the server is running and "
            "embedding.base_url, or raise embedding.timeout_seconds"
        )

    def _parse(self, response: httpx.Response, count: int) -> np.ndarray:
        if response.is_error:
            hint = _HINTS.get(response.status_code)
            raise EmbeddingError(
                f"the embedding server at {self.url} answered HTTP {response.status_code}: "
                f"{_error_message(response)}" + (f" ({hint})" if hint else "")
            )
        try:
            items = response.json()["data"]
            ordered = sorted(items, key=lambda item: item["index"])
            if [item["index"] for item in ordered] != list(range(count)):
                raise ValueError(f"expected indexes 0..{count - 1}")
            vectors = [item["embedding"] for item in ordered]
        except (ValueError, KeyError, TypeError) as e:
            raise EmbeddingError(
                f"{self.url} did not answer in OpenAI's embeddings format ({type(e).__name__}: {e}); "
                "check embedding.base_url"
            ) from None
        for vector in vectors:
            if not isinstance(vector, list) or len(vector) != self.dimension:
                got = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise EmbeddingError(
                    f"{self.url} returned vectors of {got} dimensions for model {self.model_name!r}, "
                    f"expected {self.dimension}; set embedding.dimensions to what the model produces "
                    "(stored documents must then be embedded again) or pick a model of that size"
                )
        return l2_normalise(np.asarray(vectors, dtype=np.float32))

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Closes the async connections properly when called on the loop that opened them."""
        aclient, loop = self._aclient, self._aloop
        if aclient is not None and loop is asyncio.get_running_loop():
            self._aclient = self._aloop = None
            await aclient.aclose()
        self.close()

    def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            client.close()
        aclient, loop = self._aclient, self._aloop
        self._aclient = self._aloop = None
        if aclient is None or loop is None or loop.is_closed():
            return  # a closed loop took its sockets with it
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._closing = loop.create_task(aclient.aclose())  # referenced so it is not collected
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(aclient.aclose(), loop).result(timeout=10)


def _error_message(response: httpx.Response) -> str:
    """OpenAI nests it in ``error.message``; FastAPI-based servers use ``detail``."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:500]
