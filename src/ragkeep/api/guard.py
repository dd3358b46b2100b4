"""One check of client text wherever it enters: path, query string, JSON body, form fields.

Every router is built with ``route_class=GuardedRoute`` (a test checks that every API route is
one). Before the route's parameters are parsed, the path and the query string must decode
(percent-decoding included) to UTF-8 text without NUL; a JSON body is read with
:func:`ragkeep.text.parse_json` (no NaN/Infinity, bounded nesting, no NUL or lone surrogates in any
string) and form fields are checked with :func:`ragkeep.text.text_problem`. A failure is a 422
that names the part, instead of a 500 from the database driver or a decoder.

Not covered here: the bytes of uploaded files, which the ingestion code reads (``ingest/``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData, UploadFile

from ragkeep.api.forms import StrictFormRequest, form_problem
from ragkeep.text import JsonError, bytes_problem, parse_json, text_problem


def url_problem(scope: Mapping[str, Any]) -> str | None:
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


class GuardedRequest(StrictFormRequest):
    """A request whose JSON and form fields are checked when the route reads them (multipart text
    parts also for their charset: ``api/forms.py``)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except JsonError as e:
                raise HTTPException(422, f"body: {e}") from None
        return self._json

    async def _get_form(
        self, *, max_files: int | float = 1000, max_fields: int | float = 1000, max_part_size: int = 1024 * 1024
    ) -> FormData:
        if self._form is None and _is_urlencoded(self.headers.get("content-type", "")):
            body = await self.body()
            if len(body) > FORM_SLICE:
                self._form = await _parse_urlencoded(body, max_fields, max_part_size)
        form = await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
        if problem := form_problem(self):
            await form.close()
            raise HTTPException(422, problem)
        for name, value in form.multi_items():
            if isinstance(value, str) and (problem := text_problem(value) or text_problem(name)):
                await form.close()
                raise HTTPException(422, f"{_printable(name)}: {problem}")
        return form


#: A larger url-encoded form is decoded in slices of this many characters, yielding to the event
#: loop between them: Python's ``unquote_plus`` takes ~90 ms per MB of dense ``%XX`` escapes
#: (hostile input, or any non-Latin text), which in one piece would stall every other request.
#: (A worker thread does not help: it holds the GIL, and the loop waits for it at every await.)
FORM_SLICE = 32 * 1024


def _is_urlencoded(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


def _starts_character(s: str, i: int) -> bool:
    """Whether ``unquote_plus`` of ``s[:i]`` and ``s[i:]`` joined equals that of ``s``: ``i`` is
    not inside a ``%XX`` escape, nor before the escape of a UTF-8 continuation byte."""
    if s[i - 1] == "%" or s[i - 2 : i - 1] == "%":
        return False
    return s[i] != "%" or s[i + 1 : i + 2] not in ("8", "9", "A", "B", "a", "b")


def form_slices(raw: str, size: int) -> Iterator[str]:
    """``raw`` cut into pieces of about ``size`` characters, each of which can be unquoted alone."""
    start = 0
    while start < len(raw):
        end = min(start + size, len(raw))
        while end < len(raw) and not _starts_character(raw, end):
            end += 1
        yield raw[start:end]
        start = end


async def _unquote_plus(raw: str) -> str:
    if len(raw) <= FORM_SLICE:
        return unquote_plus(raw)
    out = []
    for piece in form_slices(raw, FORM_SLICE):
        out.append(unquote_plus(piece))
        await asyncio.sleep(0)  # let other requests run
    return "".join(out)


async def _parse_urlencoded(body: bytes, max_fields: int | float, max_part_size: int) -> FormData:
    """What Starlette's ``FormParser`` makes of ``body``, with its limits (and its 400s)."""
    items: list[tuple[str, str | UploadFile]] = []
    for pair in body.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        if len(name) + len(value) > max_part_size:
            raise HTTPException(400, f"Field exceeded maximum size of {int(max_part_size / 1024)}KB.")
        items.append((await _unquote_plus(name.decode("latin-1")), await _unquote_plus(value.decode("latin-1"))))
        if len(items) > max_fields:
            raise HTTPException(400, f"Too many fields. Maximum number of fields is {max_fields}.")
    return FormData(items)


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
