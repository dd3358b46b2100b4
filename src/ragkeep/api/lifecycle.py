"""How the background services of a server process start and stop: one ``AsyncExitStack``.

The app's lifespan enters each service with :func:`service` on one stack, in start order. A
start that fails (any of them, or anything between) unwinds the stack: exactly the services
already started are stopped, newest first. At shutdown the same stack stops them all, newest
first; a stop that raises is logged and the next one still runs, so every task is cancelled and
awaited, every connection closed and every parser worker killed whatever one service does.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

Start = Callable[[], Awaitable[object] | object]
Stop = Callable[[], Awaitable[object]]


@asynccontextmanager
async def service(name: str, *, start: Start | None = None, stop: Stop) -> AsyncIterator[None]:
    """``start`` (sync or async) on entry, ``stop`` on exit, however the block ends.

    A start that raises is followed by ``stop`` too (every service's stop is safe on a half-done
    start: its tasks and connections are checked for ``None``), so nothing it began stays behind.
    A stop that raises an ``Exception`` is logged, not raised: the services stopped after it are
    stopped all the same, and the reason is in the log under ``name``.
    """
    if start is not None:
        try:
            started = start()
            if inspect.isawaitable(started):
                await started
        except BaseException:
            await _stop(name, stop)
            raise
    try:
        yield
    finally:
        await _stop(name, stop)


async def _stop(name: str, stop: Stop) -> None:
    try:
        await stop()
    except Exception:
        log.exception("stopping %s failed; stopping the other services all the same", name)
