"""``client.users``, ``.collections``, ``.documents``, ``.chunks``, ``.retrieval``, ``.indices`` and
``.system``: the calls, named and shaped as R2R's SDK (3.6) wherever ragkeep has the route.

Each method builds a :class:`Request` and hands it to the client's ``_send``; the sync client
returns the decoded JSON, the async one a coroutine of it. Every result is the server's
envelope as sent, e.g. ``{"results": [...], "total_entries": 3}``.

R2R SDK calls whose routes ragkeep does not have (yet) are absent rather than failing at the
server: e.g. ``indices.create/retrieve/delete`` (the index-lifecycle issue), e-mail verification
and password reset, document download/export/extraction, graphs, conversations, prompts, RAG.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from ragkeep.client._core import CALLER, JSON, Request, Session, login_request

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
    """Accounts, log-in, profiles, API keys, limits and a user's collections (``/v3/users``)."""

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

    def logout(self) -> R_co:
        """Revoke the access token in use (on every server replica); the client then forgets its
        tokens and email/password, so later calls are not authenticated until you log in again.

        An API key is not ended by this (the server says so with a 400): delete it with
        :meth:`delete_api_key`."""
        return self._send(Request("POST", "/v3/users/logout", on_success=lambda s, _: s.forget_tokens()))

    def change_password(self, current_password: str, new_password: str) -> R_co:
        """Change the caller's password. Refresh tokens issued before stop working (the client drops
        its own, and logs in with the new password when its access token expires)."""
        body = {"current_password": current_password, "new_password": new_password}
        changed = _password_changed(new_password)
        return self._send(Request("POST", "/v3/users/change-password", json=body, on_success=changed))

    def me(self) -> R_co:
        """The caller's profile."""
        return self._send(Request("GET", "/v3/users/me"))

    def list(
        self,
        ids: Sequence[Id] | None = None,
        offset: int = 0,
        limit: int = 100,
        email: str | Sequence[str] | None = None,
    ) -> R_co:
        """Every user (superusers only), by email; ``ids`` and ``email`` (exact, any case) filter."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if ids:
            params["ids"] = [str(i) for i in ids]
        if email:
            params["email"] = [email] if isinstance(email, str) else list(email)
        return self._send(Request("GET", "/v3/users", params=params))

    def retrieve(self, id: Id) -> R_co:
        """One user's profile (yourself, or anyone for a superuser)."""
        return self._send(Request("GET", f"/v3/users/{id}"))

    def update(
        self,
        id: Id,
        email: str | None = None,
        is_superuser: bool | None = None,
        name: str | None = None,
        bio: str | None = None,
        profile_picture: str | None = None,
        limits_overrides: dict[str, Any] | None = None,
        metadata: dict[str, str | None] | None = None,
    ) -> R_co:
        """Change a profile; only what is given changes. ``metadata`` is merged: a string sets a key,
        ``""`` or None removes it, ``{}`` removes all. ``is_superuser`` and ``limits_overrides`` are
        for superusers."""
        fields = {
            "email": email,
            "is_superuser": is_superuser,
            "name": name,
            "bio": bio,
            "profile_picture": profile_picture,
            "limits_overrides": limits_overrides,
            "metadata": metadata,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        return self._send(Request("POST", f"/v3/users/{id}", json=body, on_success=_profile_updated))

    def delete(self, id: Id, password: str | None = None) -> R_co:
        """Delete an account with its documents, chunks, API keys and the collections it owns.

        Your own account needs your password (the client then forgets its credentials); a
        superuser deletes someone else's without one."""
        body = {"password": password} if password is not None else None
        return self._send(Request("DELETE", f"/v3/users/{id}", json=body, on_success=_deleted_user(id)))

    def get_limits(self, id: Id | None = None) -> R_co:
        """Storage and rate limits with what the user stores (default: the caller; a superuser may
        name anyone)."""
        return self._send(Request("GET", f"/v3/users/{id if id is not None else CALLER}/limits"))

    def list_collections(self, id: Id, offset: int = 0, limit: int = 100) -> R_co:
        """The collections the user owns or is a member of (your own, or anyone's for a superuser)."""
        params = {"offset": offset, "limit": limit}
        return self._send(Request("GET", f"/v3/users/{id}/collections", params=params))

    def add_to_collection(self, id: Id, collection_id: Id) -> R_co:
        """Make user ``id`` a member (the collection's owner or a superuser may)."""
        return self._send(Request("POST", f"/v3/users/{id}/collections/{collection_id}"))

    def remove_from_collection(self, id: Id, collection_id: Id) -> R_co:
        """End a membership (the collection's owner or a superuser may; a member may leave)."""
        return self._send(Request("DELETE", f"/v3/users/{id}/collections/{collection_id}"))

    def create_api_key(self, id: Id, name: str | None = None, description: str | None = None) -> R_co:
        """A new API key for user ``id``; ``results.api_key`` is shown this once."""
        return self._send(Request("POST", f"/v3/users/{id}/api-keys", json={"name": name, "description": description}))

    def list_api_keys(self, id: Id) -> R_co:
        """The user's API keys (public parts only)."""
        return self._send(Request("GET", f"/v3/users/{id}/api-keys"))

    def delete_api_key(self, id: Id, key_id: Id) -> R_co:
        """Revoke one API key."""
        return self._send(Request("DELETE", f"/v3/users/{id}/api-keys/{key_id}"))


def _password_changed(new_password: str) -> Callable[[Session, JSON], None]:
    def update(session: Session, _: JSON) -> None:
        session.refresh_token = None  # the server no longer accepts it
        if session.password is not None:
            session.password = new_password

    return update


def _profile_updated(session: Session, result: JSON) -> None:
    """Keep the client able to log in again after changing its own email."""
    user = result.get("results") or {}
    if session.email is not None and _same_id(user.get("id"), session.caller_id()) and user.get("email"):
        session.email = user["email"]


def _deleted_user(id: Id) -> Callable[[Session, JSON], None]:
    def forget(session: Session, _: JSON) -> None:
        if _same_id(id, session.caller_id()):
            session.forget_tokens()

    return forget


def _same_id(a: Any, b: Any) -> bool:
    try:
        return a is not None and b is not None and uuid.UUID(str(a)) == uuid.UUID(str(b))
    except ValueError:
        return False


class Collections(_Namespace[R_co]):
    """Collections, their documents and their members (``/v3/collections``)."""

    def create(self, name: str, description: str | None = None) -> R_co:
        """A new collection owned by the caller."""
        return self._send(Request("POST", "/v3/collections", json={"name": name, "description": description}))

    def list(
        self, ids: Sequence[Id] | None = None, offset: int = 0, limit: int = 100, owner_only: bool = False
    ) -> R_co:
        """Collections the caller owns or is a member of (``owner_only``: owns); all for a superuser."""
        params: dict[str, Any] = {"offset": offset, "limit": limit, "owner_only": owner_only}
        if ids:
            params["ids"] = [str(i) for i in ids]
        return self._send(Request("GET", "/v3/collections", params=params))

    def retrieve(self, id: Id) -> R_co:
        """One collection (its owner, members and superusers may read it)."""
        return self._send(Request("GET", f"/v3/collections/{id}"))

    def retrieve_by_name(self, name: str, owner_id: Id | None = None) -> R_co:
        """The collection ``owner_id`` (default: the caller) has under this name."""
        params = {"owner_id": str(owner_id) if owner_id is not None else None}
        return self._send(Request("GET", f"/v3/collections/name/{quote(name, safe='')}", params=params))

    def update(
        self, id: Id, name: str | None = None, description: str | None = None, generate_description: bool = False
    ) -> R_co:
        """Rename or describe a collection (its owner or a superuser). ragkeep has no language model,
        so ``generate_description=True`` is refused by the server."""
        body: dict[str, Any] = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
        if generate_description:
            body["generate_description"] = True
        return self._send(Request("POST", f"/v3/collections/{id}", json=body))

    def delete(self, id: Id) -> R_co:
        """Delete a collection; its documents stay with their owners."""
        return self._send(Request("DELETE", f"/v3/collections/{id}"))

    def list_documents(self, id: Id, offset: int = 0, limit: int = 100) -> R_co:
        """The collection's documents, newest first."""
        params = {"offset": offset, "limit": limit}
        return self._send(Request("GET", f"/v3/collections/{id}/documents", params=params))

    def add_document(self, id: Id, document_id: Id) -> R_co:
        """Share a document through the collection (the caller owns both, or is a superuser)."""
        return self._send(Request("POST", f"/v3/collections/{id}/documents/{document_id}"))

    def remove_document(self, id: Id, document_id: Id) -> R_co:
        """Take a document out of the collection (the document stays)."""
        return self._send(Request("DELETE", f"/v3/collections/{id}/documents/{document_id}"))

    def list_users(self, id: Id, offset: int = 0, limit: int = 100) -> R_co:
        """The collection's members."""
        params = {"offset": offset, "limit": limit}
        return self._send(Request("GET", f"/v3/collections/{id}/users", params=params))

    def add_user(self, id: Id, user_id: Id) -> R_co:
        """Make a user a member: they can then read and search the collection's documents."""
        return self._send(Request("POST", f"/v3/collections/{id}/users/{user_id}"))

    def remove_user(self, id: Id, user_id: Id) -> R_co:
        """End a membership (the owner or a superuser may; a member may leave)."""
        return self._send(Request("DELETE", f"/v3/collections/{id}/users/{user_id}"))


class Documents(_Namespace[R_co]):
    """Upload, list, read, search, change and delete documents (``/v3/documents``)."""

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

    def list(
        self,
        ids: Sequence[Id] | None = None,
        offset: int = 0,
        limit: int = 100,
        include_summary_embeddings: bool = False,
        owner_only: bool = False,
    ) -> R_co:
        """Documents the caller may read (``owner_only``: owns), newest first; ``total_entries``
        counts them all. ragkeep makes no summaries, so ``include_summary_embeddings`` adds nothing."""
        params: dict[str, Any] = {"offset": offset, "limit": limit, "owner_only": owner_only}
        if include_summary_embeddings:
            params["include_summary_embeddings"] = True
        if ids:
            params["ids"] = [str(i) for i in ids]
        return self._send(Request("GET", "/v3/documents", params=params))

    def retrieve(self, id: Id) -> R_co:
        """One document's record (status, metadata, chunk count...)."""
        return self._send(Request("GET", f"/v3/documents/{id}"))

    def search(
        self, query: str, search_mode: str = "custom", search_settings: dict[str, Any] | Any | None = None
    ) -> R_co:
        """Documents ranked by their best matching chunk; ``metadata.search_score`` has its score.
        ``search_settings`` as in :meth:`Retrieval.search`."""
        body = {"query": query, "search_mode": search_mode, "search_settings": _settings(search_settings)}
        return self._send(Request("POST", "/v3/documents/search", json=body))

    def append_metadata(self, id: Id, metadata: Sequence[dict[str, Any]] | dict[str, Any]) -> R_co:
        """Merge the objects, in order, into the document's metadata (and its chunks')."""
        return self._send(Request("PATCH", f"/v3/documents/{id}/metadata", json=_metadata_list(metadata)))

    def replace_metadata(self, id: Id, metadata: Sequence[dict[str, Any]] | dict[str, Any]) -> R_co:
        """Replace the document's metadata with the objects merged in order."""
        return self._send(Request("PUT", f"/v3/documents/{id}/metadata", json=_metadata_list(metadata)))

    def delete(self, id: Id) -> R_co:
        """Delete a document and its chunks."""
        return self._send(Request("DELETE", f"/v3/documents/{id}"))

    def delete_by_filter(self, filters: dict[str, Any]) -> R_co:
        """Delete the caller's documents (anyone's, for a superuser) matching the filters, e.g.
        ``{"year": {"$lt": 2020}}``; ``results.deleted_count`` says how many. Filter fields:
        ``document_id``, ``owner_id``, ``collection_ids``, ``created_at``, ``document_type`` and
        metadata keys; an empty filter is refused."""
        if not isinstance(filters, dict):
            raise TypeError("filters must be a dict of field conditions")
        return self._send(Request("DELETE", "/v3/documents/by-filter", json=_jsonable(filters)))

    def list_chunks(
        self,
        id: Id,
        include_vectors: bool = False,
        offset: int = 0,
        limit: int = 100,
        *,
        metadata_filter: dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
    ) -> R_co:
        """A document's chunks in order, optionally with their embeddings, optionally filtered."""
        params: dict[str, Any] = {"offset": offset, "limit": limit, "include_vectors": include_vectors}
        params |= _filter_params(filters=filters, metadata_filter=metadata_filter)
        return self._send(Request("GET", f"/v3/documents/{id}/chunks", params=params))

    def list_collections(self, id: Id, offset: int = 0, limit: int = 100) -> R_co:
        """The collections holding the document (a member sees only those they belong to)."""
        params = {"offset": offset, "limit": limit}
        return self._send(Request("GET", f"/v3/documents/{id}/collections", params=params))


class Chunks(_Namespace[R_co]):
    """Read, change, delete and search single chunks (``/v3/chunks``)."""

    def list(
        self,
        include_vectors: bool = False,
        metadata_filter: dict[str, Any] | None = None,
        offset: int = 0,
        limit: int = 100,
        filters: dict[str, Any] | None = None,
    ) -> R_co:
        """Chunks the caller may read, by owner, document and position; ``filters`` and
        ``metadata_filter`` (both in the search filter language) are ANDed."""
        params: dict[str, Any] = {"offset": offset, "limit": limit, "include_vectors": include_vectors}
        params |= _filter_params(filters=filters, metadata_filter=metadata_filter)
        return self._send(Request("GET", "/v3/chunks", params=params))

    def list_by_document(
        self,
        document_id: Id,
        metadata_filter: dict[str, Any] | None = None,
        offset: int = 0,
        limit: int = 100,
        include_vectors: bool = False,
    ) -> R_co:
        """One document's chunks in order (``GET /v3/documents/{id}/chunks``)."""
        params: dict[str, Any] = {"offset": offset, "limit": limit, "include_vectors": include_vectors}
        params |= _filter_params(metadata_filter=metadata_filter)
        return self._send(Request("GET", f"/v3/documents/{document_id}/chunks", params=params))

    def retrieve(self, id: Id, include_vectors: bool = False) -> R_co:
        """One chunk."""
        return self._send(Request("GET", f"/v3/chunks/{id}", params={"include_vectors": include_vectors}))

    def update(self, chunk: dict[str, Any]) -> R_co:
        """Change a chunk: ``{"id", "text"?, "metadata"?}``. New text is embedded again; new metadata
        replaces the chunk's."""
        if "id" not in chunk:
            raise ValueError("chunk must have an 'id'")
        return self._send(Request("POST", f"/v3/chunks/{chunk['id']}", json=_jsonable(chunk)))

    def delete(self, id: Id) -> R_co:
        """Delete one chunk; its document stays, with one chunk fewer."""
        return self._send(Request("DELETE", f"/v3/chunks/{id}"))

    def search(
        self, query: str, search_settings: dict[str, Any] | Any | None = None, search_mode: str = "custom"
    ) -> R_co:
        """The chunk results of :meth:`Retrieval.search`, as a plain list."""
        body = {"query": query, "search_mode": search_mode, "search_settings": _settings(search_settings)}
        return self._send(Request("POST", "/v3/chunks/search", json=body))


class Retrieval(_Namespace[R_co]):
    """Search (``/v3/retrieval``)."""

    def search(
        self, query: str, search_mode: str = "custom", search_settings: dict[str, Any] | Any | None = None
    ) -> R_co:
        """Semantic search over what the caller may read.

        ``search_settings`` as R2R's: ``filters`` (e.g. ``{"user_id": {"$eq": uid}}``), ``limit``,
        ``offset``, ``include_scores``, ``include_metadatas``; a pydantic model is accepted too.
        """
        body = {"query": query, "search_mode": search_mode, "search_settings": _settings(search_settings)}
        return self._send(Request("POST", "/v3/retrieval/search", json=body))


class Indices(_Namespace[R_co]):
    """The vector indexes (``/v3/indices``, superusers only), as R2R's ``client.indices``."""

    def create(
        self,
        config: dict[str, Any] | Any | None = None,
        filters: dict[str, Any] | None = None,
        *,
        table_name: str | None = None,
        index_method: str | None = None,
        index_measure: str | None = None,
        index_arguments: dict[str, Any] | None = None,
        index_name: str | None = None,
        index_column: str | None = None,
        concurrently: bool | None = None,
    ) -> R_co:
        """Start building an index; ``config`` is R2R's ``IndexConfig`` (a dict or its model), or
        its fields as keywords, as the scaling guide writes it::

            client.indices.create(table_name="vectors", index_method="hnsw",
                                  index_arguments={"m": 32, "ef_construction": 80})

        Keywords given with ``config`` override its fields. ``filters`` naming one owner
        (``{"owner_id": {"$eq": uid}}``) builds a partial index over that user's vectors. The
        build runs in the background: ``list``/``retrieve`` show ``status`` (and ``progress``)
        until ``valid``."""
        if config is not None and hasattr(config, "model_dump"):
            config = config.model_dump()
        fields = {
            "table_name": table_name, "index_method": index_method, "index_measure": index_measure,
            "index_arguments": index_arguments, "index_name": index_name, "index_column": index_column,
            "concurrently": concurrently,
        }
        merged = {**(config or {}), **{k: v for k, v in fields.items() if v is not None}}
        body: dict[str, Any] = {"config": _jsonable(merged)}
        if filters is not None:
            body["filters"] = _jsonable(filters)
        return self._send(Request("POST", "/v3/indices", json=body))

    def advice(self) -> R_co:
        """Whether vector indexes are needed, which, and when to build them (live data)."""
        return self._send(Request("GET", "/v3/indices/advice"))

    def isolate(self, user_id: str | uuid.UUID, node: str | None = None, transfer_mode: str | None = None) -> R_co:
        """Dedicated capacity for a power user: on Citus their own shard, moved to ``node``
        (``host:port`` of a worker) if given; on a single node their own partial HNSW index
        (built, or kept if one exists). Answers once the shard is isolated (and moved).
        ``transfer_mode``: Citus's block_writes (the server's default), auto or force_logical."""
        body = {k: v for k, v in (("node", node), ("transfer_mode", transfer_mode)) if v is not None} or None
        return self._send(Request("POST", f"/v3/indices/tenants/{quote(str(user_id), safe='')}/isolate", json=body))

    def warm(self, index_name: str, table_name: str = "vectors") -> R_co:
        """Load the index into shared buffers now (pg_prewarm); returns the index once warm."""
        return self._send(
            Request("POST", f"/v3/indices/{quote(table_name, safe='')}/{quote(index_name, safe='')}/warm")
        )

    def retrieve(self, index_name: str, table_name: str = "vectors") -> R_co:
        return self._send(Request("GET", f"/v3/indices/{quote(table_name, safe='')}/{quote(index_name, safe='')}"))

    def delete(self, index_name: str, table_name: str = "vectors") -> R_co:
        return self._send(Request("DELETE", f"/v3/indices/{quote(table_name, safe='')}/{quote(index_name, safe='')}"))

    def list(self, filters: dict[str, Any] | None = None, offset: int = 0, limit: int = 100) -> R_co:
        """The vector indexes that exist; ``filters`` may be ``{"table_name": "vectors"}``."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if filters:
            params["filters"] = json.dumps(_jsonable(filters))
        return self._send(Request("GET", "/v3/indices", params=params))


class System(_Namespace[R_co]):
    """Server state and maintenance (R2R's ``client.system``; all but ``health`` need a superuser)."""

    def health(self) -> R_co:
        """``GET /v3/health`` (no credentials needed)."""
        return self._send(Request("GET", "/v3/health", auth="none"))

    def status(self) -> R_co:
        """Version, uptime, database, embedding model, vector indexes, last and next maintenance."""
        return self._send(Request("GET", "/v3/system/status"))

    def maintenance_runs(
        self,
        offset: int = 0,
        limit: int = 100,
        task: str | None = None,
        trigger: str | None = None,
        status: str | None = None,
        parent_id: int | None = None,
    ) -> R_co:
        """The VACUUM / REINDEX history, newest first."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        optional = {"task": task, "trigger": trigger, "status": status, "parent_id": parent_id}
        params.update({name: value for name, value in optional.items() if value is not None})
        return self._send(Request("GET", "/v3/system/maintenance", params=params))

    def maintenance_run(self, id: int) -> R_co:
        return self._send(Request("GET", f"/v3/system/maintenance/{int(id)}"))

    def vacuum(
        self,
        tables: Sequence[str] | None = None,
        analyze: bool | None = None,
        full: bool = False,
        reindex: bool = False,
    ) -> R_co:
        """Start a VACUUM (answers the queued run; follow it with ``maintenance_run(id)``).

        ``full=True`` takes an exclusive lock on each table; ``reindex=True`` rebuilds the chunks'
        vector indexes (REINDEX CONCURRENTLY) first.
        """
        body: dict[str, Any] = {"full": full, "reindex": reindex}
        if analyze is not None:
            body["analyze"] = analyze
        if tables is not None:
            body["tables"] = list(tables)
        return self._send(Request("POST", "/v3/system/maintenance/vacuum", json=body))

    def stats(self, window_hours: int = 24, top: int = 10) -> R_co:
        """The operator's metrics over the last ``window_hours``: search latency and top users,
        requests per route, active users, cache hit rates, replicas' memory/CPU, storage growth,
        documents and chunks (superuser)."""
        return self._send(Request("GET", "/v3/system/stats", params={"window_hours": window_hours, "top": top}))

    def user_stats(self, id: str | uuid.UUID, window_hours: int = 24) -> R_co:
        """One user's searches, requests, documents and chunks (a superuser, or the user themself)."""
        return self._send(
            Request("GET", f"/v3/system/users/{quote(str(id), safe='')}/stats", params={"window_hours": window_hours})
        )


def _settings(search_settings: Any) -> Any:
    if search_settings is not None and hasattr(search_settings, "model_dump"):
        search_settings = search_settings.model_dump()
    return _jsonable(search_settings or {})


def _metadata_list(metadata: Sequence[dict[str, Any]] | dict[str, Any]) -> list[Any]:
    """The body the metadata routes read: a JSON array of objects (one object becomes a list of one)."""
    items = [metadata] if isinstance(metadata, dict) else list(metadata)
    body: list[Any] = _jsonable(items)
    return body


def _filter_params(**filters: dict[str, Any] | None) -> dict[str, str]:
    """Filters sent as query parameters, as JSON text (as R2R's SDK sends them)."""
    return {name: json.dumps(_jsonable(value)) for name, value in filters.items() if value}


def _jsonable(value: Any) -> Any:
    """UUIDs (e.g. in filters) as strings, so callers may pass them as they have them."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return value
