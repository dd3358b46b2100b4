"""``GET /v3/health``: the one route open without credentials, for load balancers."""

from __future__ import annotations

from fastapi import APIRouter

from ragkeep.api.deps import ServicesDep
from ragkeep.api.guard import GuardedRoute
from ragkeep.api.schemas import GenericMessage, Results

router = APIRouter(route_class=GuardedRoute)


@router.get("/v3/health", response_model=Results[GenericMessage])
async def health(services: ServicesDep) -> Results[GenericMessage]:
    async with services.db.pool.connection() as conn:
        await conn.execute("SELECT 1")
    return Results(results=GenericMessage(message="ok"))
