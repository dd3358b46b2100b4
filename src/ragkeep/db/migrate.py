"""Versioned schema migrations, applied at start-up by whichever replica gets there first.

Migrations are the numbered ``migrations/NNNN_*.sql`` files; ``{dimension}`` in them stands for
the embedding model's dimension. ``schema_version`` records the ones
applied; a database newer than this code is a refusal to start (an older binary would write rows
the newer schema does not expect), not a crash half-way through a query.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

#: Any constant works; it only has to be the same for every replica.
MIGRATION_LOCK_ID = 0x7261676B  # "ragk"
EXTENSIONS_LOCK_ID = MIGRATION_LOCK_ID + 1

REQUIRED_EXTENSIONS = {"vector": (0, 8)}
OPTIONAL_EXTENSIONS = ("pg_trgm", "pg_prewarm", "pg_stat_statements", "pg_buffercache")


class SchemaError(RuntimeError):
    """The database cannot be used by this version of ragkeep; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


def load_migrations() -> list[Migration]:
    folder = resources.files("ragkeep.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


@functools.cache
def latest_version() -> int:
    """The schema version this code expects (its newest migration); readiness compares it."""
    return load_migrations()[-1].version


async def schema_version(conn: psycopg.AsyncConnection) -> int:
    """The newest migration applied (0: none): one cheap query, for readiness checks."""
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def ensure_extensions(conn: psycopg.Connection) -> list[str]:
    """Create the extensions ragkeep uses; fail clearly on a missing required one, warn otherwise.

    Under an advisory lock: replicas starting together on a new database would otherwise race on
    ``CREATE EXTENSION IF NOT EXISTS`` (IF NOT EXISTS is no guard against a concurrent create: the
    loser fails on pg_extension's unique index; seen with three servers in the scheduler test)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (EXTENSIONS_LOCK_ID,))
    try:
        return _ensure_extensions(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (EXTENSIONS_LOCK_ID,))


def _ensure_extensions(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT name, default_version FROM pg_available_extensions").fetchall()
    available: dict[str, str] = dict(rows)
    warnings: list[str] = []
    for name, minimum in REQUIRED_EXTENSIONS.items():
        if name not in available:
            raise SchemaError(
                f"PostgreSQL extension '{name}' is not installed on the database server. "
                f"Install pgvector >= {'.'.join(map(str, minimum))} (e.g. the postgresql-NN-pgvector package), "
                "or leave database.url empty to use ragkeep's embedded PostgreSQL."
            )
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (name,)).fetchone()
        if row is None:
            raise SchemaError(f"PostgreSQL extension '{name}' is missing right after CREATE EXTENSION")
        if _version_tuple(row[0]) < minimum:
            raise SchemaError(
                f"extension '{name}' is version {row[0]}; ragkeep needs >= {'.'.join(map(str, minimum))}. "
                f"Run ALTER EXTENSION {name} UPDATE after installing a newer package."
            )
    preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()[0]  # type: ignore[index]
    for name in OPTIONAL_EXTENSIONS:
        if name not in available:
            warnings.append(f"optional extension '{name}' is not available; features that use it are off")
            continue
        if name == "pg_stat_statements" and name not in preloaded:
            warnings.append("pg_stat_statements is not in shared_preload_libraries; query statistics are off")
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
        except psycopg.Error as e:
            warnings.append(f"could not create optional extension '{name}': {e}".strip())
    for w in warnings:
        log.warning(w)
    return warnings


def applied_versions(conn: psycopg.Connection) -> set[int]:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_version (
               version     integer PRIMARY KEY,
               name        text NOT NULL,
               applied_at  timestamptz NOT NULL DEFAULT now()
           )"""
    )
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_version").fetchall()}


def embedding_dimension_in_db(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        """SELECT a.atttypmod FROM pg_attribute a
           WHERE a.attrelid = to_regclass('chunks') AND a.attname = 'embedding' AND NOT a.attisdropped"""
    ).fetchone()
    return int(row[0]) if row and row[0] > 0 else None


def migrate(conn: psycopg.Connection, dimension: int, model_name: str) -> int:
    """Bring the schema up to date under an advisory lock; return the version now in force."""
    migrations = load_migrations()
    latest = migrations[-1].version
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        applied = applied_versions(conn)
        version = max(applied, default=0)
        unknown = applied - {m.version for m in migrations}
        if unknown:
            raise SchemaError(
                f"the database schema is version {version}, newer than this ragkeep ({latest}): it has "
                f"migrations {sorted(unknown)} this code does not know. Upgrade ragkeep, or point it at "
                "another database; refusing to start."
            )
        existing = embedding_dimension_in_db(conn)
        if existing is not None and existing != dimension:
            raise SchemaError(
                f"the database holds {existing}-dimensional embeddings but the configured model "
                f"'{model_name}' makes {dimension}-dimensional ones. Configure the model the data was "
                "embedded with, or use a new database (re-ingesting the documents)."
            )
        if version > 0:
            row = conn.execute("SELECT value FROM ragkeep_meta WHERE key = 'embedding_model'").fetchone()
            has_chunks = conn.execute("SELECT EXISTS (SELECT 1 FROM chunks)").fetchone()[0]  # type: ignore[index]
            if row and row[0] != model_name and has_chunks:
                raise SchemaError(
                    f"the database's chunks were embedded with '{row[0]}', but the configured model is "
                    f"'{model_name}'; their vectors are not comparable. Configure '{row[0]}' again, or "
                    "use a new database."
                )
        for m in migrations:  # every missing one, so a migration merged late is not skipped
            if m.version in applied:
                continue
            log.info("applying migration %04d_%s", m.version, m.name)
            # The one substitution: the model's dimension, an int, into vector(...) column types.
            conn.execute(m.text.replace("{dimension}", str(int(dimension))).encode())
            conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)", (m.version, m.name)
            )
        conn.execute(
            """INSERT INTO ragkeep_meta (key, value) VALUES ('embedding_model', %s), ('embedding_dimension', %s)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
            (model_name, str(dimension)),
        )
    return latest
