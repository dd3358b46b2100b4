"""Configuration: one TOML file with R2R-style sections, plus ``RAGKEEP_*`` environment overrides.

Everything is validated at start-up: an unknown key or a bad value stops the server with a
message that names the key and the file, because a typo that is silently ignored is a setting
the operator believes in and does not have.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from croniter import croniter
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PORT = 7272


class ConfigError(Exception):
    """Raised when the configuration cannot be used; the message says what to fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AppConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    #: Where data, the embedded database and generated secrets live.
    home: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("ragkeep")))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: On SIGTERM, seconds this process keeps serving while ``/v3/health/ready`` answers 503, so a
    #: balancer or orchestrator polling it stops sending before the port closes (HAProxy's
    #: ``fall 2`` at ``inter 1s``: 2 s). 0 closes the port at once (HAProxy retries refused
    #: connections on another server anyway).
    shutdown_delay_seconds: float = Field(0.0, ge=0, le=300)
    #: Then: seconds requests in flight and background uploads get to finish. Uploads still
    #: running after it are cancelled and recorded failed ("upload again"). Keep the delay plus
    #: this under the orchestrator's kill timeout (Docker's stop_grace_period, 10 s by default).
    shutdown_grace_seconds: float = Field(20.0, ge=0, le=3600)


_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _table_name(value: str) -> str:
    if not _TABLE_NAME.match(value):
        raise ValueError(f"not a table name: {value!r} (lower-case letters, digits and _)")
    return value


class TableThreshold(_Section):
    """When a scheduled VACUUM bothers with one table (unset keys fall back to the section's)."""

    min_dead_tuples: int | None = Field(None, ge=0)
    min_dead_share: float | None = Field(None, ge=0, le=1)


class MaintenanceConfig(_Section):
    """``[database.maintenance]``: scheduled VACUUM and the REINDEX advice (docs/maintenance.md)."""

    #: 5-field cron ("0 3 * * *"), or 6 fields whose last one is seconds ("* * * * * */10").
    vacuum_schedule: str | None = None
    vacuum_analyze: bool = True
    #: FULL rewrites every table under an exclusive lock (reads and writes wait): opt-in only.
    vacuum_full: bool = False
    #: Tables a scheduled VACUUM covers; empty = every table in ragkeep's schema.
    vacuum_tables: list[str] = Field(default_factory=list)
    #: A scheduled VACUUM skips a table unless it has at least this many dead tuples ...
    min_dead_tuples: int = Field(0, ge=0)
    #: ... and at least this share of its tuples dead (0-1). Manual runs ignore both.
    min_dead_share: float = Field(0.0, ge=0, le=1)
    #: Per-table overrides of the two above, e.g. ``[database.maintenance.thresholds.chunks]``.
    thresholds: dict[str, TableThreshold] = Field(default_factory=dict)
    #: Recommend ``REINDEX INDEX CONCURRENTLY`` of the chunks' vector indexes when this share of
    #: chunks is dead (a large delete not vacuumed yet) ...
    reindex_dead_share: float = Field(0.2, gt=0, le=1)
    #: ... and at least this many chunks are (small tables are cheap to VACUUM either way).
    reindex_min_dead_tuples: int = Field(10_000, ge=0)
    #: Run the recommended REINDEX at the next scheduled tick, before its VACUUM.
    auto_reindex: bool = False

    @field_validator("vacuum_tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_table_name(v) for v in value))

    @field_validator("thresholds")
    @classmethod
    def _threshold_tables(cls, value: dict[str, TableThreshold]) -> dict[str, TableThreshold]:
        for name in value:
            _table_name(name)
        return value

    @field_validator("vacuum_schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = value.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(value):
            raise ValueError(f"not a 5- or 6-field cron expression: {value!r} (e.g. '0 3 * * *')")
        return value


class DatabaseServerConfig(_Section):
    """``[database.server]``: the standalone PostgreSQL of ``ragkeep db start`` (docs/scaling.md)."""

    #: Its data folder; defaults to ``<home>/pgserver``.
    data_dir: Path | None = None
    #: Its TCP port; 0 picks a free one at the first start (kept for later starts).
    port: int = Field(5433, ge=0, le=65535)
    #: listen_addresses: "127.0.0.1", "*" for every interface, or addresses separated by commas.
    listen: str = Field("127.0.0.1", min_length=1)


class DatabaseConfig(_Section):
    #: A PostgreSQL URL. When empty, ragkeep starts its own embedded PostgreSQL.
    url: str | None = None
    #: The password, for a URL without one: kept out of the URL so a Docker secret can hold it
    #: alone (``RAGKEEP_DATABASE_PASSWORD_FILE``). A password in the URL wins.
    password: str | None = None
    #: Data folder of the embedded PostgreSQL; defaults to ``<home>/pgdata``.
    data_dir: Path | None = None
    pool_min_size: int = Field(2, ge=1)
    pool_max_size: int = Field(10, ge=1)
    #: How long a request waits for a free pool connection before a 503 (database up, pool busy).
    pool_timeout_seconds: float = Field(10.0, gt=0)
    #: libpq connect_timeout for every connection (unless the URL sets one); libpq's minimum is 2.
    connect_timeout_seconds: int = Field(5, ge=2)
    #: statement_timeout of the request pool's connections (0: none); maintenance and index
    #: builds use connections of their own and are not limited. A query cancelled by it is a 503.
    statement_timeout_seconds: float = Field(60.0, ge=0)
    #: Restart the embedded PostgreSQL when it dies (checked twice a second; ignored for a URL).
    supervise_embedded: bool = True
    #: shared_buffers of the embedded server (ignored for an external database).
    embedded_shared_buffers: str = "512MB"
    #: Hot standbys of the primary for searches and lists (docs/scaling.md); every write goes to
    #: ``url``. In the environment: ``RAGKEEP_DATABASE__READ_URLS``, comma-separated or a JSON list.
    read_urls: list[str] = Field(default_factory=list)
    #: A standby further behind than this is out of rotation: its reads go to the primary.
    max_replica_lag_seconds: float = Field(5.0, gt=0)
    #: How often each standby's state (reachable, in recovery, replayed position) is checked.
    replica_check_seconds: float = Field(0.5, gt=0)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    server: DatabaseServerConfig = Field(default_factory=DatabaseServerConfig)

    @field_validator("read_urls", mode="before")
    @classmethod
    def _read_urls(cls, value: object) -> object:
        """An environment variable gives a string: a JSON list, or URLs separated by commas."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value

    @model_validator(mode="after")
    def _pool(self) -> DatabaseConfig:
        if self.pool_max_size < self.pool_min_size:
            raise ValueError("pool_max_size must be >= pool_min_size")
        return self

    def connection_url(self) -> str | None:
        """``url`` with ``password`` in it when the URL has none (libpq: a ``password`` parameter)."""
        return self._with_password(self.url) if self.url else self.url

    def read_connection_urls(self) -> list[str]:
        """``read_urls``, each with ``password`` when it has none (a standby has the primary's roles)."""
        return [self._with_password(u) for u in self.read_urls]

    def _with_password(self, url: str) -> str:
        if not self.password or conninfo_to_dict(url).get("password"):
            return url
        return make_conninfo(url, password=self.password)


class EmbeddingConfig(_Section):
    #: ``minilm``: the bundled all-MiniLM-L6-v2 (ONNX, int8, offline).
    #: ``openai``: any OpenAI-compatible ``/embeddings`` endpoint.
    provider: Literal["minilm", "openai"] = "minilm"
    model: str = "all-MiniLM-L6-v2"
    #: Required for ``openai``; fixed at 384 for ``minilm``.
    dimensions: int | None = Field(None, ge=1, le=16000)
    base_url: str | None = None
    api_key: str | None = None
    #: Texts per model call, after sorting by length (bench/ingest.py --tune measures the choice).
    batch_size: int = Field(8, ge=1, le=4096)
    #: Intra-op threads of ONNX Runtime; 0 lets it use every core. Threads never spin while idle.
    threads: int = Field(0, ge=0, le=256)
    #: The model's window in tokens, special tokens included: chunks are cut to fit it. For
    #: ``openai``, the remote model's window (default 8191).
    max_tokens: int = Field(256, ge=8)
    #: ``openai`` only: the model's ``tokenizer.json`` (Hugging Face format) to count tokens with;
    #: without it, MiniLM's WordPiece tokenizer stands in (it errs towards more tokens).
    tokenizer: Path | None = None
    #: Query vectors kept in an LRU cache, so a repeated search skips the model; 0 turns it off.
    query_cache_size: int = Field(1024, ge=0, le=1_000_000)
    timeout_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _provider(self) -> EmbeddingConfig:
        if self.provider == "openai":
            missing = [k for k in ("base_url", "dimensions") if getattr(self, k) in (None, "")]
            if missing:
                raise ValueError(f"the openai provider needs {', '.join(missing)}")
        elif self.dimensions not in (None, 384):
            raise ValueError("the minilm provider has 384 dimensions; remove 'dimensions' or set 384")
        return self


class IngestionConfig(_Section):
    #: Chunk size in tokens of the embedding model's tokenizer, its special tokens included; no
    #: chunk is ever longer than the model's window. Unset: 256, or the window if smaller.
    #: Cuts prefer paragraphs, then sentences, then words.
    chunk_size: int | None = Field(None, ge=16, le=100_000)
    #: Tokens each chunk repeats from the end of the previous one.
    chunk_overlap: int = Field(32, ge=0)
    max_file_size_bytes: int = Field(50 * 1024 * 1024, ge=1)
    #: Files larger than this are processed in a background task; the upload answers at once.
    background_threshold_bytes: int = Field(256 * 1024, ge=0)
    #: Parses run in worker processes (ingest/isolation.py): at most this many at once.
    parse_workers: int = Field(2, ge=1, le=64)
    #: Wall-clock seconds one parse may take; the worker is then killed and the upload refused (422).
    parse_timeout_seconds: float = Field(120.0, gt=0)
    #: Memory (MB) a parse may allocate on top of an idle worker's (RLIMIT_AS); 0 = no limit.
    parse_memory_mb: int = Field(1024, ge=0)
    #: Bytes a .docx may inflate to, all zip members together (checked before inflating, then counted).
    max_decompressed_bytes: int = Field(256 * 1024 * 1024, ge=1)
    #: XML/HTML elements, JSON values or CSV rows one document may hold.
    max_elements: int = Field(1_000_000, ge=1)
    #: Pages one PDF may have.
    max_pages: int = Field(5_000, ge=1)
    #: How often each replica fails the documents in flight whose replica is gone (ingest/liveness.py).
    sweep_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _overlap(self) -> IngestionConfig:
        if self.chunk_size is not None and self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    def chunk_tokens(self, window: int) -> int:
        """The chunk size for a model reading ``window`` tokens; an explicit size above it is an error
        (a chunk the model cannot read whole is text that can never be found by meaning).

        The default, 256, is all-MiniLM-L6-v2's window (sentence-transformers' max_seq_length);
        larger remote models keep it too, as a passage of that size is what retrieval returns.
        """
        default = min(256, window)
        if self.chunk_size is None:
            return default
        if self.chunk_size > window:
            raise ConfigError(
                f"ingestion.chunk_size ({self.chunk_size} tokens) is larger than the embedding model's window "
                f"({window} tokens, embedding.max_tokens): lower it, or remove it to use {default}"
            )
        return self.chunk_size


class SearchConfig(_Section):
    """How the planner picks between an exact scan and a vector index, per search."""

    #: Scopes holding at most this many vectors are searched exactly (recall 1.0); larger ones use
    #: the owner's partial index or the global one. bench/filtered.py (200k vectors, 2 cores): an
    #: exact scan costs ~1.2 ms per 1,000 vectors; an iterative HNSW scan ~4-10 ms whatever the
    #: scope; they cross at ~1,800 vectors.
    exact_threshold: int = Field(2_000, ge=0)
    #: pgvector iterative index scans when a filter meets an index: ``relaxed_order`` (re-sorted
    #: exactly afterwards), ``strict_order``, or ``off`` (R2R's plan: may return short results).
    iterative_scan: Literal["relaxed_order", "strict_order", "off"] = "relaxed_order"
    #: Upper bound on tuples an iterative HNSW scan visits (hnsw.max_scan_tuples).
    max_scan_tuples: int = Field(20_000, ge=1)
    #: hnsw.ef_search when a search does not set chunk_settings.ef_search. bench/filtered.py:
    #: recall@10 0.86-0.96 at R2R's 40, 0.967 unfiltered at 100, >= 0.973 in every class at 150.
    ef_search: int = Field(150, ge=1, le=1000)
    #: ivfflat.probes when a search does not set chunk_settings.probes.
    probes: int = Field(10, ge=1, le=32768)
    #: When an index scan returns fewer rows than asked, run the exact scan: a search never comes
    #: back short while enough rows match.
    exact_fallback: bool = True


class IndicesConfig(_Section):
    """Building, repairing, warming and promoting vector indexes."""

    #: Ceiling for maintenance_work_mem of a build session, in MiB (the HNSW graph should fit).
    build_memory_cap_mb: int = Field(2048, ge=64)
    #: Parallel maintenance workers per build; None = one fewer than the CPU count (at least 0).
    build_parallel_workers: int | None = Field(None, ge=0, le=64)
    #: What to do at start with an INVALID vector index left by an interrupted build.
    on_invalid: Literal["rebuild", "drop", "report"] = "rebuild"
    #: Load every vector index into shared buffers (pg_prewarm) at start and after each build.
    prewarm: bool = True
    #: Promote users whose vector count passes this to their own partial HNSW index; None = off.
    auto_promote_threshold: int | None = Field(None, ge=1)
    #: Hour of day (UTC) for automatic promotions; None = the advisor's off-peak hour.
    auto_promote_hour: int | None = Field(None, ge=0, le=23)


class AuthConfig(_Section):
    #: Signs JWTs. When empty, one is generated once and kept in the database,
    #: so that every replica of one database accepts the same tokens.
    secret_key: str | None = None
    access_token_minutes: int = Field(60, ge=1)
    refresh_token_days: int = Field(7, ge=1)
    admin_email: str | None = None
    admin_password: str | None = None
    #: Self-registration through ``POST /v3/users`` (R2R allows it by default).
    allow_registration: bool = True
    #: Failed log-ins before log-in answers 429 (docs/security.md), counted over a window that
    #: starts at the first failure; 0 turns a limit off. Per account and client address ...
    login_failures_per_account_address: int = Field(10, ge=0)
    #: ... per account from any address but those it logged in from before ...
    login_failures_per_account: int = Field(50, ge=0)
    #: ... and per client address over every account (but those it logged in to before).
    login_failures_per_address: int = Field(100, ge=0)
    login_failure_window_seconds: int = Field(900, ge=1, le=86_400)


class MetricsConfig(_Section):
    """``[metrics]``: Prometheus ``/metrics``, activity flushes, storage snapshots, roll-ups (docs/metrics.md)."""

    #: Serve ``GET /metrics`` (Prometheus text format; this process's own metrics plus the database's).
    prometheus: bool = True
    #: When set, ``/metrics`` wants ``Authorization: Bearer <token>`` (Prometheus' ``authorization``);
    #: when not, it answers loopback clients only.
    prometheus_token: str | None = None
    #: Seconds between writes of the request and search activity and this process's memory/CPU row.
    flush_seconds: float = Field(5.0, gt=0, le=300)
    #: Minutes between storage snapshots (one replica takes each; it also runs the roll-ups).
    snapshot_minutes: int = Field(10, ge=1, le=1440)
    #: Hourly activity rows older than this roll up into daily rows. The index advisor reads 7
    #: days of hourly rows, hence at least 8.
    hourly_retention_days: int = Field(14, ge=8, le=366)
    #: Daily activity rows older than this are deleted.
    daily_retention_days: int = Field(400, ge=8, le=36600)
    #: Storage snapshots older than this are thinned to the first of each UTC day ...
    storage_detail_days: int = Field(7, ge=1, le=366)
    #: ... and deleted past this.
    storage_retention_days: int = Field(400, ge=1, le=36600)
    #: A replica whose memory/CPU row is older than this is reported as gone.
    instance_timeout_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _retention(self) -> MetricsConfig:
        if self.daily_retention_days < self.hourly_retention_days:
            raise ValueError("daily_retention_days must be >= hourly_retention_days")
        if self.storage_retention_days < self.storage_detail_days:
            raise ValueError("storage_retention_days must be >= storage_detail_days")
        return self


class RouteLimitConfig(_Section):
    """One route's request limits per user, e.g. ``[limits.route_limits."/v3/retrieval/search"]``."""

    #: Requests a user may make to this route in one minute (UTC clock minute).
    route_per_min: int | None = Field(None, ge=1)
    #: Requests a user may make to this route in one calendar month (UTC).
    monthly_limit: int | None = Field(None, ge=1)


class LimitsConfig(_Section):
    """``[limits]``: per-user quotas and request rates, with R2R's names (docs/limits.md).

    Every value is a default a superuser can change per user with ``limits_overrides``.
    """

    max_documents: int = Field(10_000, ge=0)
    max_chunks: int = Field(10_000_000, ge=0)
    max_collections: int = Field(5_000, ge=0)
    #: Bytes per upload; unset: ``ingestion.max_file_size_bytes``, which also caps every value here.
    max_upload_size: int | None = Field(None, ge=1)
    #: Per file type (extension without the dot, e.g. ``pdf = 10485760``).
    max_upload_size_by_type: dict[str, int] = Field(default_factory=dict)
    #: Requests per user and UTC clock minute over all routes. High by default: it stops a
    #: runaway client, not normal use (R2R's 60 would throttle a folder upload).
    global_per_min: int = Field(6_000, ge=1)
    #: Requests per user, minute and route, for every route without its own ``route_limits``.
    route_per_min: int | None = Field(None, ge=1)
    #: Requests per user and UTC calendar month over all routes.
    monthly_limit: int = Field(100_000_000, ge=1)
    #: Per route template, e.g. ``"/v3/retrieval/search"`` or ``"/v3/documents/{document_id}"``.
    route_limits: dict[str, RouteLimitConfig] = Field(default_factory=dict)
    #: Superusers are neither counted nor limited.
    superusers_exempt: bool = True

    @field_validator("max_upload_size_by_type")
    @classmethod
    def _types(cls, value: dict[str, int]) -> dict[str, int]:
        for ext, size in value.items():
            if not re.fullmatch(r"[a-z0-9]{1,16}", ext):
                raise ValueError(f"file types are lower-case extensions without the dot: {ext!r}")
            if size < 1:
                raise ValueError(f"{ext}: must be at least 1 byte")
        return value

    @field_validator("route_limits")
    @classmethod
    def _routes(cls, value: dict[str, RouteLimitConfig]) -> dict[str, RouteLimitConfig]:
        for route in value:
            if not route.startswith("/v3/"):
                raise ValueError(f"route templates start with /v3/: {route!r}")
        return value


class Settings(_Section):
    app: AppConfig = Field(default_factory=AppConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    ingestion: IngestionConfig = Field(default_factory=IngestionConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    indices: IndicesConfig = Field(default_factory=IndicesConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @property
    def pgdata(self) -> Path:
        return self.database.data_dir or self.app.home / "pgdata"

    @property
    def pgserver(self) -> Path:
        """The data folder of ``ragkeep db start``."""
        return self.database.server.data_dir or self.app.home / "pgserver"


#: Environment variables with a name of their own (the ones the README documents).
_NAMED_ENV = {
    "RAGKEEP_HOME": ("app", "home"),
    "RAGKEEP_HOST": ("app", "host"),
    "RAGKEEP_PORT": ("app", "port"),
    "RAGKEEP_DATABASE_URL": ("database", "url"),
    "RAGKEEP_DATABASE_PASSWORD": ("database", "password"),
    "RAGKEEP_ADMIN_EMAIL": ("auth", "admin_email"),
    "RAGKEEP_ADMIN_PASSWORD": ("auth", "admin_password"),
    "RAGKEEP_SECRET_KEY": ("auth", "secret_key"),
}


#: ``<NAME>_FILE`` for a named variable: its value is the file's content (Docker and Kubernetes
#: secrets are files), one trailing newline removed.
_FILE_SUFFIX = "_FILE"


def _read_secret_file(name: str, path: str, environ: dict[str, str]) -> str:
    plain = name[: -len(_FILE_SUFFIX)]
    if environ.get(plain):
        raise ConfigError(f"both {plain} and {name} are set: keep one")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"environment variable {name}: cannot read {path}: {e.strerror or e}") from None
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _env_overrides(environ: dict[str, str]) -> list[tuple[tuple[str, ...], str, str]]:
    """``RAGKEEP_SECTION__KEY=value`` (double underscore between levels), the named ones, and
    ``<named>_FILE=path`` (the value read from a file)."""
    out: list[tuple[tuple[str, ...], str, str]] = []
    for name, value in sorted(environ.items()):
        if not name.startswith("RAGKEEP_") or value == "":
            continue
        if name.endswith(_FILE_SUFFIX) and name[: -len(_FILE_SUFFIX)] in _NAMED_ENV:
            secret = _read_secret_file(name, value, environ)
            out.append((_NAMED_ENV[name[: -len(_FILE_SUFFIX)]], secret, name))
        elif name in _NAMED_ENV:
            out.append((_NAMED_ENV[name], value, name))
        elif "__" in name:
            out.append((tuple(p.lower() for p in name[len("RAGKEEP_") :].split("__")), value, name))
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read ``path`` (or ``$RAGKEEP_CONFIG``), apply environment overrides, validate."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("RAGKEEP_CONFIG")
    data: dict[str, Any] = {}
    source = "defaults"
    if path:
        p = Path(path)
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"configuration file not found: {p}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p} is not valid TOML: {e}") from e
    try:
        Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None

    env_names = []
    for keys, value, name in _env_overrides(environ):
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: {'.'.join(keys)} is not a section")
        node[keys[-1]] = value
        env_names.append(name)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        where = source + (f" (with environment {', '.join(env_names)})" if env_names else "")
        raise ConfigError(_format_errors(e, where)) from None
