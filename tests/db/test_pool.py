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
