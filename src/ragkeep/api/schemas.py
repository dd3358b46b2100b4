"""Request and response models at the API edge, shaped as R2R's v3 API."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ragkeep.api.deps import BIGINT_MAX
from ragkeep.auth.passwords import MIN_PASSWORD_LENGTH
from ragkeep.auth.users import Principal, User, UserUsage
from ragkeep.limits import storage
from ragkeep.search.settings import SearchSettings
from ragkeep.text import json_problem, text_problem

T = TypeVar("T")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Results(BaseModel, Generic[T]):
    results: T


class PaginatedResults(BaseModel, Generic[T]):
    results: T
    total_entries: int


class GenericMessage(BaseModel):
    message: str


class GenericBoolean(BaseModel):
    success: bool


# -- users ------------------------------------------------------------------------------------


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=320)
    password: str = Field(min_length=8, max_length=1024)
    name: str | None = Field(None, max_length=200)
    bio: str | None = Field(None, max_length=5000)
    profile_picture: str | None = Field(None, max_length=2000)
    is_verified: bool | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError("not a valid email address")
        return v.strip()

    @field_validator("password", "name", "bio", "profile_picture")
    @classmethod
    def _storable(cls, v: str | None) -> str | None:
        if v is not None and (problem := text_problem(v)):
            raise ValueError(problem)
        return v


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime
    is_verified: bool
    collection_ids: list[uuid.UUID] = []
    graph_ids: list[uuid.UUID] = []
    document_ids: list[uuid.UUID] = []
    limits_overrides: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    bio: str | None = None
    profile_picture: str | None = None
    total_size_in_bytes: int | None = None
    num_files: int | None = None
    account_type: str = "password"


class Token(BaseModel):
    token: str
    token_type: Literal["access", "refresh"]


class TokenPairOut(BaseModel):
    access_token: Token
    refresh_token: Token


class ApiKeyCreate(BaseModel):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)


class ApiKeyOut(BaseModel):
    public_key: str
    api_key: str
    key_id: str
    name: str | None = None


class ApiKeyInfo(BaseModel):
    public_key: str
    key_id: str
    name: str | None = None
    updated_at: datetime
    description: str | None = None


# -- collections ------------------------------------------------------------------------------


class CollectionOut(BaseModel):
    """R2R's ``CollectionResponse``; ragkeep builds no graphs, so both graph statuses stay pending."""

    id: uuid.UUID
    owner_id: uuid.UUID | None
    name: str
    description: str | None
    graph_cluster_status: str = "pending"
    graph_sync_status: str = "pending"
    created_at: datetime
    updated_at: datetime
    user_count: int
    document_count: int


# -- documents --------------------------------------------------------------------------------


class IngestionOut(BaseModel):
    message: str
    task_id: uuid.UUID | None = None
    document_id: uuid.UUID


class DocumentOut(BaseModel):
    id: uuid.UUID
    collection_ids: list[uuid.UUID]
    owner_id: uuid.UUID
    document_type: str
    metadata: dict[str, Any]
    title: str | None = None
    version: str = "v0"
    size_in_bytes: int | None = None
    ingestion_status: str
    extraction_status: str = "pending"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ingestion_attempt_number: int | None = None
    summary: str | None = None
    summary_embedding: list[float] | None = None
    total_tokens: int | None = None
    chunk_count: int | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DocumentOut:
        """A documents row as the API shows it (the content hash stays internal)."""
        return cls(**{k: v for k, v in row.items() if k != "content_hash"})


class ChunkOut(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID
    owner_id: uuid.UUID
    collection_ids: list[uuid.UUID]
    text: str
    metadata: dict[str, Any]
    vector: list[float] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ChunkOut:
        """A chunks row as the API shows it (the vector only when it was read)."""
        vec = row.get("embedding")
        return cls(
            id=row["id"],
            document_id=row["document_id"],
            owner_id=row["owner_id"],
            collection_ids=row["collection_ids"],
            text=row["text"],
            metadata=row["metadata"],
            vector=vec.to_list() if vec is not None else None,
        )


# -- retrieval --------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, max_length=10_000)
    search_mode: Literal["basic", "advanced", "custom"] = "custom"
    search_settings: SearchSettings = Field(default_factory=SearchSettings)

    @field_validator("search_settings", mode="before")
    @classmethod
    def _null_means_defaults(cls, v: object) -> object:
        return {} if v is None else v  # R2R's SDK sends null when no settings are given

    @field_validator("query")
    @classmethod
    def _storable(cls, v: str) -> str:
        if problem := text_problem(v):
            raise ValueError(problem)
        return v

    def settings(self) -> SearchSettings:
        """The settings the search runs with, after R2R's ``search_mode`` rule."""
        return SearchSettings.for_mode(self.search_mode, self.search_settings)


class ChunkSearchResult(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID
    owner_id: uuid.UUID | None
    collection_ids: list[uuid.UUID]
    score: float | None = None
    text: str
    metadata: dict[str, Any]


class AggregateSearchResult(BaseModel):
    chunk_search_results: list[ChunkSearchResult] | None = None
    graph_search_results: list[Any] | None = None
    web_search_results: list[Any] | None = None
    document_search_results: list[Any] | None = None


# -- users: profiles, passwords, limits ----------------------------------------------------


#: ``limits_overrides`` keys (R2R's) holding a non-negative integer, or null for "the default".
_INTEGER_OVERRIDES = frozenset(storage.STORAGE_KEYS.values()) | {
    "global_per_min", "route_per_min", "monthly_limit", "max_file_size",
}


#: Rate limits are at least 1 (0 would lock the user out; deactivate them instead).
_RATE_OVERRIDES = frozenset({"global_per_min", "route_per_min", "monthly_limit"})


def _checked_text(v: str | None) -> str | None:
    if v is not None and (problem := text_problem(v)):
        raise ValueError(problem)
    return v


class UserUpdate(BaseModel):
    """R2R's update body; absent or null fields are left as they are."""

    model_config = ConfigDict(extra="ignore")

    email: str | None = Field(None, max_length=320)
    is_superuser: bool | None = None
    name: str | None = Field(None, max_length=200)
    bio: str | None = Field(None, max_length=5000)
    profile_picture: str | None = Field(None, max_length=2000)
    limits_overrides: dict[str, Any] | None = None
    #: Merged Stripe-style: a string sets a key, "" or null removes it, {} removes all.
    metadata: dict[str, str | None] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.match(v):
            raise ValueError("not a valid email address")
        return v.strip() if v is not None else v

    @field_validator("name", "bio", "profile_picture")
    @classmethod
    def _storable(cls, v: str | None) -> str | None:
        return _checked_text(v)

    @field_validator("limits_overrides")
    @classmethod
    def _limits(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        if problem := json_problem(v):
            raise ValueError(problem)
        for key in _INTEGER_OVERRIDES & set(v):
            _check_limit(key, v[key], minimum=1 if key in _RATE_OVERRIDES else 0)
        by_type = v.get("max_file_size_by_type")
        if by_type is not None:
            if not isinstance(by_type, dict):
                raise ValueError("max_file_size_by_type must be an object of file type to bytes")
            for ext, value in by_type.items():
                _check_limit(f"max_file_size_by_type.{ext}", value, minimum=0)
        routes = v.get("route_overrides")
        if routes is not None:
            if not isinstance(routes, dict):
                raise ValueError("route_overrides must be an object of route to limits")
            for route, settings in routes.items():
                if not route.startswith("/v3/"):
                    raise ValueError(f"route_overrides: route templates start with /v3/: {route[:80]!r}")
                if not isinstance(settings, dict):
                    raise ValueError(f"route_overrides.{route} must be an object")
                unknown = set(settings) - {"route_per_min", "monthly_limit"}
                if unknown:
                    raise ValueError(
                        f"route_overrides.{route}: only route_per_min and monthly_limit are per route "
                        f"(not {', '.join(sorted(unknown))}); global_per_min is set once, at the top level"
                    )
                for key, value in settings.items():
                    _check_limit(f"route_overrides.{route}.{key}", value, minimum=1)
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str | None] | None) -> dict[str, str | None] | None:
        if v is None:
            return v
        if len(v) > 500:
            raise ValueError("at most 500 keys")
        for key, value in v.items():
            if not key or len(key) > 200:
                raise ValueError("keys must be 1 to 200 characters")
            if len(value or "") > 5000:
                raise ValueError(f"the value of {key!r} is longer than 5000 characters")
        if problem := json_problem(v):
            raise ValueError(problem)
        return v


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    #: Not R2R's: false ends the bearer token this request carries too (every other one always ends).
    keep_current_session: bool = True

    @field_validator("new_password")
    @classmethod
    def _storable(cls, v: str) -> str:
        return _checked_text(v) or v


class UserDelete(BaseModel):
    model_config = ConfigDict(extra="ignore")

    password: str | None = Field(None, max_length=1024)
    #: R2R keeps a deleted user's chunks unless this is true; ragkeep always deletes them.
    delete_vector_data: bool | None = None


def _check_limit(key: str, value: Any, *, minimum: int) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= BIGINT_MAX
    ):
        raise ValueError(f"{key} must be an integer from {minimum} to {BIGINT_MAX}, or null for the default")


class UsageLimit(BaseModel):
    used: int
    limit: int
    remaining: int


class StorageLimitsOut(BaseModel):
    chunks: UsageLimit
    documents: UsageLimit
    collections: UsageLimit


class RateLimitsOut(BaseModel):
    global_per_min: int
    route_per_min: int | None
    monthly_limit: int


class RouteUsage(BaseModel):
    route_per_min: UsageLimit
    monthly_limit: UsageLimit


class RateUsage(BaseModel):
    global_per_min: UsageLimit
    monthly_limit: UsageLimit
    routes: dict[str, RouteUsage] = {}


class LimitsOut(BaseModel):
    """R2R's ``LimitsResponse`` (its client requires every ``limit`` to be an integer)."""

    storage_limits: StorageLimitsOut
    system_defaults: RateLimitsOut
    user_overrides: dict[str, Any]
    effective_limits: RateLimitsOut
    usage: RateUsage


# -- system: maintenance, status, stats ----------------------------------------------------


_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RunOptionsOut(BaseModel):
    analyze: bool
    full: bool
    reindex: bool


class MaintenanceRunOut(BaseModel):
    """One VACUUM or REINDEX run; ``items`` has the figures per table (or per index)."""

    id: int
    task: Literal["vacuum", "reindex"]
    trigger: Literal["schedule", "manual"]
    status: Literal["queued", "running", "succeeded", "failed", "skipped"]
    scheduled_for: datetime | None
    parent_id: int | None
    options: RunOptionsOut
    tables: list[str]
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    dead_tuples_before: int | None
    dead_tuples_after: int | None
    bytes_before: int | None
    bytes_after: int | None
    #: bytes_before - bytes_after; may be slightly negative for a plain VACUUM (docs/maintenance.md).
    bytes_reclaimed: int | None
    items: list[dict[str, Any]]
    reindex_advice: dict[str, Any] | None
    error: str | None
    replica: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MaintenanceRunOut:
        started, finished = row["started_at"], row["finished_at"]
        before, after = row["bytes_before"], row["bytes_after"]
        return cls(
            **{k: row[k] for k in ("id", "task", "trigger", "status", "scheduled_for", "parent_id", "tables")},
            options=RunOptionsOut(analyze=row["vacuum_analyze"], full=row["vacuum_full"], reindex=row["reindex_first"]),
            requested_at=row["requested_at"],
            started_at=started,
            finished_at=finished,
            duration_seconds=round((finished - started).total_seconds(), 3) if started and finished else None,
            dead_tuples_before=row["dead_tuples_before"],
            dead_tuples_after=row["dead_tuples_after"],
            bytes_before=before,
            bytes_after=after,
            bytes_reclaimed=before - after if before is not None and after is not None else None,
            items=row["items"],
            reindex_advice=row["reindex_advice"],
            error=row["error"],
            replica=row["replica"],
        )


class VacuumIn(BaseModel):
    """A manual run. FULL must be asked for with a JSON ``true``: it locks each table exclusively."""

    model_config = ConfigDict(extra="forbid")

    #: None: the configured ``vacuum_analyze``.
    analyze: StrictBool | None = None
    full: StrictBool = False
    #: None: every table of ragkeep's schema.
    tables: list[str] | None = Field(None, min_length=1, max_length=1000)
    #: REINDEX INDEX CONCURRENTLY the chunks' vector indexes first (needs chunks among the tables).
    reindex: StrictBool = False

    @field_validator("tables")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        bad = [v for v in value if not _TABLE.match(v)]
        if bad:
            raise ValueError(f"not table names: {', '.join(repr(b) for b in bad[:5])}")
        return list(dict.fromkeys(value))


class DatabaseOut(BaseModel):
    kind: Literal["embedded", "external"]
    server_version: str | None
    pgvector_version: str | None


class EmbeddingOut(BaseModel):
    provider: str
    model: str
    dimension: int


class VectorIndexesOut(BaseModel):
    total: int
    valid: int
    bytes: int


class MaintenanceStatusOut(BaseModel):
    vacuum_schedule: str | None
    vacuum_analyze: bool
    vacuum_full: bool
    auto_reindex: bool
    #: This process's scheduler (every replica runs one; each tick runs on one of them).
    scheduler_running: bool
    ticks_claimed_here: int
    ticks_claimed_elsewhere: int
    last_run: MaintenanceRunOut | None
    next_run: datetime | None
    reindex_advice: dict[str, Any]


class StatusOut(BaseModel):
    version: str
    replica: str
    started_at: datetime
    uptime_seconds: float
    database: DatabaseOut
    embedding: EmbeddingOut
    vector_indexes: VectorIndexesOut
    maintenance: MaintenanceStatusOut


class LatencyOut(BaseModel):
    #: Upper bounds of the histogram buckets holding the quantile (or the slowest seen, if lower).
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    max_ms: float | None


class SearchSummaryOut(LatencyOut):
    searches: int
    mean_db_ms: float | None
    #: Vectors in scope per semantic/hybrid search, as the planner saw them.
    vectors_per_query: float | None
    fallbacks: int
    short_results: int


class PlanStatsOut(SearchSummaryOut):
    kind: str
    strategy: str


class TopUserOut(SearchSummaryOut):
    user_id: uuid.UUID
    email: str | None
    documents: int
    chunks: int


class SearchStatsOut(SearchSummaryOut):
    users: int
    cross_user: int
    by_plan: list[PlanStatsOut]
    #: Searches per UTC hour of day (hourly rows of the window only).
    by_hour_of_day: list[int]
    peak_hour: int | None
    top_users: list[TopUserOut] | None = None


class RouteStatsOut(LatencyOut):
    method: str
    route: str
    requests: int
    errors: int
    server_errors: int
    peak_hour: int | None


class RequestStatsOut(LatencyOut):
    requests: int
    errors: int
    server_errors: int
    by_status_class: dict[str, int]
    by_hour_of_day: list[int]
    peak_hour: int | None
    routes: list[RouteStatsOut]


class HourUsersOut(BaseModel):
    hour: datetime
    users: int


class DayUsersOut(BaseModel):
    day: datetime
    users: int


class ActiveUsersOut(BaseModel):
    current_hour: int
    current_day: int
    window: int
    per_hour: list[HourUsersOut]
    per_day: list[DayUsersOut]


class BlocksOut(BaseModel):
    blks_hit: int
    blks_read: int
    hit_ratio: float | None


class DatabaseCacheOut(BlocksOut):
    stats_reset: datetime | None


class ChunksCacheOut(BaseModel):
    heap: BlocksOut
    indexes: BlocksOut
    toast: BlocksOut
    toast_indexes: BlocksOut


class IndexCacheOut(BlocksOut):
    index: str
    method: str
    scans: int
    #: Index entries the scans returned: tuples visited, as the index reports them.
    tuples_read: int
    tuples_fetched: int
    tuples_per_scan: float | None
    bytes: int


class CacheOut(BaseModel):
    database: DatabaseCacheOut
    chunks: ChunksCacheOut
    chunk_indexes: list[IndexCacheOut]


class InstanceOut(BaseModel):
    replica: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    rss_bytes: int
    cpu_seconds: float
    cpu_percent: float
    threads: int
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    #: The replica that answered this request.
    this: bool


class IndexSizeOut(BaseModel):
    index: str
    bytes: int


class TableSizeOut(BaseModel):
    table: str
    table_bytes: int
    index_bytes: int
    total_bytes: int
    est_rows: int | None
    #: total_bytes now minus at the first snapshot of the window (None: no snapshot in it).
    growth_bytes: int | None
    indexes: list[IndexSizeOut]


class SnapshotOut(BaseModel):
    taken_at: datetime
    total_bytes: int
    table_bytes: int
    index_bytes: int


class StorageOut(BaseModel):
    total_bytes: int
    tables: list[TableSizeOut]
    snapshots: list[SnapshotOut]
    growth_bytes_per_day: int | None


class UserContentOut(BaseModel):
    user_id: uuid.UUID
    email: str | None
    documents: int
    chunks: int


class ContentOut(BaseModel):
    users: int
    documents: int
    chunks: int
    users_with_documents: int
    per_user: list[UserContentOut]


class SystemStatsOut(BaseModel):
    generated_at: datetime
    window_hours: int
    since: datetime
    replica: str
    searches: SearchStatsOut
    requests: RequestStatsOut
    active_users: ActiveUsersOut
    cache: CacheOut
    instances: list[InstanceOut]
    storage: StorageOut
    content: ContentOut


class UserRequestsOut(BaseModel):
    requests: int
    errors: int
    active_hours: int


class UserDayOut(BaseModel):
    day: datetime
    searches: int
    requests: int


class UserStatsOut(BaseModel):
    user_id: uuid.UUID
    email: str
    documents: int
    chunks: int
    generated_at: datetime
    window_hours: int
    since: datetime
    searches: SearchStatsOut
    requests: UserRequestsOut
    per_day: list[UserDayOut]


# -- a user as the API shows them ----------------------------------------------------------


def user_out(user: User, usage: UserUsage | None = None) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        is_active=user.is_active,
        is_superuser=user.is_superuser,
        created_at=user.created_at,
        updated_at=user.updated_at,
        is_verified=user.is_verified,
        collection_ids=user.collection_ids,
        limits_overrides=user.limits_overrides,
        metadata=user.metadata,
        name=user.name,
        bio=user.bio,
        profile_picture=user.profile_picture,
        num_files=usage.num_files if usage else None,
        total_size_in_bytes=usage.total_size_in_bytes if usage else None,
    )


def visible_user_out(viewer: Principal, user: User) -> UserOut:
    """A user as ``viewer`` may see them: in full for themselves or a superuser; otherwise (another
    member of a shared collection) without their settings, and only with the collections both share."""
    if viewer.is_superuser or viewer.id == user.id:
        return user_out(user)
    shared = [c for c in user.collection_ids if c in viewer.collection_ids]
    out = user_out(user)
    return out.model_copy(update={"collection_ids": shared, "limits_overrides": None, "metadata": None})
