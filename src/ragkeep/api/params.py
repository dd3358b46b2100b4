"""Request parameters sent as JSON text (R2R's SDK sends form fields and filters that way):
parsed, checked for their JSON type, and compiled to filters, with errors naming the parameter."""

from __future__ import annotations

from typing import Any

from ragkeep.api.errors import ApiError
from ragkeep.search.filters import CompiledFilter, FilterError, compile_filters
from ragkeep.text import JsonError, parse_json


def json_field(name: str, raw: str | None, kind: type) -> Any:
    """The JSON object (``kind`` dict) or array (list) in ``raw``; None when nothing was sent."""
    if raw is None or raw == "":
        return None
    try:
        value = parse_json(raw)
    except JsonError as e:
        raise ApiError(422, f"{name}: {e}") from None
    if not isinstance(value, kind):
        raise ApiError(422, f"{name}: expected a JSON {'object' if kind is dict else 'array'}")
    return value


def compile_named(name: str, value: dict[str, Any], alias: str) -> CompiledFilter:
    """Compile, reporting errors under the parameter's own name (``metadata_filter.topic.$xx``)."""
    try:
        return compile_filters(value, alias=alias)
    except FilterError as e:
        path = name + e.path[len("filters"):] if e.path.startswith("filters") else e.path
        raise ApiError(422, f"{path}: {e.reason}", path=path) from None


def query_filters(given: dict[str, str | None], alias: str = "c") -> CompiledFilter:
    """Parse and AND the JSON filters given as query parameters (``{name: raw JSON or None}``)."""
    parsed = {}
    for name, raw in given.items():
        value = json_field(name, raw, dict)
        if value:
            compile_named(name, value, alias)  # errors name the parameter they came from
            parsed[name] = value
    if not parsed:
        return compile_filters(None)
    values = list(parsed.values())
    return compile_filters(values[0] if len(values) == 1 else {"$and": values}, alias=alias)
