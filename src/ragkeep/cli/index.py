"""``ragkeep index``: create (with a progress bar until the index is valid), list, warm and drop
vector indexes through the server's ``/v3/indices`` (superuser credentials, as ``connect()`` finds them).

Exit codes as for the rest of the CLI: 0 success, 1 the server refused or the build failed,
2 a usage error (bad option, a 422 from the server).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ragkeep.cli.common import ApiKey, BaseUrl, Connection, Email, Password, call, connect, err, fail, out

if TYPE_CHECKING:
    from ragkeep.client import Client

app = typer.Typer(name="index", help="Vector indexes: create, list, warm, drop.", no_args_is_help=True)


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""


def wait_until_valid(client: Client, table: str, name: str, poll: float = 0.5) -> dict[str, Any]:
    """Poll the index and draw its build progress until it is valid; exit 1 if the build failed."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=err(),
        transient=True,
    ) as progress:
        task = progress.add_task(f"{name}: starting", total=100)
        while True:
            ix: dict[str, Any] = call("reading the index", client.indices.retrieve, name, table)["results"]["index"]
            build = ix.get("build") or {}
            if ix["status"] == "valid" and build.get("state") != "building":
                progress.update(task, completed=100, description=f"{name}: valid")
                return ix
            if ix["status"] == "invalid" or build.get("state") == "failed":
                progress.stop()
                reason = build.get("error") or "the build stopped and left an INVALID index"
                fail(f"building {name} failed: {reason}. Drop it with: ragkeep index drop {table} {name}")
            p = ix.get("progress") or {}
            desc = f"{name}: {p.get('phase') or ix['status']}"
            if p.get("tuples_done"):
                desc += f" ({p['tuples_done']:,} tuples)"
            progress.update(task, description=desc, completed=p.get("percent") or 0)
            time.sleep(poll)


@app.command()
def create(
    method: Annotated[str, typer.Option(help="hnsw, ivfflat or auto.")] = "hnsw",
    measure: Annotated[
        str, typer.Option(help="cosine_distance, l2_distance, max_inner_product or l1_distance.")
    ] = "cosine_distance",
    m: Annotated[int | None, typer.Option("--m", help="HNSW: links per node (2-100, default 16).")] = None,
    ef_construction: Annotated[
        int | None, typer.Option("--ef-construction", help="HNSW: candidate list while building (default 64).")
    ] = None,
    n_lists: Annotated[int | None, typer.Option("--n-lists", help="IVFFlat: number of lists (default 100).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Index name (default: R2R's format).")] = None,
    table: Annotated[str, typer.Option("--table", help="The table: vectors (alias chunks).")] = "vectors",
    owner: Annotated[
        str | None, typer.Option("--owner", help="Build a partial index over this user's vectors only (a UUID).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until the index is valid.")] = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """Start building a vector index (in the background on the server)."""
    arguments: dict[str, int] = {
        key: value
        for key, value in (("m", m), ("ef_construction", ef_construction), ("n_lists", n_lists))
        if value is not None
    }
    config: dict[str, Any] = {"table_name": table, "index_method": method, "index_measure": measure}
    if arguments:
        config["index_arguments"] = arguments
    if name:
        config["index_name"] = name
    filters = None
    if owner is not None:
        try:
            filters = {"owner_id": {"$eq": str(uuid.UUID(owner))}}
        except ValueError:
            fail(f"--owner: not a valid UUID: {owner!r}", 2)
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        created = call("creating the index", client.indices.create, config, filters=filters)["results"]
        index_name = created.get("index_name") or created["message"].split()[1]
        plan = created.get("build") or {}
        if plan:
            err().print(
                Text(
                    f"{plan.get('rows', 0):,} rows, graph estimate {_size(plan.get('estimate_bytes'))}, "
                    f"maintenance_work_mem {plan.get('maintenance_work_mem_mb')} MB, "
                    f"{plan.get('parallel_workers')} parallel workers",
                    style="dim",
                )
            )
        if plan.get("warning"):
            err().print(Text(f"warning: {plan['warning']}", style="yellow"), soft_wrap=True)
        if not wait:
            out().print(f"building {index_name}; follow it with: ragkeep index list")
            return
        ix = wait_until_valid(client, table, index_name)
    out().print(Text(f"{index_name} is valid ({_size(ix.get('size_in_bytes'))})", style="bold green"))


@app.command("list")
def list_(
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """The vector indexes: status, progress, size, owner, warm state and share in shared buffers."""
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        rows = [i["index"] for i in call("listing indexes", client.indices.list)["results"]["indices"]]
    if not rows:
        out().print("no vector indexes")
        return
    table = Table()
    for col in ("name", "table", "method", "arguments", "status", "size", "owner", "warm", "in buffers"):
        table.add_column(col, overflow="fold")
    for ix in rows:
        status = ix["status"]
        if ix.get("progress"):
            p = ix["progress"]
            pct = "" if p.get("percent") is None else f", {p['percent']}%"
            status += f" ({p['phase']}{pct})"
        warm = (ix.get("warm") or {}).get("state") or ""
        buffers = ix.get("shared_buffers")
        share = "n/a" if buffers is None or buffers.get("share") is None else f"{100 * buffers['share']:.0f}%"
        args = ", ".join(f"{k}={v}" for k, v in (ix.get("arguments") or {}).items())
        style = {"valid": "green", "building": "yellow", "invalid": "red"}.get(ix["status"], "")
        table.add_row(
            ix["name"], ix["table_name"], ix["method"], args, Text(status, style=style),
            _size(ix.get("size_in_bytes")), str(ix.get("owner_id") or ""), warm, share,
        )
    out().print(table)


@app.command()
def warm(
    table: Annotated[str, typer.Argument(help="The table (vectors).")],
    name: Annotated[str, typer.Argument(help="The index name.")],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """Load an index into shared buffers now (pg_prewarm)."""
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        ix = call("warming the index", client.indices.warm, name, table)["results"]["index"]
    state = ix.get("warm") or {}
    buffers = ix.get("shared_buffers") or {}
    share = "" if buffers.get("share") is None else f", {100 * buffers['share']:.0f}% in shared buffers"
    out().print(Text(f"{name} is warm ({state.get('blocks')} blocks loaded{share})", style="bold green"))


@app.command()
def drop(
    table: Annotated[str, typer.Argument(help="The table (vectors).")],
    name: Annotated[str, typer.Argument(help="The index name.")],
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """Drop a vector index (and its per-user registration, for a partial index)."""
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        resp = call("dropping the index", client.indices.delete, name, table)
    out().print(resp["results"]["message"])


@app.command()
def advise(
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON.")] = False,
) -> None:
    """Do you need vector indexes? The vectors, the traffic, and what to build when."""
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        a = call("asking for advice", client.indices.advice)["results"]
    if json_output:
        out().print_json(data=a)
        return
    v, t, rec = a["vectors"], a["traffic"], a["recommendation"]
    pu = v["per_user"]
    out().print(
        f"{v['total']:,} vectors over {v['users']:,} users; per user p50 {pu['p50']:,}, p99 {pu['p99']:,}, "
        f"max {pu['max']:,}; exact-scan threshold {a['exact_threshold']:,}"
    )
    out().print(
        f"last {t['days']} days: {t['searches']:,} searches, {100 * t['cross_user_share']:.0f}% across users, "
        f"exact scans ~{t['exact_ms_per_1000_vectors']:.2f} ms per 1,000 vectors"
    )
    if t["by_scope_size"]:
        table = Table(title="observed latency by scope size (semantic and hybrid)")
        for col in ("vectors in scope", "strategy", "searches", "mean ms", "p95 ms"):
            table.add_column(col, justify="right")
        for r in t["by_scope_size"]:
            lo, hi = r["scope_vectors"]
            p95 = "" if r["p95_ms"] is None else f"<= {r['p95_ms']:g}"
            table.add_row(f"{lo:,}-{hi:,}", r["strategy"], f"{r['searches']:,}", f"{r['mean_ms']:.1f}", p95)
        out().print(table)
    style = {"none": "green", "partial": "yellow", "global": "yellow"}[rec["action"]]
    out().print(Text(f"recommendation: {rec['action']}", style=f"bold {style}") + Text(f" - {rec['reason']}"))
    if rec["builds"]:
        table = Table(title=f"builds to run at {rec['when']}")
        for col in ("scope", "user", "vectors", "m", "ef_construction", "memory", "build time"):
            table.add_column(col)
        for b in rec["builds"]:
            table.add_row(b["scope"], b["email"] or "", f"{b['vectors']:,}", str(b["m"]), str(b["ef_construction"]),
                          _size(b["memory_bytes"]), f"~{b['build_seconds']:,} s")
        out().print(table)
        first = rec["builds"][0]
        owner = f" --owner {first['user_id']}" if first["user_id"] else ""
        out().print(f"start one with: ragkeep index create --m {first['m']} "
                    f"--ef-construction {first['ef_construction']}{owner} --wait")
        for b in rec["builds"]:
            if b.get("memory_warning"):
                out().print(Text(f"warning: {b['memory_warning']}", style="yellow"))
    memory = rec.get("memory") or {}
    if memory.get("warning") and not any(b.get("memory_warning") for b in rec["builds"]):
        out().print(Text(f"warning: {memory['warning']}", style="yellow"))
    isolation = rec.get("isolation") or {}
    if isolation.get("candidates"):
        citus = isolation["mode"] == "citus"
        table = Table(title="power users: " + ("a shard of their own (Citus)" if citus else "their own index"))
        for col in ("user", "vectors", "share of vectors", "share of searches", "now", "to do"):
            table.add_column(col)
        for c in isolation["candidates"]:
            now = (f"shard {c['shard_id']} on {c['node']}" + (" (own)" if c["done"] else " (shared)")) if citus else (
                "own index" if c["done"] else "no own index")
            table.add_row(c["email"] or str(c["user_id"]), f"{c['vectors']:,}", f"{100 * c['vector_share']:.0f}%",
                          f"{100 * c['search_share']:.0f}%", now, "" if c["done"] else c["command"])
        out().print(table)
    if rec["unneeded_indexes"]:
        out().print(f"indexes no search needs now: {', '.join(rec['unneeded_indexes'])}")
