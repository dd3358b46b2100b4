"""``GET /metrics``: Prometheus text exposition of this replica (docs/metrics.md).

Prometheus scrapes every replica; request and search metrics are per process, the database's
figures (cache hit ratios, sizes, users, totals) the same on each. Open unless
``[metrics] prometheus_token`` is set, then a bearer token must match it (compared in constant
time). No user id appears in any label.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ragkeep.api.deps import ServicesDep
from ragkeep.api.errors import ApiError

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, services: ServicesDep) -> Response:
    config = services.settings.metrics
    if not config.prometheus:
        raise ApiError(404, "the Prometheus endpoint is off ([metrics] prometheus = false)")
    if config.prometheus_token:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.prometheus_token.encode()):
            raise ApiError(401, "/metrics wants 'Authorization: Bearer <[metrics] prometheus_token>'")
    monitor = services.monitor
    if monitor is None:
        raise ApiError(503, "metrics are not running in this server process")
    return Response(await monitor.render(), media_type=CONTENT_TYPE_LATEST)
