"""``ragkeep tenant``: dedicated capacity for power users, through the server's
``POST /v3/indices/tenants/{user_id}/isolate`` (superuser credentials, as ``connect()`` finds them).

Exit codes as for the rest of the CLI: 0 success, 1 the server refused (unknown user, Citus refused
a step), 2 a usage error (a bad user id or node, a 422 from the server).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.text import Text

from ragkeep.cli.common import ApiKey, BaseUrl, Connection, Email, Password, call, connect, fail, out

app = typer.Typer(name="tenant", help="Power users: their own shard (Citus) or their own index.", no_args_is_help=True)


@app.command()
def isolate(
    user: Annotated[str, typer.Argument(help="The user's id (a UUID; `ragkeep index advise` names candidates).")],
    node: Annotated[
        str | None, typer.Option("--node", help="Citus: move the user's shard to this worker (HOST:PORT).")
    ] = None,
    transfer_mode: Annotated[
        str | None,
        typer.Option("--transfer-mode", help="Citus: block_writes (default), auto or force_logical (logical "
                     "replication, writes go on; managed Citus)."),
    ] = None,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
    email: Email = None,
    password: Password = None,
) -> None:
    """Move a user to a shard of their own (Citus; optionally onto a named worker), or on a single
    node give them their own partial HNSW index (kept if they have one)."""
    try:
        user_id = uuid.UUID(user)
    except ValueError:
        fail(f"USER: not a valid user id (UUID): {user!r}", 2)
    client = connect(Connection(base_url, api_key, email, password))
    with client:
        r = call("isolating the user", client.indices.isolate, user_id, node=node,
                 transfer_mode=transfer_mode)["results"]
    if r["mode"] == "citus":
        done = "isolated to" if r["isolated_now"] else "already on"
        moved = f", moved from {r['moved_from']}" if r["moved_from"] else ""
        out().print(Text(f"user {user_id}: {done} shard {r['shard_id']} on {r['node']}{moved}", style="bold green"))
        out().print(f"shards: {', '.join(f'{t} {s}' for t, s in r['shards'].items())}; "
                    f"vector indexes there: {', '.join(r['indexes']) or 'none'}")
    if r["build"] is not None:
        out().print(f"building the partial index {r['partial_index']} for user {user_id}; "
                    "follow it with: ragkeep index list")
    elif r["mode"] == "single_node":
        out().print(Text(f"user {user_id} keeps their own index {r['partial_index']} ({r['partial_index_status']})",
                         style="bold green"))
