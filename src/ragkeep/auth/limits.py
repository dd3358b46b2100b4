"""Per-user quotas: what a user may store and upload, and the checks that keep them exact.

A limit is the user's ``limits_overrides`` value (set by a superuser, R2R's keys) or else the
configured default (``[limits]``). Count limits are checked inside the transaction that writes,
after locking the owner's ``owner_stats`` row: every writer of documents, chunks or collections
of one owner takes that lock first, so two uploads at the limit cannot both see room for one
more, whichever replica serves them. (The statement triggers that keep ``owner_stats`` exact
already lock that row until commit; checking under the same lock costs no extra waiting.)

Ingestion code below the API learns the configured defaults from :func:`applying` (a context
variable the upload route sets), so code that ingests outside the API (benchmarks) is unlimited.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import psycopg

from ragkeep.config import LimitsConfig

#: R2R's override keys for the storage limits (``limits_overrides``).
STORAGE_KEYS = {"documents": "max_documents", "chunks": "max_chunks", "collections": "max_collections"}


class LimitExceeded(Exception):
    """A request refused by a limit; the API answers ``status_code`` with this message.

    ``limit_name`` is the key that set the limit (``max_documents``, ``global_per_min`` ...),
    ``used`` what the user had when refused, ``retry_after`` seconds for rate limits."""

    def __init__(
        self, status_code: int, limit_name: str, limit: int, used: int, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.message = message
        self.retry_after = retry_after


def override(overrides: Mapping[str, Any] | None, key: str) -> int | None:
    """An integer override, or None when absent or null (R2R: null means "the default")."""
    value = (overrides or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class StorageLimits:
    documents: int
    chunks: int
    collections: int


def storage_limits(config: LimitsConfig, overrides: Mapping[str, Any] | None) -> StorageLimits:
    def pick(kind: str) -> int:
        given = override(overrides, STORAGE_KEYS[kind])
        return given if given is not None else getattr(config, STORAGE_KEYS[kind])

    return StorageLimits(documents=pick("documents"), chunks=pick("chunks"), collections=pick("collections"))


def upload_limit(
    config: LimitsConfig, overrides: Mapping[str, Any] | None, file_type: str | None, ceiling: int
) -> tuple[int, str]:
    """Bytes one upload of ``file_type`` may have, and the key that set it.

    R2R's order: the user's ``max_file_size_by_type``, then ``max_file_size``, then the
    configured per-type size, then ``max_upload_size``. ``ceiling`` (``ingestion.max_file_size_bytes``,
    what the server reads at most) caps them all."""
    ext = (file_type or "").lower().lstrip(".")
    by_type = (overrides or {}).get("max_file_size_by_type")
    candidates: list[tuple[int | None, str]] = [
        (override(by_type, ext) if isinstance(by_type, dict) and ext else None, f"max_file_size_by_type.{ext}"),
        (override(overrides, "max_file_size"), "max_file_size"),
        (config.max_upload_size_by_type.get(ext) if ext else None, f"max_upload_size_by_type.{ext}"),
        (config.max_upload_size, "max_upload_size"),
    ]
    for value, name in candidates:
        if value is not None:
            return (value, name) if value <= ceiling else (ceiling, "ingestion.max_file_size_bytes")
    return ceiling, "ingestion.max_file_size_bytes"


def check_upload_size(
    config: LimitsConfig, overrides: Mapping[str, Any] | None, file_type: str | None, ceiling: int, size: int, field: str
) -> None:
    limit, name = upload_limit(config, overrides, file_type, ceiling)
    if size > limit:
        raise LimitExceeded(
            413, name, limit, size,
            f"{field}: the upload is {size:,} bytes and your limit is {limit:,} bytes ({name})",
        )


# -- the configured defaults, for ingestion code below the API --------------------------------

_active: ContextVar[LimitsConfig | None] = ContextVar("ragkeep_limits", default=None)


@contextmanager
def applying(config: LimitsConfig) -> Iterator[None]:
    """Apply ``config``'s limits to ingestion started in this block, including background tasks
    created in it (asyncio copies the context into a new task)."""
    token = _active.set(config)
    try:
        yield
    finally:
        _active.reset(token)


def active() -> LimitsConfig | None:
    return _active.get()


# -- the owner's lock and the count checks ------------------------------------------------------


@dataclass(frozen=True)
class OwnerState:
    """What an owner stores, read under the owner's lock, and the limits that apply to them."""

    owner_id: uuid.UUID
    documents: int
    chunks: int
    is_superuser: bool
    overrides: dict[str, Any]


_LOCK_OWNER_SQL = """
SELECT s.document_count, s.chunk_count, u.is_superuser, coalesce(u.limits_overrides, '{}')
FROM owner_stats s JOIN users u ON u.id = s.owner_id
WHERE s.owner_id = %s
FOR NO KEY UPDATE OF s
"""


async def lock_owner(conn: psycopg.AsyncConnection, owner_id: uuid.UUID) -> OwnerState:
    """Lock the owner's ``owner_stats`` row until the end of the caller's transaction.

    The row is made first if the owner has none yet, so even a user's very first uploads
    serialise on it (a concurrent INSERT of the same row waits for the first one's commit). One
    statement when the row exists, which is every upload but a user's first."""
    row = await (await conn.execute(_LOCK_OWNER_SQL, (owner_id,))).fetchone()
    if row is None:
        await conn.execute(
            "INSERT INTO owner_stats (owner_id) VALUES (%s) ON CONFLICT (owner_id) DO NOTHING", (owner_id,)
        )
        row = await (await conn.execute(_LOCK_OWNER_SQL, (owner_id,))).fetchone()
    assert row is not None  # the INSERT above made it, and the users row is key-share locked by it
    overrides = row[3] if isinstance(row[3], dict) else {}
    return OwnerState(owner_id, int(row[0]), int(row[1]), bool(row[2]), overrides)


async def read_owner(conn: psycopg.AsyncConnection, owner_id: uuid.UUID) -> OwnerState:
    """The owner's counts and overrides without locking: for early refusals and reports only."""
    cur = await conn.execute(
        """SELECT coalesce(s.document_count, 0), coalesce(s.chunk_count, 0), u.is_superuser,
                  coalesce(u.limits_overrides, '{}')
           FROM users u LEFT JOIN owner_stats s ON s.owner_id = u.id
           WHERE u.id = %s""",
        (owner_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return OwnerState(owner_id, 0, 0, False, {})
    return OwnerState(owner_id, int(row[0]), int(row[1]), bool(row[2]), row[3] if isinstance(row[3], dict) else {})


def exempt(config: LimitsConfig, state: OwnerState) -> bool:
    """Superusers are not limited unless ``superusers_exempt = false``."""
    return state.is_superuser and config.superusers_exempt


def check_documents(config: LimitsConfig, state: OwnerState, adding: int = 1) -> None:
    """403 unless the owner may have ``adding`` more documents (every row counts, failed ones too)."""
    if exempt(config, state):
        return
    limit = storage_limits(config, state.overrides).documents
    if state.documents + adding > limit:
        raise LimitExceeded(
            403, "max_documents", limit, state.documents,
            f"max_documents: you have {state.documents:,} documents and your limit is {limit:,}; "
            "delete documents (failed ones count too) or ask a superuser to raise max_documents",
        )


def check_chunks(config: LimitsConfig, state: OwnerState, adding: int) -> None:
    """403 unless all ``adding`` chunks fit: a document that would pass the limit is refused whole."""
    if exempt(config, state):
        return
    limit = storage_limits(config, state.overrides).chunks
    if state.chunks + adding > limit:
        raise LimitExceeded(
            403, "max_chunks", limit, state.chunks,
            f"max_chunks: this document has {adding:,} chunks, you store {state.chunks:,} and your limit "
            f"is {limit:,} chunks; nothing of it was stored. Delete documents or ask a superuser to raise max_chunks",
        )


async def check_collections(conn: psycopg.AsyncConnection, config: LimitsConfig, state: OwnerState) -> None:
    """403 unless the owner may create one more collection; call with the owner locked."""
    if exempt(config, state):
        return
    cur = await conn.execute("SELECT count(*) FROM collections WHERE owner_id = %s", (state.owner_id,))
    row = await cur.fetchone()
    owned = int(row[0]) if row else 0
    limit = storage_limits(config, state.overrides).collections
    if owned + 1 > limit:
        raise LimitExceeded(
            403, "max_collections", limit, owned,
            f"max_collections: you own {owned:,} collections and your limit is {limit:,}; "
            "delete one or ask a superuser to raise max_collections",
        )
