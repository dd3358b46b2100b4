"""``/v3/documents``: upload (file, raw text or chunks), list, get, search, change metadata, delete
(one, or by filter), list chunks and collections."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ragkeep.api.deps import DbDep, Limit, Offset, PrincipalDep, ReadsDep, ServicesDep, require_owner, scope_of
from ragkeep.api.errors import ApiError, status_of
from ragkeep.api.forms import check_form
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.params import compile_named, json_field, query_filters
from ragkeep.api.schemas import (
    ChunkOut,
    CollectionOut,
    DocumentOut,
    GenericBoolean,
    IngestionOut,
    PaginatedResults,
    Results,
    SearchRequest,
)
from ragkeep.api.searching import ChunkSearchDep
from ragkeep.auth import collections as coll
from ragkeep.auth.users import Principal
from ragkeep.db.shared import SharedConnection
from ragkeep.errors import Conflict, Forbidden, NotFound
from ragkeep.ingest import store
from ragkeep.ingest.parsers import UnsupportedDocumentType, detect_type
from ragkeep.ingest.pipeline import (
    ChunkInput,
    ChunksSource,
    FileSource,
    IngestionError,
    TextSource,
    Upload,
)
from ragkeep.limits import storage
from ragkeep.search import chunks as chunk_listing
from ragkeep.search.scope import Scope
from ragkeep.search.settings import search_kind
from ragkeep.text import JsonError, json_problem, parse_json, text_problem

router = APIRouter(prefix="/v3/documents", tags=["documents"], route_class=GuardedRoute)

#: The upload's form fields; each may be given once.
_UPLOAD_FIELDS = (
    "file", "raw_text", "chunks", "id", "metadata", "collection_ids",
    "ingestion_mode", "ingestion_config", "run_with_orchestration",
)  # fmt: skip

MAX_CHUNKS_PER_DOCUMENT = 100_000
#: Document search reads ranked chunks in growing windows up to this many.
MAX_DOCUMENT_SEARCH_WINDOW = 20_000


def _uuid(name: str, raw: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise ApiError(422, f"{name}: not a valid UUID: {str(raw)[:80]!r}") from None


def _chunks(raw: str) -> list[ChunkInput]:
    items = json_field("chunks", raw, list)
    if not items:
        raise ApiError(422, "chunks: expected a non-empty JSON array")
    if len(items) > MAX_CHUNKS_PER_DOCUMENT:
        raise ApiError(413, f"chunks: at most {MAX_CHUNKS_PER_DOCUMENT} chunks per document")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise ApiError(422, f"chunks[{i}]: expected a string or an object with 'text'")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(422, f"chunks[{i}].text: expected non-empty text")
        meta = item.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ApiError(422, f"chunks[{i}].metadata: expected an object")
        vector = item.get("embedding", item.get("vector"))
        if vector is not None and (
            not isinstance(vector, list)
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)
        ):
            raise ApiError(422, f"chunks[{i}].embedding: expected a list of numbers")
        out.append(ChunkInput(text=text, metadata=meta, embedding=vector))
    return out


async def _check_collections(db: SharedConnection, principal: Principal, ids: list[uuid.UUID]) -> None:
    """The same rule as ``POST /v3/collections/{id}/documents/{document_id}``: putting a document
    in a collection changes the collection, which only its owner (or a superuser) may do."""
    if not ids:  # most uploads: no connection to check out
        return
    async with db.connection() as conn:
        for cid in ids:
            try:
                await coll.authorize(conn, principal, cid, "manage")
            except (NotFound, Forbidden, Conflict) as e:  # named for the field, with the status of its class
                raise ApiError(status_of(e), f"collection_ids: {e.message}") from None


@router.post("", response_model=Results[IngestionOut], status_code=201)
async def create_document(
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    db: DbDep,
    file: Annotated[UploadFile | None, File()] = None,
    raw_text: Annotated[str | None, Form()] = None,
    chunks: Annotated[str | None, Form()] = None,
    id: Annotated[str | None, Form()] = None,
    metadata: Annotated[str | None, Form()] = None,
    collection_ids: Annotated[str | None, Form()] = None,
    ingestion_mode: Annotated[str | None, Form()] = None,
    ingestion_config: Annotated[str | None, Form()] = None,
    run_with_orchestration: Annotated[str | None, Form()] = None,
) -> Any:
    await check_form(request, _UPLOAD_FIELDS)
    given = [name for name, v in (("file", file), ("raw_text", raw_text), ("chunks", chunks)) if v is not None]
    if len(given) != 1:
        raise ApiError(422, f"exactly one of 'file', 'raw_text' or 'chunks' must be given (got {len(given)})")
    meta = json_field("metadata", metadata, dict) or {}
    coll_ids = [
        _uuid(f"collection_ids[{i}]", c)
        for i, c in enumerate(json_field("collection_ids", collection_ids, list) or [])
    ]
    doc_id = _uuid("id", id) if id else uuid.uuid4()
    cfg = services.settings.ingestion
    quota = services.settings.limits
    async with db.connection() as conn:
        owner = await storage.read_owner(conn, principal.id)
    # Early and unlocked, to spare reading, parsing and embedding a document that cannot fit (it
    # has one chunk at least); the exact checks run under the owner's lock when writing.
    storage.check_documents(quota, owner)
    storage.check_chunks(quota, owner, 1)
    overrides = owner.overrides
    if storage.exempt(quota, owner):
        quota = quota.model_copy(update={"max_upload_size": None, "max_upload_size_by_type": {}})
        overrides = {}

    def check_size(size: int, field: str, file_type: str | None) -> None:
        """413 naming the limit that applies to this user and type (the server's ceiling caps all)."""
        storage.check_upload_size(quota, overrides, file_type, cfg.max_file_size_bytes, size, field)

    title: str | None = None
    if file is not None:
        try:
            doc_type = detect_type(file.filename, file.content_type)
        except UnsupportedDocumentType as e:
            raise ApiError(415, str(e)) from None
        data = await file.read(cfg.max_file_size_bytes + 1)
        check_size(len(data), "file", doc_type)
        if not data:
            raise ApiError(422, "file: the file is empty")
        source: FileSource | TextSource | ChunksSource = FileSource(data, file.filename, file.content_type)
        title = file.filename
    elif raw_text is not None:
        if not raw_text.strip():
            raise ApiError(422, "raw_text: expected non-empty text")
        if problem := text_problem(raw_text):
            raise ApiError(422, f"raw_text: {problem}")
        check_size(len(raw_text.encode()), "raw_text", "txt")
        doc_type, source = "txt", TextSource(raw_text)
    elif chunks is not None:
        doc_type, source = "txt", ChunksSource(_chunks(chunks))
        check_size(sum(len(c.text.encode()) for c in source.chunks), "chunks", "txt")
        storage.check_chunks(quota, owner, len(source.chunks))
    else:  # the count above let exactly one through
        raise RuntimeError("no document source, yet one was counted")

    await _check_collections(db, principal, coll_ids)
    upload = Upload(
        owner_id=principal.id,
        document_id=doc_id,
        source=source,
        document_type=doc_type,
        title=title,
        metadata=meta,
        collection_ids=tuple(coll_ids),
        limits=services.settings.limits,  # held to at the claim and the chunk write
    )
    await db.release()  # ingestion takes pool connections of its own: hold no idle one meanwhile
    ingestor = services.ingestor
    try:
        ingestor.validate(upload)
    except IngestionError as e:
        raise ApiError(422, str(e)) from None
    try:
        await ingestor.claim(upload)
    except store.DuplicateDocument as e:
        if e.foreign:  # say nothing of another owner's document (docs/ingestion.md, "Document ids")
            raise ApiError(409, str(e)) from None
        raise ApiError(409, str(e), document_id=str(e.existing_id)) from None

    if upload.size_in_bytes > cfg.background_threshold_bytes and isinstance(source, FileSource):
        ingestor.process_in_background(upload)
        out = IngestionOut(message="Ingestion task queued successfully.", task_id=doc_id, document_id=doc_id)
        return JSONResponse(status_code=202, content=Results(results=out).model_dump(mode="json"))
    try:
        await ingestor.process(upload)
    except IngestionError as e:  # a limit (max_chunks) propagates as LimitExceeded: 403
        raise ApiError(422, str(e), document_id=str(doc_id)) from None
    return Results(results=IngestionOut(message="Document created and ingested successfully.", document_id=doc_id))


def _document_out(row: dict[str, Any]) -> DocumentOut:
    return DocumentOut.from_row(row)


async def _visible_document(db: SharedConnection, principal: Principal, document_id: uuid.UUID) -> dict[str, Any]:
    """The document if the caller may read it; 404 otherwise, so existence does not leak."""
    async with db.connection() as conn:
        row = await store.get_document(conn, document_id)
    if row is None or not (
        principal.is_superuser
        or row["owner_id"] == principal.id
        or set(row["collection_ids"]) & set(principal.collection_ids)
    ):
        raise ApiError(404, f"document {document_id} not found")
    return row


async def _owned_document(
    db: SharedConnection, principal: Principal, document_id: uuid.UUID, action: str
) -> dict[str, Any]:
    """The document if the caller may change it: 404 if they cannot even read it, 403 if they only read it."""
    row = await _visible_document(db, principal, document_id)
    require_owner(principal, row["owner_id"], "document", action)
    return row


@router.get("", response_model=PaginatedResults[list[DocumentOut]])
async def list_documents(
    principal: PrincipalDep,
    reads: ReadsDep,
    ids: Annotated[list[uuid.UUID] | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
    owner_only: bool = False,
    include_summary_embeddings: bool = False,  # R2R's; ragkeep makes no document summaries
) -> PaginatedResults[list[DocumentOut]]:
    scope = Scope(owner_id=principal.id) if owner_only else scope_of(principal)
    scope_sql, scope_params = scope.clause("d")
    async with reads.connection() as conn:
        rows, total = await store.list_documents(conn, scope_sql, scope_params, ids=ids, limit=limit, offset=offset)
    return PaginatedResults(results=[_document_out(r) for r in rows], total_entries=total)


@router.post("/search", response_model=Results[list[DocumentOut]])
async def search_documents(
    body: SearchRequest, principal: PrincipalDep, reads: ReadsDep, search_chunks: ChunkSearchDep
) -> Results[list[DocumentOut]]:
    """Documents ranked by their best chunk: the chunk search, grouped by document.

    The ranked chunks are read in growing windows until enough distinct documents are found (or
    the chunks run out, or MAX_DOCUMENT_SEARCH_WINDOW chunks were read), so a document ranks where
    its best chunk does. (Hybrid scores are fused within the window read, as any hybrid page is.)
    R2R's shape: the score goes in ``metadata.search_score``, the kind in ``metadata.search_type``.
    """
    settings = body.settings()
    kind = search_kind(settings)
    wanted = settings.offset + settings.limit
    window = min(max(4 * wanted, 100), MAX_DOCUMENT_SEARCH_WINDOW)
    best: dict[uuid.UUID, float] = {}
    while True:
        inner = settings.model_copy(update={"limit": window, "offset": 0, "include_scores": True})
        hits = await search_chunks(body.query, inner)
        best = {}
        for hit in hits:
            best.setdefault(hit.document_id, float(hit.score or 0.0))
        if len(best) >= wanted or len(hits) < window or window >= MAX_DOCUMENT_SEARCH_WINDOW:
            break
        window = min(window * 4, MAX_DOCUMENT_SEARCH_WINDOW)
    page = list(best)[settings.offset : wanted]
    if not page:
        return Results(results=[])
    scope_sql, scope_params = scope_of(principal).clause("d")
    async with reads.connection() as conn:
        rows, _ = await store.list_documents(conn, scope_sql, scope_params, ids=page, limit=len(page), offset=0)
    by_id = {r["id"]: r for r in rows}
    out = []
    for doc_id in page:
        row = by_id.get(doc_id)
        if row is None:  # deleted since the chunk search
            continue
        metadata = dict(row["metadata"]) if settings.include_metadatas else {}
        if settings.include_scores:
            metadata["search_score"] = best[doc_id]
        metadata["search_type"] = kind.value
        out.append(_document_out({**row, "metadata": metadata}))
    return Results(results=out)


class DeleteByFilterOut(BaseModel):
    success: bool
    deleted_count: int


async def _json_body(request: Request, name: str) -> Any:
    """The request body as JSON whatever its content type: R2R's SDK sends these bodies as JSON text
    with none, which FastAPI's strict content-type check would not parse. None when empty."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return parse_json(raw)
    except JsonError as e:
        raise ApiError(422, f"{name}: the body is {e}" if str(e).startswith("not ") else f"{name}: {e}") from None


def _json_body_doc(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True, "description": description, "content": {"application/json": {"schema": schema}}
        }
    }


def _check_delete_filter(node: Any, path: str) -> None:
    """Refuse what would delete more than the caller can mean: empty objects anywhere (they match
    every document), and ``id``/``chunk_id`` (in R2R they name chunks; here use ``document_id``)."""
    if not isinstance(node, dict):
        return  # the compiler names the problem
    if not node:
        raise ApiError(
            422,
            f"{path}: an empty filter matches every document; give at least one condition "
            "(delete documents one by one with DELETE /v3/documents/{id})",
            path=path,
        )
    for key, value in node.items():
        if key in ("$and", "$or") and isinstance(value, list):
            for i, item in enumerate(value):
                _check_delete_filter(item, f"{path}.{key}[{i}]")
        elif key in ("id", "chunk_id"):
            raise ApiError(
                422,
                f"{path}.{key}: documents are deleted by document fields; use 'document_id' "
                "(delete a chunk with DELETE /v3/chunks/{id})",
                path=f"{path}.{key}",
            )


@router.delete(
    "/by-filter",
    response_model=Results[DeleteByFilterOut],
    openapi_extra=_json_body_doc("the filters object", {"type": "object"}),
)
async def delete_documents_by_filter(
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    filters: Annotated[str | None, Query(description="the filters as JSON, when not sent as the body")] = None,
) -> Results[DeleteByFilterOut]:
    """Delete the caller's documents matching the filters (any owner's, for a superuser).

    The body is the filters object (R2R's SDK sends it as JSON text without a content type; a
    JSON string holding the object is accepted too). Filter fields: ``document_id``, ``owner_id``,
    ``collection_ids``, ``created_at``, ``document_type`` and metadata keys.
    """
    body = await _json_body(request, "filters")
    if body is not None and filters is not None:
        raise ApiError(
            422, "filters: give the filters either as the body or as the 'filters' query parameter, not both"
        )
    value: Any = body
    if value is None:
        if filters is None:
            raise ApiError(422, "filters: required; send the filters object as the request body")
        value = filters
    if isinstance(value, str):
        value = json_field("filters", value, dict)
    if not isinstance(value, dict):
        raise ApiError(422, "filters: expected a JSON object of field conditions")
    if problem := json_problem(value, "filters"):
        raise ApiError(422, problem)
    _check_delete_filter(value, "filters")
    compiled = compile_named("filters", value, store.DOCUMENT_FILTER_ALIAS)
    async with db.connection() as conn:
        deleted = await store.delete_documents_where(
            conn, None if principal.is_superuser else principal.id, compiled.clause, compiled.params
        )
    return Results(results=DeleteByFilterOut(success=True, deleted_count=len(deleted)))


@router.get("/{document_id}", response_model=Results[DocumentOut])
async def get_document(document_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> Results[DocumentOut]:
    return Results(results=_document_out(await _visible_document(db, principal, document_id)))


@router.delete("/{document_id}", response_model=Results[GenericBoolean])
async def delete_document(
    document_id: uuid.UUID, principal: PrincipalDep, db: DbDep
) -> Results[GenericBoolean]:
    row = await _owned_document(db, principal, document_id, "delete")
    async with db.connection() as conn:
        await store.delete_document(conn, row["owner_id"], document_id)
    return Results(results=GenericBoolean(success=True))


def _metadata_items(value: Any) -> list[dict[str, Any]]:
    """R2R's body: a list of objects, merged in order (a single object is accepted as a list of one)."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(422, "metadata: expected a JSON array of objects")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ApiError(422, f"metadata[{i}]: expected an object")
        if problem := json_problem(item, f"metadata[{i}]"):
            raise ApiError(422, problem)
    return value


async def _set_metadata(
    document_id: uuid.UUID, body: Any, principal: Principal, db: SharedConnection, *, replace: bool
) -> Results[DocumentOut]:
    items = _metadata_items(body)
    row = await _owned_document(db, principal, document_id, "change")
    async with db.connection() as conn:
        try:
            updated = await store.update_document_metadata(conn, row["owner_id"], document_id, items, replace=replace)
        except store.DocumentBusy as e:
            raise ApiError(409, f"{e}; change its metadata when ingestion has finished") from None
    if updated is None:
        raise ApiError(404, f"document {document_id} not found")
    return Results(results=_document_out(updated))


_METADATA_BODY = _json_body_doc("metadata objects, merged in order", {"type": "array", "items": {"type": "object"}})


@router.patch("/{document_id}/metadata", response_model=Results[DocumentOut], openapi_extra=_METADATA_BODY)
async def append_metadata(
    document_id: uuid.UUID, request: Request, principal: PrincipalDep, db: DbDep
) -> Results[DocumentOut]:
    """Merge the given objects into the document's metadata (and its chunks')."""
    body = await _json_body(request, "metadata")
    return await _set_metadata(document_id, body, principal, db, replace=False)


@router.put("/{document_id}/metadata", response_model=Results[DocumentOut], openapi_extra=_METADATA_BODY)
async def replace_metadata(
    document_id: uuid.UUID, request: Request, principal: PrincipalDep, db: DbDep
) -> Results[DocumentOut]:
    """Replace the document's metadata with the given objects merged (its chunks keep their own keys)."""
    body = await _json_body(request, "metadata")
    return await _set_metadata(document_id, body, principal, db, replace=True)


@router.get("/{document_id}/chunks", response_model=PaginatedResults[list[ChunkOut]])
async def list_document_chunks(
    document_id: uuid.UUID,
    principal: PrincipalDep,
    db: DbDep,
    reads: ReadsDep,
    offset: Offset = 0,
    limit: Limit = 100,
    include_vectors: bool = False,
    metadata_filter: Annotated[str | None, Query(description="filters (JSON) on the chunks")] = None,
    filters: Annotated[str | None, Query(description="filters (JSON) on the chunks")] = None,
) -> PaginatedResults[list[ChunkOut]]:
    row = await _visible_document(db, principal, document_id)
    compiled = query_filters({"filters": filters, "metadata_filter": metadata_filter})
    async with reads.connection() as conn:
        rows, total = await chunk_listing.list_chunks(
            conn,
            scope_of(principal),
            compiled,
            limit=limit,
            offset=offset,
            include_vectors=include_vectors,
            document=(row["owner_id"], document_id),
        )
    return PaginatedResults(results=[ChunkOut.from_row(r) for r in rows], total_entries=total)


@router.get("/{document_id}/collections", response_model=PaginatedResults[list[CollectionOut]])
async def list_document_collections(
    document_id: uuid.UUID,
    principal: PrincipalDep,
    db: DbDep,
    offset: Offset = 0,
    limit: Limit = 100,
) -> PaginatedResults[list[CollectionOut]]:
    """The collections holding the document, newest first. Its owner and superusers see them all;
    a member reading it through a collection sees only the collections they belong to."""
    row = await _visible_document(db, principal, document_id)
    ids = list(row["collection_ids"])
    if not (principal.is_superuser or row["owner_id"] == principal.id):
        mine = set(principal.collection_ids)
        ids = [c for c in ids if c in mine]
    async with db.connection() as conn:
        rows, total = await store.document_collections(conn, ids, limit=limit, offset=offset)
    return PaginatedResults(results=[CollectionOut(**r) for r in rows], total_entries=total)
