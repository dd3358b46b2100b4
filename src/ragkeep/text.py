"""What text and JSON PostgreSQL can store, checked where client input enters.

Text: no NUL characters, nothing that is not valid UTF-8. JSON lets clients send both
(``\\u0000``, lone surrogates such as ``\\ud800``); left unchecked they surface as a 500 deep in the
database driver instead of a 422 that names the field. JSON also lets Python's decoder read
``NaN``/``Infinity`` (jsonb refuses them), recurse until ``RecursionError`` on deep nesting, and
refuse integers of more than 4,300 digits with a plain ``ValueError``: :func:`parse_json` turns
each of these into a :class:`JsonError` with a message for the client.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Deepest nesting accepted in client JSON (metadata, filters, bodies); R2R's own data is 2-3 deep.
MAX_JSON_DEPTH = 64


class JsonError(ValueError):
    """Client JSON that cannot be used; the message says why (without the input)."""


def text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "may not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains invalid Unicode (a lone surrogate)"
    return None


def bytes_problem(value: bytes) -> str | None:
    """:func:`text_problem` for raw bytes that are meant to be UTF-8 text."""
    try:
        return text_problem(value.decode("utf-8"))
    except UnicodeDecodeError:
        return "is not valid UTF-8"


def json_problem(value: Any, path: str = "", max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """The first problem in any string (key or value) or number of a decoded JSON document,
    named by where it is (``path.key[2]: ...``; ``path`` names ``value`` itself)."""
    found = _json_walk(value, 0, max_depth)
    if found is None:
        return None
    steps, problem = found
    where = path + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in reversed(steps))
    where = where.lstrip(".")
    if len(where) > 120:
        where = where[:120] + "..."
    return f"{where}: {problem}" if where else problem


def _json_walk(value: Any, depth: int, max_depth: int) -> tuple[list[str | int], str] | None:
    """(the path to the first problem, innermost first; the problem)."""
    if depth > max_depth:
        return [], f"nests deeper than {max_depth} levels"
    if isinstance(value, str):
        problem = text_problem(value)
        return ([], problem) if problem else None
    if isinstance(value, float):
        return None if math.isfinite(value) else ([], "NaN and Infinity are not JSON numbers")
    if isinstance(value, list):
        for i, v in enumerate(value):
            if found := _json_walk(v, depth + 1, max_depth):
                found[0].append(i)
                return found
    elif isinstance(value, dict):
        for k, v in value.items():
            if problem := text_problem(k):
                return [], f"a key {problem}"
            if found := _json_walk(v, depth + 1, max_depth):
                found[0].append(k[:100])
                return found
    return None


def _no_constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def parse_json(raw: str | bytes) -> Any:
    """``json.loads`` for client input: strict JSON, then :func:`json_problem` on the result.

    Deep nesting stops the C decoder with ``RecursionError`` (about 1,000 levels) before it can
    use much stack or time; it is caught here, and :func:`json_problem` bounds what is left.
    """
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise JsonError(f"not valid JSON ({e.msg} at position {e.pos})") from None
    except UnicodeDecodeError:
        raise JsonError("not valid JSON (the bytes are not valid UTF-8)") from None
    except RecursionError:
        raise JsonError(f"nests deeper than {MAX_JSON_DEPTH} levels") from None
    except JsonError:
        raise
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise JsonError("not usable JSON (a number has too many digits)") from None
    if problem := json_problem(value):  # named by its path, as a 422 of the model would
        raise JsonError(problem)
    return value
