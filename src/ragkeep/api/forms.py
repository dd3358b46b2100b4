"""Multipart forms read strictly: a field that is not valid text in its charset is an error, not mojibake.

Starlette decodes a form field with the request's charset (UTF-8) and silently falls back to
latin-1 when the bytes are not valid in it, so ``b"caf\\xe9"`` arrives as ``"café"`` and is stored
as if the client had meant it; the decoded value cannot tell the two apart afterwards. Requests
that read their forms through :class:`StrictFormRequest` (every API route does, by way of
``api/guard.py``) get the same form plus the fields whose bytes were invalid, which become a 422
naming the field and byte offset. :func:`check_form` also refuses fields given more than once
(FastAPI keeps one and ignores the rest).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import aclosing

from fastapi import Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ragkeep.api.errors import ApiError

_PROBLEMS = "ragkeep.form_problems"


class _StrictMultiPartParser(MultiPartParser):
    """Records each non-file field whose bytes are not valid in the form's charset."""

    problems: list[str]

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset or "utf-8")
            except UnicodeDecodeError as e:
                self.problems.append(
                    f"{part.field_name or 'a form field'}: not valid {self._charset.upper() or 'UTF-8'} text "
                    f"(invalid byte 0x{part.data[e.start]:02x} at byte offset {e.start}); send text as UTF-8"
                )
            except LookupError:
                pass  # an unknown charset: starlette reads latin-1, which decodes anything
        super().on_part_end()


class StrictFormRequest(Request):
    async def _get_form(
        self,
        *,
        max_files: int | float = 1000,
        max_fields: int | float = 1000,
        max_part_size: int = 1024 * 1024,
    ) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type"))
        if self._form is None and content_type == b"multipart/form-data":
            parser_problems: list[str] = []
            # The same steps as Starlette's Request._get_form, with the recording parser.
            try:
                async with aclosing(self.stream()) as stream:
                    parser = _StrictMultiPartParser(
                        self.headers, stream, max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
                    )
                    parser.problems = parser_problems
                    self._form = await parser.parse()
            except MultiPartException as exc:
                raise HTTPException(status_code=400, detail=exc.message) from None
            self.scope[_PROBLEMS] = parser_problems
            return self._form
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


def form_problem(request: Request) -> str | None:
    """The first multipart text field whose bytes were not valid in the form's charset, if any."""
    problems: list[str] = request.scope.get(_PROBLEMS) or []
    return problems[0] if problems else None


async def check_form(request: Request, fields: Iterable[str]) -> None:
    """422 for a field whose bytes were not valid text, or one of ``fields`` given more than once."""
    if problem := form_problem(request):
        raise ApiError(422, problem)
    content_type, _ = parse_options_header(request.headers.get("Content-Type"))
    if content_type not in (b"multipart/form-data", b"application/x-www-form-urlencoded"):
        return
    form = await request.form()  # parsed already (and cached) for the endpoint's parameters
    for name in fields:
        count = len(form.getlist(name))
        if count > 1:
            raise ApiError(422, f"{name}: given {count} times; send it once (one document per request)")
