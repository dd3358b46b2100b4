"""What text PostgreSQL can store: no NUL characters, nothing that is not valid UTF-8.

JSON lets clients send both (``\\u0000``, lone surrogates such as ``\\ud800``); left unchecked they
surface as a 500 deep in the database driver instead of a 422 that names the field.
"""

from __future__ import annotations

from typing import Any


def text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "may not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains invalid Unicode (a lone surrogate)"
    return None


def json_problem(value: Any, depth: int = 0, max_depth: int = 64) -> str | None:
    """The first problem in any string (key or value) of a decoded JSON document."""
    if depth > max_depth:
        return f"nests deeper than {max_depth} levels"
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, list):
        for v in value:
            if p := json_problem(v, depth + 1, max_depth):
                return p
    elif isinstance(value, dict):
        for k, v in value.items():
            if p := text_problem(k) or json_problem(v, depth + 1, max_depth):
                return p
    return None
