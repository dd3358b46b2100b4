"""``/v3/system``: the maintenance history, manual VACUUM, and the server's status (superusers).

A manual VACUUM answers 202 with the run as recorded (``queued``): VACUUM of a large table takes
minutes, longer than a request should. ``GET /v3/system/maintenance/{id}`` follows it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ragkeep.api.deps import Limit, Offset, ServicesDep, SuperuserDep
from ragkeep.api.errors import ApiError
from ragkeep.api.schemas import PaginatedResults, Results
from ragkeep.api.services import Services
from ragkeep.maintenance import Maintenance, RunOptions, UnknownTables
from ragkeep.maintenance import history
from ragkeep.maintenance.status import system_status

router = APIRouter(prefix="/v3/system", tags=["system"])

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
    services: ServicesDep,
    offset: Offset = 0,
    limit: Limit = 100,
    task: Annotated[Literal["vacuum", "reindex"] | None, Query(description="Only this task.")] = None,
    trigger: Annotated[Literal["schedule", "manual"] | None, Query(description="Only this trigger.")] = None,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "skipped"] | None, Query(description="Only this status.")
    ] = None,
    parent_id: Annotated[int | None, Query(ge=1, description="The reindex runs done for this vacuum run.")] = None,
) -> PaginatedResults[list[MaintenanceRunOut]]:
    """The maintenance history, newest first."""
    async with services.db.pool.connection() as conn:
        rows, total = await history.list_runs(
            conn, offset=offset, limit=limit, task=task, trigger=trigger, status=status, parent_id=parent_id
        )
    return PaginatedResults(results=[MaintenanceRunOut.from_row(r) for r in rows], total_entries=total)


@router.get("/maintenance/{run_id}", response_model=Results[MaintenanceRunOut])
async def get_maintenance_run(run_id: int, _: SuperuserDep, services: ServicesDep) -> Results[MaintenanceRunOut]:
    async with services.db.pool.connection() as conn:
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
    _: SuperuserDep, services: ServicesDep, body: Annotated[VacuumIn | None, Body()] = None
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
async def status(_: SuperuserDep, services: ServicesDep) -> Results[StatusOut]:
    maintenance = _maintenance(services)
    async with services.db.pool.connection() as conn:
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
