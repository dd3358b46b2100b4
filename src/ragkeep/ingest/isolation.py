"""Parsing in worker processes, so one upload cannot take the server's memory, CPU or event loop.

A parse runs in a separate process: a fresh interpreter (``python -m ragkeep.ingest.isolation``)
that imports only the parsers, never a fork of the server with its threads, pools and model, and
kept for the next parse (starting one takes about a second). Each worker
has an address-space limit (``RLIMIT_AS``: its own size when idle plus ``parse_memory_mb``) and
each parse a wall-clock limit (``parse_timeout_seconds``): a worker past it is killed and
replaced. In the server process, waiting for a worker is a thread blocked on a pipe, which holds
neither the GIL nor the event loop, so ``/v3/health`` answers while a hostile file is parsed.

Limits on content (decompressed size, elements, pages) are checked inside the parser
(:class:`~ragkeep.ingest.parsers.ParseLimits`); every refusal is a
:class:`~ragkeep.ingest.parsers.ParseLimitExceeded` whose message names the setting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import psutil

from ragkeep.errors import Unavailable
from ragkeep.ingest.parsers import (
    DocumentParseError,
    ParsedDocument,
    ParseLimitExceeded,
    ParseLimits,
    UnsupportedDocumentType,
    parse_document,
)

log = logging.getLogger(__name__)


def _serve(conn: Connection, memory_bytes: int, timeout_seconds: float) -> None:
    """A worker: parse what the pipe brings, answer ("ok", doc) or (error class name, message).

    Each parse arms SIGALRM a little after the server's own deadline, so a worker whose server
    died (``kill -9``: nobody left to kill it) still ends."""
    if memory_bytes > 0:
        idle = psutil.Process().memory_info().vms
        resource.setrlimit(resource.RLIMIT_AS, (idle + memory_bytes, idle + memory_bytes))
    while True:
        try:
            data, filename, content_type, limits = conn.recv()
        except (EOFError, OSError):
            return  # the server closed the pipe
        signal.alarm(int(timeout_seconds) + 5)  # the default action ends the process
        try:
            answer: tuple[str, Any] = ("ok", parse_document(data, filename, content_type, limits))
        except MemoryError:
            del data
            conn.send(("memory", None))
            os._exit(0)  # a fresh worker rather than a fragmented heap
        except DocumentParseError as e:  # UnsupportedDocumentType is a ValueError too
            answer = (type(e).__name__, str(e))
        except ValueError as e:
            answer = (type(e).__name__, str(e))
        except Exception as e:  # a parser bug must still be the upload's error, never the server's
            answer = ("DocumentParseError", f"the document could not be parsed: {type(e).__name__}: {e}"[:300])
        signal.alarm(0)
        del data
        conn.send(answer)


class _Worker:
    def __init__(self, memory_bytes: int, timeout_seconds: float) -> None:
        mine, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ragkeep.ingest.isolation", str(theirs.fileno()), str(memory_bytes),
                 str(timeout_seconds)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        self.conn = Connection(mine.detach())

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            self.conn.close()


class ParserPool:
    """Up to ``workers`` parses at once, each in a worker process (started on first use)."""

    def __init__(self, workers: int, timeout_seconds: float, memory_mb: int, limits: ParseLimits) -> None:
        self.timeout = timeout_seconds
        self.memory_bytes = memory_mb * 1024 * 1024
        self.memory_mb = memory_mb
        self.limits = limits
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        #: Every worker not yet killed: idle, busy, or started by a parse that was cancelled
        #: meanwhile (the thread starting it runs on and registers it here, for close to kill).
        self._workers: set[_Worker] = set()
        self._closed = False

    async def parse(self, data: bytes, filename: str | None, content_type: str | None) -> ParsedDocument:
        async with self._slots:
            worker = self._idle.pop() if self._idle else None
            if worker is None or not worker.alive():
                if worker is not None:
                    self._kill(worker)
                worker = await asyncio.to_thread(self._spawn)
            try:
                kind, value = await asyncio.to_thread(self._call, worker, (data, filename, content_type, self.limits))
            except BaseException:
                self._kill(worker)  # timed out, died, or the request was cancelled: never reused
                raise
            self._idle.append(worker)
        if kind == "ok":
            parsed: ParsedDocument = value
            return parsed
        if kind == "memory":
            raise ParseLimitExceeded(self._memory_message())
        if kind == "UnsupportedDocumentType":
            raise UnsupportedDocumentType(value)
        if kind == "ParseLimitExceeded":
            raise ParseLimitExceeded(value)
        raise DocumentParseError(value)

    def _spawn(self) -> _Worker:
        """In a thread: a new worker, registered before the pool's state is read, so that either
        this thread sees the pool closed or :meth:`close` sees the worker; both kill it."""
        worker = _Worker(self.memory_bytes, self.timeout)
        self._workers.add(worker)
        if self._closed:
            self._kill(worker)
            raise Unavailable("this server is stopping; upload the document again once it is back")
        return worker

    def _kill(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        worker.kill()

    def _memory_message(self) -> str:
        return (
            f"the document exceeds the limit on memory for parsing ({self.memory_mb} MB; setting "
            "ingestion.parse_memory_mb); split it into smaller documents"
        )

    def _call(self, worker: _Worker, payload: tuple[Any, ...]) -> tuple[str, Any]:
        """In a thread: send, then wait at most ``timeout`` for the answer."""
        start = time.monotonic()
        worker.conn.send(payload)
        left = max(self.timeout - (time.monotonic() - start), 0.0)
        if not worker.conn.poll(left):
            raise ParseLimitExceeded(
                f"the document exceeds the limit on parsing time ({self.timeout:g} s; setting "
                "ingestion.parse_timeout_seconds); split it into smaller documents"
            )
        try:
            answer: tuple[str, Any] = worker.conn.recv()
            return answer
        except (EOFError, OSError):
            # Killed without a word: by the kernel for memory, or a crash in a C parser.
            code = worker.exitcode
            log.warning("a parser worker died (exit code %s)", code)
            raise ParseLimitExceeded(self._memory_message()) from None

    async def close(self) -> None:
        """Stop every worker, idle, busy or starting (a busy one's upload is being cancelled with
        the server); a parse after this refuses to start one."""
        self._closed = True
        self._idle = []
        for w in list(self._workers):
            self._kill(w)


if __name__ == "__main__":  # a worker: python -m ragkeep.ingest.isolation FD MEMORY_BYTES
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3]))
