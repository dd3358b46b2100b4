"""Read-your-writes across replicas: after a user's write succeeds, the primary's WAL position is
recorded for them (``ragkeep.db.reads``) before the response leaves, so the user's next request,
on any ragkeep replica, reads from a standby only once it shows that write.

A middleware, not a line in each route: a write route added later is covered without a thought.
Every authenticated request that is not a GET/HEAD/OPTIONS and answers below 400 counts as a
write, except the POSTs that only read (searches). Does nothing without standbys.
"""

from __future__ import annotations

import logging
import uuid

import psycopg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragkeep.db.reads import record_write
from ragkeep.monitoring.activity import PRINCIPAL_STATE_KEY

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: POSTs that write nothing a later read could miss (R2R sends its searches as POSTs).
READ_ONLY_POSTS = frozenset(
    {
        "/v3/retrieval/search",
        "/v3/chunks/search",
        "/v3/documents/search",
        "/v3/retrieval/rag",
        "/v3/retrieval/completion",
        "/v3/retrieval/embedding",
    }
)


class MarkWrites:
    """Records the caller's write position as its write's response starts (standbys configured)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = getattr(scope["app"].state, "services", None) if scope["type"] == "http" else None
        router = services.db.reads if services is not None else None
        if (
            router is None
            or not router.enabled
            or scope["method"] in SAFE_METHODS
            or scope["path"].rstrip("/") in READ_ONLY_POSTS
        ):
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                user_id = scope.get("state", {}).get(PRINCIPAL_STATE_KEY)
                if isinstance(user_id, uuid.UUID):
                    try:
                        async with router.primary.connection() as conn:
                            await record_write(conn, user_id)
                    except psycopg.Error as e:  # the write is committed: answer it; a read may lag
                        log.warning("could not record the write position of user %s: %s", user_id, e)
            await send(message)

        await self.app(scope, receive, send_marked)
