"""Graceful stop of a server process: readiness goes first, then requests, then background work.

On SIGTERM (or SIGINT) :class:`Drain` is marked at once, in the signal handler, so
``GET /v3/health/ready`` answers 503 and a balancer stops sending new requests. After
``[app] shutdown_delay_seconds`` uvicorn closes the port and waits, up to
``shutdown_grace_seconds``, for the requests in flight; the app's lifespan then gives the
background uploads what is left of that grace (``Ingestor.drain``) before cancelling them.
uvicorn's own hook comes too late for readiness: it runs the lifespan shutdown only after the
requests are done and the port is closed, hence the ``handle_exit`` override.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from ragkeep.config import Settings

log = logging.getLogger(__name__)


class Drain:
    """Whether this process is stopping, and since when (``time.monotonic``)."""

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        """Mark the process as stopping; the first call counts (a signal handler may call it)."""
        if self.since is None:
            self.since = time.monotonic()

    def left_of(self, grace_seconds: float) -> float:
        """Seconds of ``grace_seconds`` not yet spent since :meth:`begin` (which this calls)."""
        self.begin()
        since = self.since if self.since is not None else time.monotonic()
        return max(0.0, grace_seconds - (time.monotonic() - since))


def drain_of(app: FastAPI) -> Drain:
    """The app's drain state (``create_app`` sets it; an app built otherwise gets one now)."""
    drain = getattr(app.state, "drain", None)
    if not isinstance(drain, Drain):
        drain = app.state.drain = Drain()
    return drain


class _Server(uvicorn.Server):
    """uvicorn, with readiness marked down before the port closes and SIGTERM ending in exit 0."""

    def __init__(self, config: uvicorn.Config, drain: Drain, delay_seconds: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.delay_seconds = delay_seconds
        self._delay: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.drain.draining
        self.drain.begin()
        if first and self.delay_seconds > 0:
            log.info("stopping: /v3/health/ready answers 503; serving %.0f s more before closing the port",
                     self.delay_seconds)
            self._delay = threading.Timer(self.delay_seconds, self._exit, (sig, frame))
            self._delay.daemon = True
            self._delay.start()
            return
        if self._delay is not None:  # a second signal: stop waiting for the balancer
            self._delay.cancel()
        self._exit(sig, frame)

    def _exit(self, sig: int, frame: FrameType | None) -> None:
        log.info("stopping: requests in flight and background uploads get up to %.0f s",
                 self.config.timeout_graceful_shutdown or 0)
        super().handle_exit(sig, frame)
        # uvicorn raises a caught signal again once stopped: SIGTERM would then kill the process
        # (exit status 143) after a clean stop. An orchestrator's SIGTERM stopped it as asked: exit 0.
        self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def serve(app: FastAPI, settings: Settings) -> None:
    """Run ``app`` with uvicorn until SIGTERM or SIGINT, stopping as the module says."""
    grace = settings.app.shutdown_grace_seconds
    config = uvicorn.Config(
        app,
        host=settings.app.host,
        port=settings.app.port,
        log_config=None,
        log_level=settings.app.log_level,
        # Requests in flight get the grace; what is left of it goes to background uploads.
        timeout_graceful_shutdown=math.ceil(grace),
    )
    _Server(config, drain_of(app), settings.app.shutdown_delay_seconds).run()
