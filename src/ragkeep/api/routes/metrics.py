"""``GET /metrics``: Prometheus text exposition of this replica (docs/metrics.md).

Prometheus scrapes every replica; request and search metrics are per process, the database's
figures (cache hit ratios, sizes, users, totals) the same on each. With
``[metrics] prometheus_token`` set, a bearer token must match it (compared in constant time);
without one, only clients on this machine (loopback) are answered: totals and index names are not
for the whole network. No user id appears in any label.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ragkeep.api.deps import ServicesDep
from ragkeep.api.errors import ApiError
from ragkeep.api.guard import GuardedRoute

router = APIRouter(tags=["metrics"], route_class=GuardedRoute)


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, services: ServicesDep) -> Response:
    config = services.settings.metrics
    if not config.prometheus:
        raise ApiError(404, "the Prometheus endpoint is off ([metrics] prometheus = false)")
    if config.prometheus_token:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), config.prometheus_token.encode()
        ):
            raise ApiError(401, "/metrics wants 'Authorization: Bearer <[metrics] prometheus_token>'")
    elif not _loopback(request):
        raise ApiError(403, "/metrics answers other machines only with [metrics] prometheus_token set; "
                            "set it and give Prometheus the token")
    monitor = services.monitor
    if monitor is None:
        raise ApiError(503, "metrics are not running in this server process")
    return Response(await monitor.render(), media_type=CONTENT_TYPE_LATEST)
