"""The errors the server's domain raises, one tree in the manner of ``psycopg.errors``.

Domain code (auth, limits, ingest, search, indices, maintenance) says *what* went wrong by the
class it raises; it knows no HTTP. ``ragkeep.api.errors`` holds the one table from these classes
to a status code and R2R's ``error_type``, so a status is decided in one place.

A leaf module: it imports nothing from ragkeep. (The base is ``DomainError``, not
``RagkeepError``: that name is the client's error for an HTTP answer, ``ragkeep.client``.)
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refused request: ``message`` is one sentence that says what was wrong (R2R's clients show
    it); ``extra`` holds fields the API adds to the error's ``detail`` after ``error_type``."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self._extra = extra

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self._extra)


class BadRequest(DomainError):
    """The request cannot be done as sent (a wrong password given as proof, mixed credentials)."""


class InvalidInput(DomainError):
    """A value the caller sent is not valid; the message names the field."""


class Unauthorized(DomainError):
    """No valid credentials: missing, wrong, expired or revoked."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """No such thing, or none the caller may see (existence does not leak)."""


class Conflict(DomainError):
    """The request contradicts what is stored (a duplicate, a last superuser, a busy document)."""


class Unavailable(DomainError):
    """A part the request needs is not running or not reachable right now."""


class LimitExceeded(DomainError):
    """A request refused by a limit.

    ``limit_name`` is the key that set the limit (``max_documents``, ``global_per_min`` ...),
    ``used`` what the user had when refused, ``retry_after`` seconds until a rate window ends."""

    def __init__(self, limit_name: str, limit: int, used: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.retry_after = retry_after

    @property
    def extra(self) -> dict[str, Any]:
        return {"limit_name": self.limit_name, "limit": self.limit, "used": self.used}


class QuotaExceeded(LimitExceeded):
    """A storage quota (documents, chunks, collections) would be passed."""


class UploadTooLarge(LimitExceeded):
    """An upload is larger than the caller's limit."""


class RateLimited(LimitExceeded):
    """Too many requests (or failed log-ins) in a window; ``retry_after`` says when to try again."""


class InternalError(RuntimeError):
    """A state the code rules out was seen (a row an INSERT ... RETURNING did not return): a bug,
    answered 500 like any unexpected error. Raised where an ``assert`` would vanish under ``-O``."""
