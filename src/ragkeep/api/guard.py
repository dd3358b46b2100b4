"""One check of client text wherever it enters: path, query string, JSON body, form fields.

Every router is built with ``route_class=GuardedRoute`` (a test checks that every API route is
one). Before the route's parameters are parsed, the path and the query string must decode
(percent-decoding included) to UTF-8 text without NUL; a JSON body is read with
:func:`ragkeep.text.parse_json` (no NaN/Infinity, bounded nesting, no NUL or lone surrogates in any
string) and form fields are checked with :func:`ragkeep.text.text_problem`. A failure is a 422
that names the part, instead of a 500 from the database driver or a decoder.

Not covered here: the bytes of uploaded files and the charset of multipart text parts, which the
ingestion code reads (``routes/documents.py``, ``ingest/``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData

from ragkeep.text import JsonError, bytes_problem, parse_json, text_problem


def url_problem(scope: dict[str, Any]) -> str | None:
    """What is wrong with the request's path or query string, once percent-decoded."""
    raw_path = scope.get("raw_path")
    if raw_path is not None:
        if problem := bytes_problem(unquote_to_bytes(raw_path)):
            return f"path: {problem}"
    elif problem := text_problem(scope.get("path", "")):
        return f"path: {problem}"
    query = scope.get("query_string", b"")
    if query and (problem := bytes_problem(unquote_to_bytes(query.replace(b"+", b" ")))):
        return f"query string: {problem}"
    return None


class GuardedRequest(Request):
    """A request whose JSON and form fields are checked when the route reads them."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except JsonError as e:
                raise HTTPException(422, f"body: {e}") from None
        return self._json

    async def _get_form(self, **kwargs: Any) -> FormData:
        form = await super()._get_form(**kwargs)
        for name, value in form.multi_items():
            if isinstance(value, str) and (problem := text_problem(value) or text_problem(name)):
                await form.close()
                raise HTTPException(422, f"{_printable(name)}: {problem}")
        return form


def _printable(name: str) -> str:
    return name.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")[:100]


class GuardedRoute(APIRoute):
    """An API route whose handler sees a :class:`GuardedRequest` after :func:`url_problem` passed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if problem := url_problem(request.scope):
                raise HTTPException(422, problem)
            return await handler(GuardedRequest(request.scope, request.receive, request._send))

        return guarded
