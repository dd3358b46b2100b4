"""``/v3/system``: the maintenance history, manual VACUUM, the server's status and stats (superusers;
a user may read their own stats).

A manual VACUUM answers 202 with the run as recorded (``queued``): VACUUM of a large table takes
minutes, longer than a request should. ``GET /v3/system/maintenance/{id}`` follows it.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ragkeep.api.deps import BIGINT_MAX, DbDep, Limit, Offset, PrincipalDep, ServicesDep, SuperuserDep
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import PaginatedResults, Results
from ragkeep.api.services import Services
from ragkeep.maintenance import Maintenance, RunOptions, UnknownTables
from ragkeep.maintenance import history
from ragkeep.maintenance.status import system_status
from ragkeep.monitoring import stats

router = APIRouter(prefix="/v3/system", tags=["system"], route_class=GuardedRoute)

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


def _maintenance(services: Services) -> Maintenance:
    maintenance: Maintenance | None = services.maintenance
    if maintenance is None:
        raise ApiError(503, "maintenance is not running in this server process")
    return maintenance


@router.get("/maintenance", response_model=PaginatedResults[list[MaintenanceRunOut]])
async def list_maintenance_runs(
    _: SuperuserDep,
    db: DbDep,
    offset: Offset = 0,
    limit: Limit = 100,
    task: Annotated[Literal["vacuum", "reindex"] | None, Query(description="Only this task.")] = None,
    trigger: Annotated[Literal["schedule", "manual"] | None, Query(description="Only this trigger.")] = None,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "skipped"] | None, Query(description="Only this status.")
    ] = None,
    parent_id: Annotated[
        int | None, Query(ge=1, le=BIGINT_MAX, description="The reindex runs done for this vacuum run.")
    ] = None,
) -> PaginatedResults[list[MaintenanceRunOut]]:
    """The maintenance history, newest first."""
    async with db.connection() as conn:
        rows, total = await history.list_runs(
            conn, offset=offset, limit=limit, task=task, trigger=trigger, status=status, parent_id=parent_id
        )
    return PaginatedResults(results=[MaintenanceRunOut.from_row(r) for r in rows], total_entries=total)


@router.get("/maintenance/{run_id}", response_model=Results[MaintenanceRunOut])
async def get_maintenance_run(
    run_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], _: SuperuserDep, db: DbDep
) -> Results[MaintenanceRunOut]:
    async with db.connection() as conn:
        row = await history.get_run(conn, run_id)
    if row is None:
        raise ApiError(404, f"no maintenance run {run_id}")
    return Results(results=MaintenanceRunOut.from_row(row))


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


@router.post("/maintenance/vacuum", response_model=Results[MaintenanceRunOut], status_code=202)
async def start_vacuum(
    _: SuperuserDep, services: ServicesDep, db: DbDep, body: Annotated[VacuumIn | None, Body()] = None
) -> Results[MaintenanceRunOut]:
    """Start a VACUUM now (it waits for a run in progress to finish); answers the queued run."""
    body = body or VacuumIn()
    if body.full and body.reindex:
        raise ApiError(422, "reindex: VACUUM FULL rebuilds every index already; ask for one of full or reindex")
    if body.reindex and body.tables is not None and "chunks" not in body.tables:
        raise ApiError(422, "reindex: the vector indexes are on 'chunks'; add it to tables or leave tables out")
    maintenance = _maintenance(services)
    analyze = services.settings.database.maintenance.vacuum_analyze if body.analyze is None else body.analyze
    options = RunOptions(
        analyze=analyze, full=body.full, reindex=body.reindex, tables=tuple(body.tables) if body.tables else None
    )
    await db.release()  # the run takes connections of its own, and waits for a run in progress
    try:
        run = await maintenance.start_manual(options)
    except UnknownTables as e:
        raise ApiError(422, f"tables: {e}") from None
    return Results(results=MaintenanceRunOut.from_row(run))


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


@router.get("/status", response_model=Results[StatusOut])
async def status(_: SuperuserDep, services: ServicesDep, db: DbDep) -> Results[StatusOut]:
    maintenance = _maintenance(services)
    async with db.connection() as conn:
        data = await system_status(
            conn,
            settings=services.settings,
            embedded=services.db.is_embedded,
            model=services.embedder.model_name,
            dimension=services.embedder.dimension,
            started_at=services.started_at,
            maintenance=maintenance,
        )
    last = data["maintenance"]["last_run"]
    data["maintenance"]["last_run"] = MaintenanceRunOut.from_row(last) if last else None
    return Results(results=StatusOut.model_validate(data))


# -- stats (docs/metrics.md) ----------------------------------------------------------------------

WindowHours = Annotated[
    int, Query(ge=1, le=24 * 366, description="Hours back from now the figures cover (1 to 8784).")
]
Top = Annotated[int, Query(ge=1, le=1000, description="How many users to list, 1-1000.")]


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


@router.get("/stats", response_model=Results[SystemStatsOut])
async def system_stats(
    _: SuperuserDep, services: ServicesDep, db: DbDep, window_hours: WindowHours = 24, top: Top = 10
) -> Results[SystemStatsOut]:
    """The operator's metrics over the last ``window_hours``, the same from every replica."""
    async with db.connection() as conn:
        data = await stats.system_stats(
            conn, window_hours=window_hours, top=top,
            instance_timeout=services.settings.metrics.instance_timeout_seconds,
        )
    return Results(results=SystemStatsOut.model_validate(data))


@router.get("/users/{user_id}/stats", response_model=Results[UserStatsOut])
async def user_stats(
    user_id: uuid.UUID, principal: PrincipalDep, db: DbDep, window_hours: WindowHours = 24
) -> Results[UserStatsOut]:
    """One user's figures: a superuser's for anyone, a user's for themself (403 otherwise)."""
    if user_id != principal.id and not principal.is_superuser:
        raise ApiError(403, "only a superuser may read another user's stats")
    async with db.connection() as conn:
        data = await stats.user_stats(conn, user_id, window_hours=window_hours)
    if data is None:
        raise ApiError(404, f"no user {user_id}")
    return Results(results=UserStatsOut.model_validate(data))
