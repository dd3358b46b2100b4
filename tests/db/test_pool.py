"""The request pool's connection parameters: timeouts and keepalives added, the URL's own kept."""

from ragkeep.config import DatabaseConfig
from ragkeep.db.database import pool_kwargs


def test_timeouts_and_keepalives_are_added() -> None:
    kw = pool_kwargs("postgresql://u@h/db", DatabaseConfig(connect_timeout_seconds=3, statement_timeout_seconds=1.5))
    assert kw["connect_timeout"] == 3
    assert kw["keepalives"] == 1 and kw["keepalives_idle"] == 10
    assert kw["options"] == "-c statement_timeout=1500"


def test_the_urls_own_values_win_and_its_options_are_kept() -> None:
    url = "postgresql://u@h/db?connect_timeout=9&keepalives_idle=60&options=-c%20search_path%3Dx"
    kw = pool_kwargs(url, DatabaseConfig())
    assert "connect_timeout" not in kw and "keepalives_idle" not in kw
    assert kw["options"] == "-c search_path=x -c statement_timeout=60000"


def test_statement_timeout_zero_sets_none() -> None:
    assert "options" not in pool_kwargs("postgresql://u@h/db", DatabaseConfig(statement_timeout_seconds=0))


def test_a_query_past_statement_timeout_answers_503_with_retry_after(pg_url: str) -> None:
    """A real query cancelled by the pool's statement_timeout is database trouble: 503 + Retry-After
    from the one handler (QueryCanceled is an OperationalError), never a 500 or a hang."""
    import psycopg
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ragkeep.api.errors import install, install_database_unavailable

    app = FastAPI()
    install(app)
    install_database_unavailable(app)
    kwargs = pool_kwargs(pg_url, DatabaseConfig(statement_timeout_seconds=0.1))

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(pg_url, **kwargs) as conn:  # type: ignore[arg-type]
            await conn.execute("SELECT pg_sleep(5)")
        return {"never": "reached"}

    r = TestClient(app).get("/slow")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    assert r.json()["detail"]["error_type"] == "ServiceUnavailable"
