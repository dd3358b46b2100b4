"""R2R's filter language compiled to parameterised SQL over the chunks table.

Differences from R2R are deliberate: an unknown operator or a value of the wrong type is an error
naming its path (R2R quietly turns such filters into metadata look-ups that match nothing), and
metadata comparisons respect JSON types (numbers as numbers, booleans as booleans).

The compiler emits only SQL text it writes itself; every value travels as a named placeholder.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ragkeep.errors import InvalidInput
from ragkeep.text import text_problem

MAX_DEPTH = 32
MAX_LIST = 100_000
MAX_KEY_PARTS = 16

COMPARISONS = {"$eq": "=", "$ne": "<>", "$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}
OPERATORS = frozenset(COMPARISONS) | {"$in", "$nin", "$like", "$ilike", "$overlap", "$contains", "$json_contains"}
#: R2R's other spellings of the same operators.
ALIASES = {"$json_contains": "$contains"}

UUID_COLUMNS = {"id": "id", "document_id": "document_id", "owner_id": "owner_id", "user_id": "owner_id"}
ARRAY_COLUMNS = {"collection_ids": "collection_ids", "collection_id": "collection_ids"}
TIME_COLUMNS = {"created_at": "created_at"}


class FilterError(InvalidInput, ValueError):
    """An invalid filter; ``path`` names where, e.g. ``filters.$and[1].owner_id.$in`` (the API
    answers it in the error's ``detail``), ``reason`` what is wrong there."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}", path=path)
        self.path = path
        self.reason = reason


@dataclass
class CompiledFilter:
    clause: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)
    #: The validated filter as given: the planner reads an owner pin from it.
    raw: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def text(self) -> str:
        """The clause as SQL text (placeholders, no values): a key for caching the queries built on it."""
        return self.clause.as_string(None)


class _Compiler:
    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.params: dict[str, Any] = {}

    def param(self, value: Any, cast: str | None = None) -> sql.Composable:
        name = f"f{len(self.params)}"
        self.params[name] = value
        ph = sql.Placeholder(name)
        return sql.SQL("{}::{}").format(ph, sql.SQL(cast)) if cast else ph

    def col(self, name: str) -> sql.Composable:
        return sql.Identifier(self.alias, name)

    # -- structure ---------------------------------------------------------------------------

    def node(self, node: Any, path: str, depth: int) -> sql.Composable:
        if depth > MAX_DEPTH:
            raise FilterError(path, f"filters nest deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            raise FilterError(path, "expected an object of field conditions")
        parts: list[sql.Composable] = []
        for key, value in node.items():
            _check_text(key, path)
            sub = f"{path}.{key}"
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(sub, "expected a non-empty list of filters")
                items = [self.node(v, f"{sub}[{i}]", depth + 1) for i, v in enumerate(value)]
                joiner = sql.SQL(" AND " if key == "$and" else " OR ")
                parts.append(sql.SQL("({})").format(joiner.join(items)))
            elif key.startswith("$"):
                raise FilterError(sub, f"unknown logical operator {key!r}; use $and or $or")
            else:
                parts.append(self.field(key, value, sub, depth + 1))
        if not parts:
            return sql.SQL("TRUE")
        return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def field(self, key: str, cond: Any, path: str, depth: int) -> sql.Composable:
        if not isinstance(cond, dict) or not cond:
            cond = {"$eq": cond}  # R2R's shorthand: {"field": value}
        parts: list[sql.Composable] = []
        for op, value in cond.items():
            p = f"{path}.{op}"
            if op not in OPERATORS:
                raise FilterError(p, f"unknown operator {op!r}; expected one of {', '.join(sorted(OPERATORS))}")
            op = ALIASES.get(op, op)
            if key in UUID_COLUMNS:
                parts.append(self.uuid_column(UUID_COLUMNS[key], op, value, p))
            elif key in ARRAY_COLUMNS:
                parts.append(self.array_column(ARRAY_COLUMNS[key], op, value, p))
            elif key in TIME_COLUMNS:
                parts.append(self.time_column(TIME_COLUMNS[key], op, value, p))
            else:
                keys = key.split(".")
                if keys[0] == "metadata":
                    keys = keys[1:]
                if not keys or any(k == "" for k in keys) or len(keys) > MAX_KEY_PARTS:
                    raise FilterError(path, "invalid metadata key path")
                parts.append(self.metadata(keys, op, value, p))
        return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    # -- columns -----------------------------------------------------------------------------

    def uuid_column(self, column: str, op: str, value: Any, path: str) -> sql.Composable:
        c = self.col(column)
        if op in ("$eq", "$ne"):
            cmp = sql.SQL("=" if op == "$eq" else "<>")
            return sql.SQL("{} {} {}").format(c, cmp, self.param(_uuid(value, path)))
        if op in ("$in", "$nin"):
            ids = [_uuid(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))]
            expr = sql.SQL("{} = ANY({})").format(c, self.param(ids, "uuid[]"))
            return expr if op == "$in" else sql.SQL("NOT ({})").format(expr)
        raise FilterError(path, f"{op} does not apply to {column}; use $eq, $ne, $in or $nin")

    def array_column(self, column: str, op: str, value: Any, path: str) -> sql.Composable:
        c = self.col(column)
        if op in ("$eq", "$ne", "$contains") and not isinstance(value, list):
            expr = sql.SQL("{} @> {}").format(c, self.param([_uuid(value, path)], "uuid[]"))
            return sql.SQL("NOT ({})").format(expr) if op == "$ne" else expr
        ids = [_uuid(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path))]
        if op in ("$in", "$overlap"):
            return sql.SQL("{} && {}").format(c, self.param(ids, "uuid[]"))
        if op == "$nin":
            return sql.SQL("NOT ({} && {})").format(c, self.param(ids, "uuid[]"))
        if op == "$contains":
            return sql.SQL("{} @> {}").format(c, self.param(ids, "uuid[]"))
        raise FilterError(path, f"{op} does not apply to {column}; use $eq, $ne, $in, $nin, $overlap or $contains")

    def time_column(self, column: str, op: str, value: Any, path: str) -> sql.Composable:
        if op not in COMPARISONS:
            raise FilterError(path, f"{op} does not apply to {column}; use $eq, $ne, $lt, $lte, $gt or $gte")
        if not isinstance(value, str):
            raise FilterError(path, "expected an ISO 8601 date-time string")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise FilterError(path, f"not an ISO 8601 date-time: {value!r}") from None
        return sql.SQL("{} {} {}").format(self.col(column), sql.SQL(COMPARISONS[op]), self.param(moment))

    # -- metadata ----------------------------------------------------------------------------

    def metadata(self, keys: list[str], op: str, value: Any, path: str) -> sql.Composable:
        for k in keys:
            _check_text(k, path)
        field_ = sql.SQL("({} #> {})").format(self.col("metadata"), self.param(keys, "text[]"))
        if op == "$eq":
            _json_scalar_or_container(value, path)
            return sql.SQL("{} = {}").format(field_, self.param(Jsonb(value)))
        if op == "$ne":
            _json_scalar_or_container(value, path)
            return sql.SQL("{} IS DISTINCT FROM {}").format(field_, self.param(Jsonb(value)))
        if op in ("$lt", "$lte", "$gt", "$gte"):
            cmp = sql.SQL(COMPARISONS[op])
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise FilterError(path, "expected a number or a string to compare with")
            if isinstance(value, float) and not math.isfinite(value):
                raise FilterError(path, "expected a finite number")
            if isinstance(value, str):
                _check_text(value, path)
                typed = sql.SQL("CASE WHEN jsonb_typeof({f}) = 'string' THEN {f} #>> '{{}}' END").format(f=field_)
                return sql.SQL("{} {} {}").format(typed, cmp, self.param(value, "text"))
            typed = sql.SQL("CASE WHEN jsonb_typeof({f}) = 'number' THEN ({f} #>> '{{}}')::numeric END").format(
                f=field_
            )
            return sql.SQL("{} {} {}").format(typed, cmp, self.param(value, "numeric"))
        if op in ("$in", "$nin"):
            # A scalar field equals one of the values; a list field shares an element with them
            # (R2R's meaning for tags-like lists). Comparisons keep JSON types either way.
            values = _list(value, path)
            for i, v in enumerate(values):
                _json_scalar_or_container(v, f"{path}[{i}]")
            vals = self.param([Jsonb(v) for v in values], "jsonb[]")
            expr = sql.SQL(
                "({f} = ANY({vals}) OR EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN "
                "jsonb_typeof({f}) = 'array' THEN {f} ELSE '[]'::jsonb END) AS e(v) WHERE e.v = ANY({vals})))"
            ).format(f=field_, vals=vals)
            if op == "$in":
                return expr
            return sql.SQL("({} IS NULL OR NOT {})").format(field_, expr)
        if op in ("$like", "$ilike"):
            if not isinstance(value, str):
                raise FilterError(path, f"{op} expects a string pattern")
            _check_text(value, path)
            if (len(value) - len(value.rstrip("\\"))) % 2:
                raise FilterError(path, "a pattern may not end with a lone backslash (the escape character); use \\\\")
            like = sql.SQL("LIKE" if op == "$like" else "ILIKE")
            typed = sql.SQL("CASE WHEN jsonb_typeof({f}) = 'string' THEN {f} #>> '{{}}' END").format(f=field_)
            return sql.SQL("{} {} {}").format(typed, like, self.param(value, "text"))
        if op == "$contains":
            _json_scalar_or_container(value, path)
            return sql.SQL("{} @> {}").format(field_, self.param(Jsonb(value)))
        if op == "$overlap":
            values = _list(value, path)
            for i, v in enumerate(values):
                _json_scalar_or_container(v, f"{path}[{i}]")
            return sql.SQL(
                "EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof({f}) = 'array' "
                "THEN {f} ELSE '[]'::jsonb END) AS e(v) WHERE e.v = ANY({vals}))"
            ).format(f=field_, vals=self.param([Jsonb(v) for v in values], "jsonb[]"))
        raise FilterError(path, f"unsupported operator {op}")  # unreachable: checked in field()


def _check_text(value: str, path: str) -> None:
    if problem := text_problem(value):
        raise FilterError(path, problem)


def _uuid(value: Any, path: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise FilterError(path, f"expected a UUID, got {value!r}"[:200])


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise FilterError(path, "expected a list")
    if len(value) > MAX_LIST:
        raise FilterError(path, f"lists are limited to {MAX_LIST} values")
    return value


def _json_scalar_or_container(value: Any, path: str, depth: int = 0) -> None:
    """Reject what JSON cannot carry into PostgreSQL: NUL characters, absurd nesting."""
    if depth > MAX_DEPTH:
        raise FilterError(path, f"value nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, list):
        for v in value:
            _json_scalar_or_container(v, path, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, path)
            _json_scalar_or_container(v, path, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise FilterError(path, "NaN and infinity cannot be compared")


def compile_filters(filters: dict[str, Any] | None, alias: str = "c") -> CompiledFilter:
    """Compile ``filters`` for a query whose chunks table is aliased ``alias``."""
    compiler = _Compiler(alias)
    if not filters:
        return CompiledFilter(sql.SQL("TRUE"))
    clause = compiler.node(filters, "filters", 0)
    return CompiledFilter(clause, compiler.params, filters)
