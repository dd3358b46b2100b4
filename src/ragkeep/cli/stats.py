"""``ragkeep stats``: the operator's metrics (``GET /v3/system/stats``) as rich tables.

``--user ID`` shows one user's figures instead (``GET /v3/system/users/{id}/stats``; a user may
ask for themself). Added to the ``ragkeep`` command by :func:`register` (``cli/main.py`` calls it).
No ``from __future__ import annotations``: typer reads the annotations at run time.
"""

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ragkeep.cli.common import ApiKey, BaseUrl, Connection, Email, Password, call, connect, out
from ragkeep.cli.maintenance import human_bytes


def _num(value: Any, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}"
    return f"{value:,}{suffix}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", min_width=len(title) + 4)  # a narrow table would wrap its title
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    return table


_LATENCY = [("searches", "right"), ("p50 ms", "right"), ("p95 ms", "right"), ("mean ms", "right"),
            ("max ms", "right"), ("vectors/query", "right")]


def _latency_cells(s: dict[str, Any]) -> list[str]:
    return [_num(s["searches"]), _num(s["p50_ms"]), _num(s["p95_ms"]), _num(s["mean_ms"]), _num(s["max_ms"]),
            _num(s["vectors_per_query"])]


def _hours_line(per_hour: list[int], peak: int | None) -> Text:
    busiest = sorted(range(24), key=lambda h: -per_hour[h])[:5]
    parts = [f"{h:02d}h {per_hour[h]:,}" for h in busiest if per_hour[h]]
    return Text(f"peak hour (UTC): {'-' if peak is None else f'{peak:02d}:00'}; busiest: {', '.join(parts) or '-'}")


def system_tables(r: dict[str, Any]) -> list[Any]:
    """Every section of the system stats, one table each."""
    s, req, act, cache, storage, content = (r["searches"], r["requests"], r["active_users"], r["cache"],
                                            r["storage"], r["content"])
    overview = Table(show_header=False, title=f"ragkeep stats, last {r['window_hours']} h (answered by {r['replica']})",
                     title_justify="left")
    overview.add_column(style="bold")
    overview.add_column()
    for key, value in (
        ("searches", f"{s['searches']:,} by {s['users']:,} users ({s['cross_user']:,} cross-user), "
                     f"p50 {_num(s['p50_ms'])} ms, p95 {_num(s['p95_ms'])} ms"),
        ("vectors per query", _num(s["vectors_per_query"])),
        ("requests", f"{req['requests']:,} ({req['errors']:,} errors, {req['server_errors']:,} server errors), "
                     f"p95 {_num(req['p95_ms'])} ms"),
        ("active users",
         f"{act['current_hour']:,} this hour, {act['current_day']:,} today, {act['window']:,} in the window"),
        ("content", f"{content['users']:,} users, {content['documents']:,} documents, {content['chunks']:,} chunks"),
        ("storage", f"{human_bytes(storage['total_bytes'])}"
                    + (f", {human_bytes(storage['growth_bytes_per_day'])}/day" if storage["growth_bytes_per_day"]
                       is not None else "")),
        ("cache hit (database)", _ratio(cache["database"]["hit_ratio"])),
    ):
        overview.add_row(key, Text(value))
    out: list[Any] = [overview]

    top = _table("query latency per user (top by searches)", [("user", "left"), *_LATENCY, ("chunks", "right")])
    for u in s.get("top_users") or []:
        top.add_row(Text(u["email"] or str(u["user_id"])), *_latency_cells(u), _num(u["chunks"]))
    plans = _table("searches by plan", [("kind", "left"), ("strategy", "left"), *_LATENCY, ("fallbacks", "right")])
    for p in s["by_plan"]:
        plans.add_row(p["kind"], p["strategy"], *_latency_cells(p), _num(p["fallbacks"]))
    out += [top, plans, _hours_line(s["by_hour_of_day"], s["peak_hour"])]

    routes = _table("requests per route", [("method", "left"), ("route", "left"), ("requests", "right"),
                                           ("errors", "right"), ("p50 ms", "right"), ("p95 ms", "right"),
                                           ("peak hour", "right")])
    for x in req["routes"]:
        routes.add_row(x["method"], Text(x["route"]), _num(x["requests"]), _num(x["errors"]), _num(x["p50_ms"]),
                       _num(x["p95_ms"]), "-" if x["peak_hour"] is None else f"{x['peak_hour']:02d}h")
    days = _table("active users per day (UTC)", [("day", "left"), ("users", "right")])
    for d in act["per_day"][-14:]:
        days.add_row(str(d["day"])[:10], _num(d["users"]))
    out += [routes, days]

    hits = _table("cache hit rates", [("what", "left"), ("hits", "right"), ("reads", "right"), ("hit rate", "right"),
                                      ("scans", "right"), ("tuples/scan", "right")])
    hits.add_row("database", _num(cache["database"]["blks_hit"]), _num(cache["database"]["blks_read"]),
                 _ratio(cache["database"]["hit_ratio"]), "", "")
    for part, v in cache["chunks"].items():
        hits.add_row(f"chunks {part}", _num(v["blks_hit"]), _num(v["blks_read"]), _ratio(v["hit_ratio"]), "", "")
    for i in cache["chunk_indexes"]:
        hits.add_row(Text(f"{i['index']} ({i['method']})"), _num(i["blks_hit"]), _num(i["blks_read"]),
                     _ratio(i["hit_ratio"]), _num(i["scans"]), _num(i["tuples_per_scan"]))
    inst = _table("instances", [("replica", "left"), ("memory", "right"), ("CPU", "right"), ("threads", "right"),
                                ("host memory free", "right"), ("seen", "left")])
    for i in r["instances"]:
        inst.add_row(Text(i["replica"] + (" (this)" if i["this"] else "")), human_bytes(i["rss_bytes"]),
                     f"{i['cpu_percent']:.1f} %", _num(i["threads"]),
                     f"{human_bytes(i['memory_available_bytes'])} of {human_bytes(i['memory_total_bytes'])}",
                     str(i["seen_at"]))
    sizes = _table("storage", [("table", "left"), ("table", "right"), ("indexes", "right"), ("total", "right"),
                               ("growth in window", "right"), ("rows (est.)", "right")])
    for t in storage["tables"][:15]:
        sizes.add_row(t["table"], human_bytes(t["table_bytes"]), human_bytes(t["index_bytes"]),
                      human_bytes(t["total_bytes"]), human_bytes(t["growth_bytes"]) or "-", _num(t["est_rows"]))
    users = _table("documents and chunks per user", [("user", "left"), ("documents", "right"), ("chunks", "right")])
    for u in content["per_user"]:
        users.add_row(Text(u["email"] or str(u["user_id"])), _num(u["documents"]), _num(u["chunks"]))
    return [*out, hits, inst, sizes, users]


def user_tables(r: dict[str, Any]) -> list[Any]:
    s, req = r["searches"], r["requests"]
    head = Table(show_header=False, title=f"{r['email']} ({r['user_id']}), last {r['window_hours']} h",
                 title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    for key, value in (
        ("documents / chunks", f"{r['documents']:,} / {r['chunks']:,}"),
        ("searches", f"{s['searches']:,}, p50 {_num(s['p50_ms'])} ms, p95 {_num(s['p95_ms'])} ms, "
                     f"max {_num(s['max_ms'])} ms"),
        ("vectors per query", _num(s["vectors_per_query"])),
        ("requests", f"{req['requests']:,} ({req['errors']:,} errors) in {req['active_hours']:,} active hours"),
    ):
        head.add_row(key, Text(value))
    plans = _table("searches by plan", [("kind", "left"), ("strategy", "left"), *_LATENCY])
    for p in s["by_plan"]:
        plans.add_row(p["kind"], p["strategy"], *_latency_cells(p))
    days = _table("per day (UTC)", [("day", "left"), ("searches", "right"), ("requests", "right")])
    for d in r["per_day"][-14:]:
        days.add_row(str(d["day"])[:10], _num(d["searches"]), _num(d["requests"]))
    return [head, plans, _hours_line(s["by_hour_of_day"], s["peak_hour"]), days]


def register(app: typer.Typer) -> None:
    """Add ``stats`` to the ``ragkeep`` command."""
    import json

    @app.command()
    def stats(
        user: Annotated[
            str | None, typer.Option("--user", "-u", help="One user's figures (a user id; yourself unless superuser).")
        ] = None,
        window_hours: Annotated[
            int, typer.Option("--window-hours", "-w", min=1, max=8784, help="Hours back the figures cover.")
        ] = 24,
        top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Users to list.")] = 10,
        as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON response.")] = False,
        base_url: BaseUrl = None,
        api_key: ApiKey = None,
        email: Email = None,
        password: Password = None,
    ) -> None:
        """Query latency per user, vectors per query, cache hit rates, memory/CPU per replica, storage
        growth, active users, peak hours and routes, documents and chunks per user."""
        client = connect(Connection(base_url, api_key, email, password))
        with client:
            if user is not None:
                result = call("stats", client.system.user_stats, user, window_hours=window_hours)["results"]
            else:
                result = call("stats", client.system.stats, window_hours=window_hours, top=top)["results"]
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        out().print(Group(*(user_tables(result) if user is not None else system_tables(result))))
