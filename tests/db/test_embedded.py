"""The embedded PostgreSQL: start, extensions, shared use by two processes' handles, clean stop."""

from pathlib import Path

import psycopg
import pytest

from ragkeep.db.database import prepare_schema
from ragkeep.db.embedded import EmbeddedPostgres
from ragkeep.db.migrate import SchemaError

#: These start PostgreSQL servers of their own (not through ``pg_url``).
pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory):
    server = EmbeddedPostgres(tmp_path_factory.mktemp("emb") / "pgdata", shared_buffers="64MB")
    url = server.start()
    yield server, url
    server.stop()


def test_starts_with_preloaded_extensions(fresh) -> None:
    _server, url = fresh
    notes = prepare_schema(url, 384, "all-MiniLM-L6-v2")
    assert notes == []  # every optional extension is there in the wheel
    with psycopg.connect(url) as conn:
        exts = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
    assert {"vector", "pg_trgm", "pg_prewarm", "pg_stat_statements"} <= set(exts)
    assert tuple(int(x) for x in exts["vector"].split(".")[:2]) >= (0, 8)
    assert "pg_stat_statements" in preload and "pg_prewarm" in preload
    assert listen == ""  # Unix socket only: trust auth never reaches the network


def test_schema_is_tenant_first(fresh) -> None:
    _, url = fresh
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    with psycopg.connect(url) as conn:
        def pk(table: str) -> list[str]:
            return [r[0] for r in conn.execute(
                """SELECT a.attname FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                   WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
                (table,),
            ).fetchall()]
        assert pk("documents") == ["owner_id", "id"]
        assert pk("chunks") == ["owner_id", "id"]
        indexes = {r[0]: r[1] for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chunks'").fetchall()}
    defs = " ".join(indexes.values())
    assert "gin (tsv)" in defs and "gin (collection_ids)" in defs
    assert any("btree (owner_id" in d for d in indexes.values())


def test_migrations_are_idempotent_and_refuse_newer_schema(fresh) -> None:
    _, url = fresh
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
        assert versions == sorted(set(versions))
        conn.execute("INSERT INTO schema_version (version, name) VALUES (9999, 'from_the_future')")
        conn.commit()
    try:
        with pytest.raises(SchemaError, match="newer than this ragkeep"):
            prepare_schema(url, 384, "all-MiniLM-L6-v2")
    finally:
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM schema_version WHERE version = 9999")


def test_dimension_mismatch_is_a_clear_error(fresh) -> None:
    _, url = fresh
    prepare_schema(url, 384, "all-MiniLM-L6-v2")
    with pytest.raises(SchemaError, match=r"384-dimensional.*768-dimensional"):
        prepare_schema(url, 768, "some-other-model")


def test_second_handle_attaches_and_last_one_stops(tmp_path: Path) -> None:
    pgdata = tmp_path / "shared"
    a = EmbeddedPostgres(pgdata, shared_buffers="32MB")
    url = a.start()
    b = EmbeddedPostgres(pgdata, shared_buffers="32MB")
    assert b.start() == url
    assert a.started_here and not b.started_here
    # Both handles are this process; stopping one keeps the server for the other.
    a.stop()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    b.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    # Data survives a restart.
    c = EmbeddedPostgres(pgdata, shared_buffers="32MB")
    c.start()
    c.stop()
