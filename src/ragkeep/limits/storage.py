"""Storage quotas: what a user may store and upload, and the checks that keep them exact.

A limit is the user's ``limits_overrides`` value (set by a superuser, R2R's keys) or else the
configured default (``[limits]``). Count limits are checked inside the transaction that writes,
after locking the owner's ``owner_stats`` row: every writer of documents, chunks or collections
of one owner takes that lock first, so two uploads at the limit cannot both see room for one
more, whichever replica serves them. (The store's updates that keep ``owner_stats`` exact, in the
same transactions as the writes, lock that row until commit anyway; checking under the same lock
costs no extra waiting.)

The configured defaults are passed in (``config``) by whoever writes: the upload route puts them
on the ingestion's ``Upload``, the collection route passes them to ``create_collection``; code
that ingests without them (benchmarks) is unlimited.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from ragkeep.config import LimitsConfig
from ragkeep.errors import QuotaExceeded, UploadTooLarge

#: R2R's override keys for the storage limits (``limits_overrides``).
STORAGE_KEYS = {"documents": "max_documents", "chunks": "max_chunks", "collections": "max_collections"}


def override(overrides: Mapping[str, Any] | None, key: str) -> int | None:
    """An integer override, or None when absent or null (R2R: null means "the default")."""
    value = (overrides or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class StorageLimits:
    """The storage limits that apply to one user (overrides, else the configured defaults)."""

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
    config: LimitsConfig,
    overrides: Mapping[str, Any] | None,
    file_type: str | None,
    ceiling: int,
    size: int,
    field: str,
) -> None:
    limit, name = upload_limit(config, overrides, file_type, ceiling)
    if size > limit:
        raise UploadTooLarge(
            name, limit, size,
            f"{field}: the upload is {size:,} bytes and your limit is {limit:,} bytes ({name})",
        )


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
    if row is None:  # the INSERT above made it, and it key-share locks the users row: a bug if so
        raise RuntimeError(f"owner_stats of {owner_id} is missing after it was inserted")
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
    """QuotaExceeded unless the owner may have ``adding`` more documents (every row counts, failed ones too)."""
    if exempt(config, state):
        return
    limit = storage_limits(config, state.overrides).documents
    if state.documents + adding > limit:
        raise QuotaExceeded(
            "max_documents", limit, state.documents,
            f"max_documents: you have {state.documents:,} documents and your limit is {limit:,}; "
            "delete documents (failed ones count too) or ask a superuser to raise max_documents",
        )


def check_chunks(config: LimitsConfig, state: OwnerState, adding: int) -> None:
    """QuotaExceeded unless all ``adding`` chunks fit: a document that would pass the limit is refused whole."""
    if exempt(config, state):
        return
    limit = storage_limits(config, state.overrides).chunks
    if state.chunks + adding > limit:
        raise QuotaExceeded(
            "max_chunks", limit, state.chunks,
            f"max_chunks: this document has {adding:,} chunks, you store {state.chunks:,} and your limit "
            f"is {limit:,} chunks; nothing of it was stored. Delete documents or ask a superuser to raise max_chunks",
        )


async def check_collections(conn: psycopg.AsyncConnection, config: LimitsConfig, state: OwnerState) -> None:
    """QuotaExceeded unless the owner may create one more collection; call with the owner locked."""
    if exempt(config, state):
        return
    cur = await conn.execute("SELECT count(*) FROM collections WHERE owner_id = %s", (state.owner_id,))
    row = await cur.fetchone()
    owned = int(row[0]) if row else 0
    limit = storage_limits(config, state.overrides).collections
    if owned + 1 > limit:
        raise QuotaExceeded(
            "max_collections", limit, owned,
            f"max_collections: you own {owned:,} collections and your limit is {limit:,}; "
            "delete one or ask a superuser to raise max_collections",
        )
