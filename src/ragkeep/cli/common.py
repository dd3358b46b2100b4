"""What every ``ragkeep`` command shares: output, failing with an exit code, calling the server,
and the connection options (``--base-url``, ``--api-key``, ``--email``, ``--password``).

The CLI talks to the server through :mod:`ragkeep.client` only; the server's own packages are not
imported here (``serve`` alone starts one, lazily, in :mod:`.main`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from ragkeep.client import Client
    from ragkeep.config import Settings


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


def load_settings_or_exit(config: Path | None = None) -> Settings:
    from ragkeep.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as e:
        fail(str(e), 2)


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
        settings = load_settings_or_exit()
    base_url = conn.base_url or default_base_url(settings)  # type: ignore[arg-type]
    try:
        if conn.api_key:
            return Client(base_url, api_key=conn.api_key)
        if conn.email or conn.password:
            if not (conn.email and conn.password):
                missing = "--password (or RAGKEEP_PASSWORD)" if conn.email else "--email (or RAGKEEP_EMAIL)"
                fail(f"{missing} is needed with {'--email' if conn.email else '--password'}", 2)
            return Client(base_url, email=conn.email, password=conn.password)
        if settings is None:
            settings = load_settings_or_exit()
        admin = admin_credentials(settings)
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
