"""Supervision of the embedded PostgreSQL: restart it when it dies, and say so in the log.

Every server process attached to an embedded data folder supervises it, not only the one that
started it (that one may have left while others still use the server); ``ensure_running`` takes
the folder's lock, so one process restarts it and the others see it running. A restart after a
``kill -9`` can fail while the dead postmaster's backends are still exiting (their shared memory
is in use): it is retried every second.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the wheel warns at import; database.py imports it only when it is used
    from ragkeep.db.embedded import EmbeddedPostgres

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.5
RETRY_SECONDS = 1.0


class Supervisor:
    def __init__(self, server: EmbeddedPostgres, interval: float = CHECK_SECONDS) -> None:
        self.server = server
        self.interval = interval
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="embedded PostgreSQL supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.server.running():  # reads postmaster.pid, one pid look-up: cheap
                continue
            try:
                await self._restart()
            except Exception:  # never let the supervisor die
                log.exception("supervising the embedded PostgreSQL failed; checking again")

    async def _restart(self) -> None:
        pgdata, pglog = self.server.pgdata, self.server.log_file
        log.error("the embedded PostgreSQL in %s is not running (it died or was stopped); restarting it", pgdata)
        t0 = monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                started = await asyncio.to_thread(self.server.ensure_running)
                break
            except Exception as e:
                if attempts == 1:
                    log.error(
                        "could not restart the embedded PostgreSQL yet (%s); retrying every %.0f s", e, RETRY_SECONDS
                    )
                await asyncio.sleep(RETRY_SECONDS)
        if started:
            self.restarts += 1
            log.warning(
                "the embedded PostgreSQL was restarted in %.1f s (%d attempts). Its log %s says why it "
                "stopped; if it keeps dying, look for the out-of-memory killer, a full disk or another "
                "process stopping it.", monotonic() - t0, attempts, pglog,
            )
        else:
            log.info("the embedded PostgreSQL in %s was restarted by another ragkeep process", pgdata)
