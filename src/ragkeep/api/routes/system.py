"""``/v3/system``: the maintenance history, manual VACUUM, the server's status and stats (superusers;
a user may read their own stats).

A manual VACUUM answers 202 with the run as recorded (``queued``): VACUUM of a large table takes
minutes, longer than a request should. ``GET /v3/system/maintenance/{id}`` follows it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query

from ragkeep.api.deps import BIGINT_MAX, DbDep, Limit, Offset, PrincipalDep, ReadsDep, ServicesDep, SuperuserDep
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import (
    MaintenanceRunOut,
    PaginatedResults,
    Results,
    StatusOut,
    SystemStatsOut,
    UserStatsOut,
    VacuumIn,
)
from ragkeep.api.services import Services
from ragkeep.maintenance import Maintenance, RunOptions, UnknownTables, history
from ragkeep.maintenance.status import system_status
from ragkeep.monitoring import stats

router = APIRouter(prefix="/v3/system", tags=["system"], route_class=GuardedRoute)


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


@router.get("/stats", response_model=Results[SystemStatsOut])
async def system_stats(
    _: SuperuserDep, services: ServicesDep, reads: ReadsDep, window_hours: WindowHours = 24, top: Top = 10
) -> Results[SystemStatsOut]:
    """The operator's metrics over the last ``window_hours``, the same from every replica (and a
    standby: they are read from the roll-up tables, not from pg_stat views)."""
    async with reads.connection() as conn:
        data = await stats.system_stats(
            conn, window_hours=window_hours, top=top,
            instance_timeout=services.settings.metrics.instance_timeout_seconds,
        )
    return Results(results=SystemStatsOut.model_validate(data))


@router.get("/users/{user_id}/stats", response_model=Results[UserStatsOut])
async def user_stats(
    user_id: uuid.UUID, principal: PrincipalDep, reads: ReadsDep, window_hours: WindowHours = 24
) -> Results[UserStatsOut]:
    """One user's figures: a superuser's for anyone, a user's for themself (403 otherwise)."""
    if user_id != principal.id and not principal.is_superuser:
        raise ApiError(403, "only a superuser may read another user's stats")
    async with reads.connection() as conn:
        data = await stats.user_stats(conn, user_id, window_hours=window_hours)
    if data is None:
        raise ApiError(404, f"no user {user_id}")
    return Results(results=UserStatsOut.model_validate(data))
