"""Health routes, open without credentials, rate limits or activity records:

- ``GET /v3/health`` (R2R's): the database answers. Clients and older balancer configs use it.
- ``GET /v3/health/live``: the process answers (liveness: restart it if not). No database query,
  so a database outage does not get every replica restarted.
- ``GET /v3/health/ready``: send it requests (readiness): not stopping, the embedding model
  loaded, the database answering, its schema at least at this code's migration. Else 503 with
  ``Retry-After`` and the checks that failed, so a balancer takes it out of rotation.
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ragkeep.api.deps import ServicesDep
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import GenericMessage, Results
from ragkeep.api.shutdown import drain_of
from ragkeep.db.migrate import latest_version, schema_version
from ragkeep.db.replica import replica_name

router = APIRouter(route_class=GuardedRoute)

#: A balancer probes every second or so; a readiness check waits no longer than this for a
#: pool connection (a full pool is not "down": the check answers 503 and the next one retries).
READY_CONNECTION_TIMEOUT_SECONDS = 2.0
#: What a 503 from readiness asks the client (or balancer) to wait before trying again.
READY_RETRY_AFTER_SECONDS = 2

OK = "ok"


@router.get("/v3/health", response_model=Results[GenericMessage])
async def health(services: ServicesDep) -> Results[GenericMessage]:
    async with services.db.pool.connection() as conn:
        await conn.execute("SELECT 1")
    return Results(results=GenericMessage(message="ok"))


@router.get("/v3/health/live")
async def live() -> dict[str, Any]:
    """The event loop answers: nothing else is checked (a stopping process is still alive)."""
    return {"results": {"status": "alive", "replica": replica_name()}}


@router.get("/v3/health/ready", responses={503: {"description": "not ready; the body names the checks that failed"}})
async def ready(request: Request, services: ServicesDep) -> JSONResponse:
    expected = latest_version()
    checks: dict[str, str] = {
        "shutdown": "stopping" if drain_of(request.app).draining else OK,
        "embedding_model": OK if services.embedder.loaded else "not loaded",
    }
    try:
        async with services.db.pool.connection(timeout=READY_CONNECTION_TIMEOUT_SECONDS) as conn:
            version = await schema_version(conn)
        checks["database"] = OK
        # A newer schema is fine: migrations are additive, so this replica keeps serving during a
        # rolling update (docs/deploy.md); an older one means the database is not this code's.
        checks["migrations"] = OK if version >= expected else f"schema at {version}, this code expects {expected}"
    except (psycopg.Error, TimeoutError) as e:  # PoolTimeout is an OperationalError
        checks["database"] = f"{type(e).__name__}: {e}".strip()[:300]
        checks["migrations"] = "not checked (no database)"
    failed = [name for name, result in checks.items() if result != OK]
    body: dict[str, Any] = {"status": "not ready" if failed else "ready", "replica": replica_name(),
                            "schema_version_expected": expected, "checks": checks}
    if not failed:
        return JSONResponse({"results": body})
    body["failed"] = failed
    message = "not ready: " + "; ".join(f"{name}: {checks[name]}" for name in failed)
    return JSONResponse(
        {"detail": {"message": message, "error_type": "not_ready"}, "results": body},
        status_code=503,
        headers={"Retry-After": str(READY_RETRY_AFTER_SECONDS)},
    )
