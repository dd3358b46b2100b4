"""``ragkeep vacuum`` and ``ragkeep status``: the maintenance routes from the terminal.

The commands are added to the ``ragkeep`` command by :func:`register` (``cli/main.py`` calls it);
the shared options and helpers come from ``cli/common.py``. (No ``from __future__ import
annotations`` here: typer evaluates the commands' annotations.)
"""

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ragkeep.cli.common import ApiKey, BaseUrl, Connection, Email, Password, call, connect, err, out

if TYPE_CHECKING:
    from ragkeep.client import Client

FINISHED = ("succeeded", "failed", "skipped")


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def describe(run: dict[str, Any], children: list[dict[str, Any]]) -> str:
    """One line for the spinner: what the run is doing now."""
    for child in children:
        if child["status"] == "running":
            current = [i for i in child["items"] if i.get("status") == "running"]
            return f"run {run['id']}: REINDEX CONCURRENTLY {current[0]['index'] if current else '…'}"
    if run["status"] == "queued":
        return f"run {run['id']}: waiting for the maintenance run in progress to finish"
    done = sum(i.get("status") != "running" for i in run["items"])
    current = [i["table"] for i in run["items"] if i.get("status") == "running"]
    return f"run {run['id']}: VACUUM {current[0] if current else '…'} ({done + 1}/{len(run['tables'])})"


def follow(
    client: "Client", run: dict[str, Any], interval: float, on_update: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the run (and its reindex runs) until it has finished."""
    children: list[dict[str, Any]] = []
    while True:
        if run["options"]["reindex"]:
            children = client.system.maintenance_runs(parent_id=run["id"])["results"]
        on_update(describe(run, children))
        if run["status"] in FINISHED:
            return run, children
        time.sleep(interval)
        run = client.system.maintenance_run(run["id"])["results"]


def reindex_table(children: list[dict[str, Any]]) -> Table:
    table = Table(title="REINDEX INDEX CONCURRENTLY", title_justify="left")
    for name, justify in (("index", "left"), ("result", "left"), ("seconds", "right"), ("size before", "right"),
                          ("size after", "right"), ("note", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for child in children:
        for i in child["items"]:
            table.add_row(
                i.get("index"), i.get("status"), _cell(i.get("seconds")), human_bytes(i.get("bytes_before")),
                human_bytes(i.get("bytes_after")), Text(i.get("note") or ""),
            )
        if not child["items"] and child.get("error"):
            table.add_row("", child["status"], "", "", "", Text(child["error"]))
    return table


def vacuum_table(run: dict[str, Any]) -> Table:
    title = "VACUUM" + (" FULL" if run["options"]["full"] else "") + (" ANALYZE" if run["options"]["analyze"] else "")
    table = Table(title=title, title_justify="left")
    for name, justify in (("table", "left"), ("result", "left"), ("dead before", "right"), ("dead after", "right"),
                          ("size before", "right"), ("size after", "right"), ("reclaimed", "right"),
                          ("seconds", "right"), ("note", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i in run["items"]:
        table.add_row(
            i["table"], i.get("status"), _cell(i.get("dead_tuples_before")), _cell(i.get("dead_tuples_after")),
            human_bytes(i.get("bytes_before")), human_bytes(i.get("bytes_after")),
            human_bytes(i.get("bytes_reclaimed")), _cell(i.get("seconds")), Text(i.get("note") or ""),
        )
    return table


def summary_line(run: dict[str, Any], children: list[dict[str, Any]]) -> Text:
    removed = (run["dead_tuples_before"] or 0) - (run["dead_tuples_after"] or 0)
    spent = sum(c["duration_seconds"] or 0 for c in children)
    line = (
        f"run {run['id']} {run['status']} in {run['duration_seconds'] or 0:.2f} s: {removed} dead tuples removed, "
        f"{human_bytes(run['bytes_reclaimed'] or 0)} reclaimed"
        + (f"; reindex took {spent:.2f} s" if children else "")
    )
    if run.get("error"):
        line += f" ({run['error']})"
    return Text(line, style="bold red" if run["status"] == "failed" else "bold")


def register(app: typer.Typer) -> None:
    """Add ``vacuum`` and ``status`` to the ``ragkeep`` command."""

    @app.command()
    def vacuum(
        table: Annotated[
            list[str] | None, typer.Option("--table", "-t", help="Only this table (repeatable; default: all).")
        ] = None,
        full: Annotated[
            bool, typer.Option("--full", help="VACUUM FULL: rewrites each table under an exclusive lock.")
        ] = False,
        analyze: Annotated[
            bool | None, typer.Option("--analyze/--no-analyze", help="Also ANALYZE (default: vacuum_analyze).")
        ] = None,
        reindex: Annotated[
            bool, typer.Option("--reindex", help="REINDEX CONCURRENTLY the vector indexes of chunks first.")
        ] = False,
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run until it ends.")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print the run(s) as JSON.")] = False,
        base_url: BaseUrl = None,
        api_key: ApiKey = None,
        email: Email = None,
        password: Password = None,
    ) -> None:
        """VACUUM now, on the server (superuser). Shows progress, then what each table gained."""
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        client = connect(Connection(base_url, api_key, email, password))
        with client:
            run = call(
                "vacuum", client.system.vacuum, tables=table, analyze=analyze, full=full, reindex=reindex
            )["results"]
            if not wait:
                if as_json:
                    typer.echo(json.dumps(run, indent=2))
                else:
                    out().print(
                        f"maintenance run {run['id']} queued; follow it with GET /v3/system/maintenance/{run['id']}"
                    )
                return
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                console=err(), transient=True,
            ) as progress:
                task = progress.add_task(f"run {run['id']}", total=None)
                run, children = call("vacuum", follow, client, run, 0.3, lambda d: progress.update(task, description=d))
        if as_json:
            typer.echo(json.dumps({"run": run, "reindex_runs": children}, indent=2))
        else:
            if children:
                out().print(reindex_table(children))
            out().print(vacuum_table(run))
            out().print(summary_line(run, children))
        if run["status"] == "failed":
            raise typer.Exit(1)

    @app.command()
    def status(
        as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON response.")] = False,
        base_url: BaseUrl = None,
        api_key: ApiKey = None,
        email: Email = None,
        password: Password = None,
    ) -> None:
        """Version, uptime, database, model, vector indexes and maintenance of the server (superuser)."""
        client = connect(Connection(base_url, api_key, email, password))
        with client:
            result = call("status", client.system.status)["results"]
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        m, db, emb, idx = result["maintenance"], result["database"], result["embedding"], result["vector_indexes"]
        last = m["last_run"]
        advice = m["reindex_advice"]
        table = Table(
            show_header=False, title=f"ragkeep {result['version']} ({result['replica']})", title_justify="left"
        )
        table.add_column(style="bold")
        table.add_column()
        rows = [
            ("uptime", f"{result['uptime_seconds']:.0f} s since {result['started_at']}"),
            ("database", f"{db['kind']} PostgreSQL {db['server_version']}, pgvector {db['pgvector_version']}"),
            ("embedding", f"{emb['model']} ({emb['provider']}, {emb['dimension']} dimensions)"),
            ("vector indexes", f"{idx['total']} ({idx['valid']} valid, {human_bytes(idx['bytes'])})"),
            ("vacuum schedule", m["vacuum_schedule"] or "none (manual only)"),
            ("next run", m["next_run"] or "-"),
            ("last run", f"{last['task']} #{last['id']} {last['status']} at {last['started_at']}" if last else "-"),
            ("reindex advice", ("RECOMMENDED: " if advice["recommended"] else "") + advice["reason"]),
        ]
        for key, value in rows:
            table.add_row(key, Text(str(value)))
        out().print(table)
