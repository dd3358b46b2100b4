"""The FastAPI application: start-up order, shutdown, routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from ragkeep import __version__
from ragkeep.api import errors, ratelimit
from ragkeep.api.lifecycle import service
from ragkeep.api.routes import chunks, collections, documents, health, indices, metrics, retrieval, system, users
from ragkeep.api.services import Services
from ragkeep.api.shutdown import drain_of
from ragkeep.api.writes import MarkWrites
from ragkeep.auth.tokens import TokenIssuer, load_or_create_secret
from ragkeep.auth.users import ensure_admin
from ragkeep.config import Settings, load_settings
from ragkeep.db.database import open_database
from ragkeep.embeddings import create_provider
from ragkeep.indices.build import IndexBuilder
from ragkeep.indices.promotion import AutoPromoter
from ragkeep.indices.startup import begin_startup
from ragkeep.ingest.pipeline import Ingestor
from ragkeep.ingest.store import fail_interrupted
from ragkeep.maintenance import Maintenance
from ragkeep.monitoring.middleware import ActivityMiddleware
from ragkeep.monitoring.monitor import Monitor
from ragkeep.monitoring.searches import SearchRecorder
from ragkeep.monitoring.traffic import observed_off_peak_hour
from ragkeep.search.planner import Planner

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One stack, in start order: a failed start stops what started, shutdown stops all,
        # newest first (api/lifecycle.py). Promotion stops before the builds it starts, the
        # recorders after the work they record, the pool after every user of it.
        async with AsyncExitStack() as stack:
            embedder = create_provider(settings.embedding)
            await stack.enter_async_context(service("the embedding model", stop=embedder.aclose))
            db = await open_database(settings, embedder.dimension, embedder.model_name)
            await stack.enter_async_context(service("the database", stop=db.close))  # pool, supervisor, embedded server
            async with db.pool.connection() as conn:
                secret = settings.auth.secret_key or await load_or_create_secret(conn)
                await ensure_admin(
                    conn, settings.auth.admin_email, settings.auth.admin_password, settings.app.home
                )
                interrupted = await fail_interrupted(conn)
                if interrupted:
                    log.warning("marked %d interrupted ingestions as failed", interrupted)
            tokens = TokenIssuer(secret, settings.auth.access_token_minutes, settings.auth.refresh_token_days)
            ingestor = Ingestor(db.pool, embedder, settings.ingestion)  # ConfigError here, before any task
            ingestor.record_writes = db.reads is not None and db.reads.enabled
            planner = Planner()  # this app's index directory and counts; builds and drops refresh it
            indexes = IndexBuilder(db.url, settings.indices, planner)
            promoter = AutoPromoter(settings, indexes, observed_off_peak_hour)
            monitor = Monitor(settings.metrics, db.pool, db.url, tokens)  # Prometheus, request activity, snapshots
            monitor.reads = db.reads
            searches = SearchRecorder(db.pool, settings.metrics.flush_seconds, observer=monitor.metrics.observe_search)
            maintenance = Maintenance(settings.database.maintenance, db.url, settings.indices)
            standby_urls = settings.database.read_connection_urls()
            if db.reads is not None and db.reads.enabled:  # read_urls: checks standbys, routes reads
                await stack.enter_async_context(service("the read router", start=db.reads.start, stop=db.reads.stop))
            for name, start, stop in (
                ("the monitor", monitor.start, monitor.stop),  # its stop writes the last activity
                ("the search recorder", searches.start, searches.stop),
                # repair invalid vector indexes, then warm them (background); drain cancels builds
                ("the index builder", lambda: begin_startup(indexes, standby_urls), indexes.drain),
                # this replica's lease, the dead replicas' sweep; drain lets background uploads use
                # what is left of the shutdown grace, then cancels them and kills the parsers
                ("the ingestor", lambda: ingestor.start(db.url),
                 lambda: ingestor.drain(drain.left_of(settings.app.shutdown_grace_seconds))),
                # every replica schedules; maintenance_runs lets one run each tick
                ("maintenance", maintenance.start, maintenance.stop),
                ("auto promotion", promoter.start, promoter.stop),  # when [indices] auto_promote_threshold is set
            ):
                await stack.enter_async_context(service(name, start=start, stop=stop))
            app.state.services = Services(
                settings, db, embedder, tokens, ingestor, indexes, searches, planner,
                maintenance=maintenance, monitor=monitor,
            )
            where = f"embedded PostgreSQL in {settings.pgdata}" if db.is_embedded else "external PostgreSQL"
            log.info("ragkeep %s ready on %s with %s", __version__, where, embedder.model_name)
            yield

    app = FastAPI(title="ragkeep", version=__version__, lifespan=lifespan)
    drain = drain_of(app)  # marked on SIGTERM (api/shutdown.py): /v3/health/ready then answers 503
    errors.install(app)  # domain errors -> status (errors.STATUS; limits: 403/413/429 + Retry-After)
    errors.install_database_unavailable(app)  # psycopg.OperationalError -> 503 + Retry-After
    ratelimit.install(app)  # this process's clock for deleting old rate windows (docs/limits.md)
    app.add_middleware(MarkWrites)  # with read replicas: a user's next read shows their write
    app.add_middleware(ActivityMiddleware)  # times every request for the metrics
    app.include_router(users.public_router)  # log-in, token refresh: no caller to count; before "/{user_id}"
    for module in (health, users, documents, chunks, retrieval, collections, indices, system, metrics):
        # Requests of a user are counted against their rate limits; health and /metrics have no user.
        app.include_router(module.router, dependencies=[] if module in (health, metrics) else ratelimit.RATE_LIMITED)
    return app
