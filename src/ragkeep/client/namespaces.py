"""``client.users``, ``client.documents``, ``client.retrieval``: the calls, shaped as R2R's SDK.

Each method builds a :class:`Request` and hands it to the client's ``_send``; the sync client
returns the decoded JSON, the async one a coroutine of it. Every result is the server's
envelope as sent, e.g. ``{"results": [...], "total_entries": 3}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from ragkeep.client._core import Request, Session, login_request

R_co = TypeVar("R_co", covariant=True)
Id = str | uuid.UUID


class _Sender(Protocol[R_co]):
    _session: Session

    def _send(self, request: Request) -> R_co: ...


class _Namespace(Generic[R_co]):
    def __init__(self, client: _Sender[R_co]) -> None:
        self._client = client

    def _send(self, request: Request) -> R_co:
        return self._client._send(request)


class Users(_Namespace[R_co]):
    """Accounts, log-in and API keys (``/v3/users``)."""

    def create(
        self,
        email: str,
        password: str,
        name: str | None = None,
        bio: str | None = None,
        profile_picture: str | None = None,
        is_verified: bool | None = None,
    ) -> R_co:
        """Register a user (a superuser's credentials are sent when the client has them)."""
        body: dict[str, Any] = {
            "email": email,
            "password": password,
            "name": name,
            "bio": bio,
            "profile_picture": profile_picture,
        }
        if is_verified is not None:
            body["is_verified"] = is_verified
        return self._send(Request("POST", "/v3/users", json=body, auth="optional"))

    def login(self, email: str, password: str) -> R_co:
        """Log in; the client keeps the access and refresh tokens for later calls."""
        return self._send(login_request(email, password))

    def refresh_token(self) -> R_co:
        """Exchange the kept refresh token for a new token pair (the client keeps it)."""
        session = self._client._session
        if not session.refresh_token:
            raise ValueError("no refresh token: log in first")
        return self._send(session.refresh_request())

    def me(self) -> R_co:
        """The caller's profile."""
        return self._send(Request("GET", "/v3/users/me"))

    def retrieve(self, id: Id) -> R_co:
        """One user's profile (yourself, or anyone for a superuser)."""
        return self._send(Request("GET", f"/v3/users/{id}"))

    def create_api_key(self, id: Id, name: str | None = None, description: str | None = None) -> R_co:
        """A new API key for user ``id``; ``results.api_key`` is shown this once."""
        return self._send(Request("POST", f"/v3/users/{id}/api-keys", json={"name": name, "description": description}))

    def list_api_keys(self, id: Id) -> R_co:
        """The user's API keys (public parts only)."""
        return self._send(Request("GET", f"/v3/users/{id}/api-keys"))

    def delete_api_key(self, id: Id, key_id: Id) -> R_co:
        """Revoke one API key."""
        return self._send(Request("DELETE", f"/v3/users/{id}/api-keys/{key_id}"))


class Documents(_Namespace[R_co]):
    """Upload, list, read and delete documents (``/v3/documents``)."""

    def create(
        self,
        file_path: str | Path | None = None,
        raw_text: str | None = None,
        chunks: Sequence[str | dict[str, Any]] | None = None,
        id: Id | None = None,
        metadata: dict[str, Any] | None = None,
        collection_ids: Sequence[Id] | None = None,
        ingestion_mode: str | None = None,
        ingestion_config: dict[str, Any] | None = None,
        run_with_orchestration: bool | None = None,
    ) -> R_co:
        """Ingest exactly one of a file, raw text, or ready-made chunks (strings or ``{"text", "metadata"}``)."""
        given = sum(x is not None for x in (file_path, raw_text, chunks))
        if given != 1:
            raise ValueError("exactly one of `file_path`, `raw_text` or `chunks` must be given")
        data: dict[str, str] = {}
        if id is not None:
            data["id"] = str(id)
        if metadata:
            data["metadata"] = json.dumps(metadata)
        if collection_ids:
            data["collection_ids"] = json.dumps([str(c) for c in collection_ids])
        if ingestion_mode is not None:
            data["ingestion_mode"] = ingestion_mode
        if ingestion_config is not None:
            data["ingestion_config"] = json.dumps(ingestion_config)
        if run_with_orchestration is not None:
            data["run_with_orchestration"] = str(run_with_orchestration)
        upload = None
        if file_path is not None:
            upload = Path(file_path)
            if not upload.is_file():
                raise FileNotFoundError(f"no such file: {file_path}")
        elif raw_text is not None:
            data["raw_text"] = raw_text
        else:
            data["chunks"] = json.dumps(list(chunks or []))
        return self._send(Request("POST", "/v3/documents", data=data, upload=upload))

    def list(self, ids: Sequence[Id] | None = None, offset: int = 0, limit: int = 100) -> R_co:
        """Documents the caller may read, newest first; ``total_entries`` counts them all."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if ids:
            params["ids"] = [str(i) for i in ids]
        return self._send(Request("GET", "/v3/documents", params=params))

    def retrieve(self, id: Id) -> R_co:
        """One document's record (status, metadata, chunk count...)."""
        return self._send(Request("GET", f"/v3/documents/{id}"))

    def delete(self, id: Id) -> R_co:
        """Delete a document and its chunks."""
        return self._send(Request("DELETE", f"/v3/documents/{id}"))

    def list_chunks(self, id: Id, offset: int = 0, limit: int = 100, include_vectors: bool = False) -> R_co:
        """A document's chunks in order, optionally with their embeddings."""
        params = {"offset": offset, "limit": limit, "include_vectors": include_vectors}
        return self._send(Request("GET", f"/v3/documents/{id}/chunks", params=params))


class Retrieval(_Namespace[R_co]):
    """Search (``/v3/retrieval``)."""

    def search(
        self, query: str, search_mode: str = "custom", search_settings: dict[str, Any] | Any | None = None
    ) -> R_co:
        """Semantic search over what the caller may read.

        ``search_settings`` as R2R's: ``filters`` (e.g. ``{"user_id": {"$eq": uid}}``), ``limit``,
        ``offset``, ``include_scores``, ``include_metadatas``; a pydantic model is accepted too.
        """
        if search_settings is not None and hasattr(search_settings, "model_dump"):
            search_settings = search_settings.model_dump()
        settings = _jsonable(search_settings or {})
        body = {"query": query, "search_mode": search_mode, "search_settings": settings}
        return self._send(Request("POST", "/v3/retrieval/search", json=body))


def _jsonable(value: Any) -> Any:
    """UUIDs (e.g. in filters) as strings, so callers may pass them as they have them."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return value
