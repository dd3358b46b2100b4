"""``/v3/documents``: upload (file, raw text or chunks), list, get, delete, list chunks."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from ragkeep.api.deps import PrincipalDep, ServicesDep
from ragkeep.api.errors import ApiError
from ragkeep.api.schemas import ChunkOut, DocumentOut, GenericBoolean, IngestionOut, PaginatedResults, Results
from ragkeep.auth.users import Principal
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
from ragkeep.search.scope import Scope
from ragkeep.text import json_problem, text_problem

router = APIRouter(prefix="/v3/documents", tags=["documents"])

MAX_CHUNKS_PER_DOCUMENT = 100_000


def _json_field(name: str, raw: str | None, kind: type) -> Any:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ApiError(422, f"{name}: not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(value, kind):
        raise ApiError(422, f"{name}: expected a JSON {'object' if kind is dict else 'array'}")
    if problem := json_problem(value):
        raise ApiError(422, f"{name}: {problem}")
    return value


def _uuid(name: str, raw: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise ApiError(422, f"{name}: not a valid UUID: {str(raw)[:80]!r}") from None


def _chunks(raw: str) -> list[ChunkInput]:
    items = _json_field("chunks", raw, list)
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
            not isinstance(vector, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)
        ):
            raise ApiError(422, f"chunks[{i}].embedding: expected a list of numbers")
        out.append(ChunkInput(text=text, metadata=meta, embedding=vector))
    return out


async def _check_collections(services: ServicesDep, principal: Principal, ids: list[uuid.UUID]) -> None:
    """Documents may be placed only in collections the caller belongs to (any, for a superuser)."""
    if not ids:
        return
    async with services.db.pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM collections WHERE id = ANY(%s)", (ids,))
        found = {r[0] for r in await cur.fetchall()}
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise ApiError(404, f"collection_ids: no such collection {', '.join(missing)}")
    if not principal.is_superuser:
        denied = [str(i) for i in ids if i not in principal.collection_ids]
        if denied:
            raise ApiError(403, f"collection_ids: you are not a member of collection {', '.join(denied)}")


@router.post("", response_model=Results[IngestionOut], status_code=201)
async def create_document(
    principal: PrincipalDep,
    services: ServicesDep,
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
    given = [name for name, v in (("file", file), ("raw_text", raw_text), ("chunks", chunks)) if v is not None]
    if len(given) != 1:
        raise ApiError(422, f"exactly one of 'file', 'raw_text' or 'chunks' must be given (got {len(given)})")
    meta = _json_field("metadata", metadata, dict) or {}
    coll_ids = [_uuid(f"collection_ids[{i}]", c) for i, c in enumerate(_json_field("collection_ids", collection_ids, list) or [])]
    doc_id = _uuid("id", id) if id else uuid.uuid4()
    cfg = services.settings.ingestion

    title: str | None = None
    if file is not None:
        try:
            doc_type = detect_type(file.filename, file.content_type)
        except UnsupportedDocumentType as e:
            raise ApiError(415, str(e)) from None
        data = await file.read(cfg.max_file_size_bytes + 1)
        if len(data) > cfg.max_file_size_bytes:
            raise ApiError(413, f"file: larger than the limit of {cfg.max_file_size_bytes} bytes")
        if not data:
            raise ApiError(422, "file: the file is empty")
        source: FileSource | TextSource | ChunksSource = FileSource(data, file.filename, file.content_type)
        title = file.filename
    elif raw_text is not None:
        if not raw_text.strip():
            raise ApiError(422, "raw_text: expected non-empty text")
        if problem := text_problem(raw_text):
            raise ApiError(422, f"raw_text: {problem}")
        if len(raw_text.encode()) > cfg.max_file_size_bytes:
            raise ApiError(413, f"raw_text: larger than the limit of {cfg.max_file_size_bytes} bytes")
        doc_type, source = "txt", TextSource(raw_text)
    else:
        assert chunks is not None
        doc_type, source = "txt", ChunksSource(_chunks(chunks))

    await _check_collections(services, principal, coll_ids)
    upload = Upload(
        owner_id=principal.id,
        document_id=doc_id,
        source=source,
        document_type=doc_type,
        title=title,
        metadata=meta,
        collection_ids=tuple(coll_ids),
    )
    ingestor = services.ingestor
    try:
        ingestor.validate(upload)
    except IngestionError as e:
        raise ApiError(422, str(e)) from None
    try:
        await ingestor.claim(upload)
    except store.DuplicateDocument as e:
        raise ApiError(409, str(e), document_id=str(e.existing_id)) from None

    if upload.size_in_bytes > cfg.background_threshold_bytes and isinstance(source, FileSource):
        ingestor.process_in_background(upload)
        out = IngestionOut(message="Ingestion task queued successfully.", task_id=doc_id, document_id=doc_id)
        return JSONResponse(status_code=202, content=Results(results=out).model_dump(mode="json"))
    try:
        await ingestor.process(upload)
    except IngestionError as e:
        raise ApiError(422, str(e), document_id=str(doc_id)) from None
    return Results(results=IngestionOut(message="Document created and ingested successfully.", document_id=doc_id))


def _document_out(row: dict[str, Any]) -> DocumentOut:
    return DocumentOut(**{k: v for k, v in row.items() if k != "content_hash"})


async def _visible_document(services: ServicesDep, principal: Principal, document_id: uuid.UUID) -> dict[str, Any]:
    """The document if the caller may read it; 404 otherwise, so existence does not leak."""
    async with services.db.pool.connection() as conn:
        row = await store.get_document(conn, document_id)
    if row is None or not (
        principal.is_superuser
        or row["owner_id"] == principal.id
        or set(row["collection_ids"]) & set(principal.collection_ids)
    ):
        raise ApiError(404, f"document {document_id} not found")
    return row


@router.get("", response_model=PaginatedResults[list[DocumentOut]])
async def list_documents(
    principal: PrincipalDep,
    services: ServicesDep,
    ids: Annotated[list[uuid.UUID] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PaginatedResults[list[DocumentOut]]:
    scope_sql, scope_params = Scope.for_principal(principal).clause("d")
    async with services.db.pool.connection() as conn:
        rows, total = await store.list_documents(conn, scope_sql, scope_params, ids=ids, limit=limit, offset=offset)
    return PaginatedResults(results=[_document_out(r) for r in rows], total_entries=total)


@router.get("/{document_id}", response_model=Results[DocumentOut])
async def get_document(document_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep) -> Results[DocumentOut]:
    return Results(results=_document_out(await _visible_document(services, principal, document_id)))


@router.delete("/{document_id}", response_model=Results[GenericBoolean])
async def delete_document(
    document_id: uuid.UUID, principal: PrincipalDep, services: ServicesDep
) -> Results[GenericBoolean]:
    row = await _visible_document(services, principal, document_id)
    if row["owner_id"] != principal.id and not principal.is_superuser:
        raise ApiError(403, "only the document's owner or a superuser may delete it")
    async with services.db.pool.connection() as conn:
        await store.delete_document(conn, row["owner_id"], document_id)
    return Results(results=GenericBoolean(success=True))


@router.get("/{document_id}/chunks", response_model=PaginatedResults[list[ChunkOut]])
async def list_document_chunks(
    document_id: uuid.UUID,
    principal: PrincipalDep,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include_vectors: bool = False,
) -> PaginatedResults[list[ChunkOut]]:
    row = await _visible_document(services, principal, document_id)
    async with services.db.pool.connection() as conn:
        rows, total = await store.list_chunks(
            conn, row["owner_id"], document_id, limit=limit, offset=offset, include_vectors=include_vectors
        )
    out = []
    for r in rows:
        vec = r.pop("embedding", None)
        r.pop("chunk_order", None)
        out.append(ChunkOut(**r, vector=vec.to_list() if vec is not None else None))
    return PaginatedResults(results=out, total_entries=total)
