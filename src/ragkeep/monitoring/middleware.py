"""The ASGI middleware that times every HTTP request for the metrics (:mod:`.activity`, :mod:`.prom`).

Its own module: it finds the app's :class:`~.monitor.Monitor`, which holds the activity recorder.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragkeep.monitoring.activity import PRINCIPAL_STATE_KEY, UNMATCHED, Caller, caller_from_headers
from ragkeep.monitoring.monitor import Monitor

log = logging.getLogger(__name__)


def _monitor(scope: Scope) -> Monitor | None:
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    return getattr(services, "monitor", None)


#: Paths a balancer or orchestrator polls every second or so, from every balancer to every
#: replica: not traffic, so neither timed nor recorded (they would lead the route statistics).
PROBES = frozenset({"/v3/health/live", "/v3/health/ready"})


class ActivityMiddleware:
    """Times every HTTP request and hands it to the app's :class:`~.monitor.Monitor`.

    Pure ASGI (not ``BaseHTTPMiddleware``): no extra task or body copy per request. The route
    template comes from ``scope["route"]``, which the router sets on the shared scope when it
    matches; the time runs until the last body chunk is sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        monitor = _monitor(scope) if scope["type"] == "http" and scope.get("path") not in PROBES else None
        if monitor is None:  # lifespan, websockets, or the app still starting
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        monitor.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            monitor.metrics.in_progress.dec()
            try:
                self._record(monitor, scope, status, time.perf_counter() - start)
            except Exception:  # counting must never turn an answered request into an error
                log.exception("could not record request metrics")

    @staticmethod
    def _record(monitor: Monitor, scope: Scope, status: int, seconds: float) -> None:
        # path_format, as the rate limiter keys routes ("{name}", not "{name:path}"): one route name everywhere
        route = getattr(scope.get("route"), "path_format", None) or UNMATCHED
        authenticated = scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
        if authenticated is not None:  # the route's auth dependency verified the caller
            caller: Caller | None = Caller(user_id=authenticated)
        else:  # a route without auth, or a request refused before it: read the headers
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in scope.get("headers", ())
                if k.lower() in (b"authorization", b"x-api-key")
            }
            caller = caller_from_headers(headers, monitor.tokens) if headers and status != 401 else None
        monitor.metrics.observe_request(scope["method"], route, status, seconds)
        monitor.activity.record(method=scope["method"], route=route, status=status, ms=seconds * 1000, caller=caller)

