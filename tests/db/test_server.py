"""The standalone server of ``ragkeep db start`` and its streaming replicas (``db replica``):
real servers in temp folders on free ports, over TCP with the generated password."""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ragkeep.db.server import ServerError, ServerInfo, create_replica, read_server, start_server, stop_server
from tests.support import wait_for

pytestmark = pytest.mark.db



@pytest.fixture
def servers() -> Iterator[list[Path]]:
    """Data folders of the servers a test started: every one is stopped, even when it fails."""
    started: list[Path] = []
    yield started
    for folder in reversed(started):
        stop_server(folder)


@pytest.fixture
def primary(tmp_path: Path, servers: list[Path]) -> ServerInfo:
    info = start_server(tmp_path / "primary", port=0, shared_buffers="32MB")
    servers.append(info.data_dir)
    return info

def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    return int(row[0]) if row else -1


def test_start_listens_on_tcp_with_a_password(primary: ServerInfo) -> None:
    assert primary.started and not primary.standby and primary.host == "127.0.0.1"
    with psycopg.connect(primary.url) as conn:
        user, db, addr = conn.execute("SELECT current_user, current_database(), inet_server_addr()::text").fetchone()
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        senders = conn.execute("SHOW max_wal_senders").fetchone()[0]
    assert (user, db, addr) == ("ragkeep", "ragkeep", "127.0.0.1/32")
    assert "pg_stat_statements" in preload and "pg_prewarm" in preload and int(senders) > 0
    wrong = primary.url.replace(primary.password, "not-" + primary.password)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()


def test_the_password_file_is_private(primary: ServerInfo) -> None:
    from ragkeep.db.server import password_file

    path = password_file(primary.data_dir)
    assert path.read_text().strip() == primary.password
    assert path.stat().st_mode & 0o777 == 0o600


def test_start_twice_is_idempotent_and_url_is_the_same(primary: ServerInfo) -> None:
    again = start_server(primary.data_dir, port=0)
    assert not again.started and again.running and again.url == primary.url
    assert read_server(primary.data_dir).url == primary.url


def test_stop_stops_and_start_again_keeps_port_and_password(primary: ServerInfo) -> None:
    assert stop_server(primary.data_dir) is True
    assert not read_server(primary.data_dir).running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(primary.url, connect_timeout=3).close()
    assert stop_server(primary.data_dir) is False
    again = start_server(primary.data_dir, shared_buffers="32MB")
    assert again.started and again.url == primary.url
    psycopg.connect(primary.url).close()


def test_replica_streams_is_read_only_and_follows_pause_and_resume(
    primary: ServerInfo, tmp_path: Path, servers: list[Path]
) -> None:
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items VALUES (1)")
    lines: list[str] = []
    standby = create_replica(primary.url, tmp_path / "standby", shared_buffers="32MB", progress=lines.append)
    servers.append(standby.data_dir)
    assert standby.standby and standby.port != primary.port and any("%" in line for line in lines)
    assert count(standby.url) == 1  # the base backup has it

    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (2)")
    wait_for(lambda: count(standby.url) == 2, "a row written on the primary appears on the standby")

    with psycopg.connect(standby.url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO items VALUES (99)")
        conn.execute("SELECT pg_wal_replay_pause()")
        wait_for(lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == ("paused",),
                 "replay pauses")
        with psycopg.connect(primary.url, autocommit=True) as writer:
            writer.execute("INSERT INTO items VALUES (3)")
            lsn = writer.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        # Received but not replayed: the row stays invisible while paused.
        wait_for(lambda: conn.execute("SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (lsn,)).fetchone() == (True,),
                 "the standby receives the new WAL")
        assert count(standby.url) == 2
        conn.execute("SELECT pg_wal_replay_resume()")
    wait_for(lambda: count(standby.url) == 3, "the row appears once replay resumes")

    assert read_server(standby.data_dir).standby
    assert stop_server(standby.data_dir) is True


def test_replica_refuses_a_folder_that_is_not_empty(primary: ServerInfo, tmp_path: Path) -> None:
    folder = tmp_path / "used"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ServerError, match="not empty: refusing to overwrite"):
        create_replica(primary.url, folder)
    assert (folder / "keep.txt").read_text() == "mine"


def test_replica_says_wrong_password_and_unreachable(primary: ServerInfo, tmp_path: Path) -> None:
    wrong = primary.url.replace(primary.password, "wrong")
    with pytest.raises(ServerError, match="wrong password"):
        create_replica(wrong, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    stop_server(primary.data_dir)
    with pytest.raises(ServerError, match="cannot reach the primary"):
        create_replica(primary.url, tmp_path / "b")
