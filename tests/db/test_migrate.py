"""Replicas starting together on a new database (a rolling deploy, a scaled-out service): one
migrates under the advisory lock, the others wait and find the schema done; none fails."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from ragkeep.db.database import prepare_schema
from ragkeep.db.migrate import latest_version, load_migrations
from tests.support import own_database

pytestmark = pytest.mark.db


def test_concurrent_starts_migrate_once(pg_url: str) -> None:
    with own_database(pg_url, "migrate") as url:
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda _: prepare_schema(url, 384, "all-MiniLM-L6-v2"), range(4)))
        assert len(outcomes) == 4  # every start returned (an exception would have been raised here)
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT version, count(*) FROM schema_version GROUP BY version ORDER BY 1").fetchall()
        assert rows == [(m.version, 1) for m in load_migrations()]
        assert rows[-1][0] == latest_version()
