"""Transport-independent parts of the clients: request specs, auth state, response decoding.

Namespaces describe a call as a :class:`Request`; the sync and async clients only execute it.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx

JSON = dict[str, Any]
AuthMode = Literal["required", "optional", "none"]

LOGIN_PATH = "/v3/users/login"
REFRESH_PATH = "/v3/users/refresh-token"
ME_PATH = "/v3/users/me"
#: Stands for the caller's user id in a request path; the client fills it in when sending.
CALLER = "{caller}"


class RagkeepError(Exception):
    """A failed call: ``status_code`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status_code: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        #: The decoded ``detail`` of the error body (e.g. ``document_id`` of a 409), if any.
        self.detail = detail

    def __str__(self) -> str:
        return f"[{self.status_code}] {self.message}" if self.status_code else self.message

    def __repr__(self) -> str:
        return f"RagkeepError(status_code={self.status_code!r}, message={self.message!r})"


@dataclass(frozen=True)
class Request:
    """One API call, described independently of how it is sent."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    #: A file to send as the multipart field ``file``; opened only while the request is sent.
    upload: Path | None = None
    auth: AuthMode = "required"
    #: The response carries a token pair (log-in, refresh) that the client should keep.
    stores_tokens: bool = False
    #: Run on the session with the decoded result once the call succeeded (e.g. log-out forgets tokens).
    on_success: Callable[[Session, JSON], None] | None = None

    @property
    def names_caller(self) -> bool:
        return CALLER in self.path

    def for_caller(self, user_id: str) -> Request:
        return replace(self, path=self.path.replace(CALLER, user_id))

    @contextmanager
    def files(self) -> Iterator[list[tuple[str, tuple[str, Any, str]]] | None]:
        if self.upload is None:
            yield None
            return
        mime = mimetypes.guess_type(self.upload.name)[0] or "application/octet-stream"
        with open(self.upload, "rb") as f:
            yield [("file", (self.upload.name, f, mime))]


def unreachable(base_url: str, error: httpx.TransportError) -> RagkeepError:
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        return RagkeepError(
            0,
            f"the ragkeep server is not reachable at {base_url} ({error or type(error).__name__}); "
            "start it with `make run` or `ragkeep serve`, or pass the right base URL",
        )
    return RagkeepError(0, f"request to {base_url} failed: {type(error).__name__}: {error}")


def error_message(resp: httpx.Response) -> tuple[str, Any]:
    """The one sentence an error body carries (``detail.message`` or a string ``detail``)."""
    try:
        body = resp.json()
    except ValueError:
        return (resp.text.strip()[:500] or resp.reason_phrase or f"HTTP {resp.status_code}"), None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return detail["message"], detail
    if isinstance(detail, str):
        return detail, detail
    if isinstance(detail, list):  # FastAPI's default validation errors
        parts = [
            f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg', d)}" if isinstance(d, dict) else str(d)
            for d in detail
        ]
        return "; ".join(parts) or f"HTTP {resp.status_code}", detail
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"], body
    return resp.text.strip()[:500] or f"HTTP {resp.status_code}", body


def decode(resp: httpx.Response) -> JSON:
    if resp.status_code >= 400:
        message, detail = error_message(resp)
        raise RagkeepError(resp.status_code, message, detail)
    if not resp.content:
        return {}
    try:
        body = resp.json()
    except ValueError:
        ctype = resp.headers.get("content-type", "?")
        raise RagkeepError(resp.status_code, f"expected a JSON response, got {ctype}: {resp.text[:200]!r}") from None
    return body if isinstance(body, dict) else {"results": body}


class Session:
    """Credentials and tokens of one client, and the decisions that depend on them."""

    def __init__(self, base_url: str, api_key: str | None, email: str | None, password: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.email = email
        self.password = password
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        #: (credential, user id) learnt from ``GET /v3/users/me`` when a token does not name its user.
        self._caller: tuple[str, str] | None = None

    def caller_id(self) -> str | None:
        """The id of the user whose credentials are in use, if known without asking the server."""
        if self.access_token:
            subject = token_subject(self.access_token)
            if subject:
                return subject
        credential = self.access_token or self.api_key
        if self._caller and credential and self._caller[0] == credential:
            return self._caller[1]
        return None

    def remember_caller(self, user_id: str) -> None:
        credential = self.access_token or self.api_key
        self._caller = (credential, user_id) if credential else None

    def forget_tokens(self) -> None:
        """Drop the tokens and the email/password (so they are not used to log in again)."""
        self.access_token = self.refresh_token = None
        self.email = self.password = None

    def headers(self, request: Request) -> dict[str, str]:
        if request.auth == "none":
            return {}
        if self.access_token:
            return {"Authorization": f"Bearer {self.access_token}"}
        if self.api_key:
            return {"X-API-Key": self.api_key}
        return {}

    def http_kwargs(self, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers(request)}
        if request.params is not None:
            kwargs["params"] = {k: v for k, v in request.params.items() if v is not None}
        if request.json is not None:
            kwargs["json"] = request.json
        if request.data is not None:
            kwargs["data"] = request.data
        return kwargs

    @property
    def can_login(self) -> bool:
        return bool(self.email and self.password)

    def needs_login(self, request: Request) -> bool:
        """Credentials were given but no token is held yet (the async client logs in lazily)."""
        return request.auth == "required" and not self.access_token and not self.api_key and self.can_login

    def should_reauthenticate(self, request: Request, error: RagkeepError) -> bool:
        """A 401 for an expired access token, and a way to get a new one."""
        return (
            request.auth != "none"
            and error.status_code == 401
            and "expired" in error.message.lower()
            and self.access_token is not None
            and (self.refresh_token is not None or self.can_login)
        )

    def login_request(self) -> Request:
        if not (self.email and self.password):
            raise RagkeepError(0, "no email and password to log in with")
        return login_request(self.email, self.password)

    def refresh_request(self) -> Request:
        if not self.refresh_token:
            raise RagkeepError(0, "no refresh token: log in first")
        return Request("POST", REFRESH_PATH, json=self.refresh_token, auth="none", stores_tokens=True)

    def finish(self, request: Request, resp: httpx.Response) -> JSON:
        result = decode(resp)
        if request.stores_tokens:
            pair = result.get("results", {})
            self.access_token = pair["access_token"]["token"]
            self.refresh_token = pair["refresh_token"]["token"]
            if request.path == LOGIN_PATH and request.data:
                self.email, self.password = request.data["username"], request.data["password"]
        if request.on_success is not None:
            request.on_success(self, result)
        return result


def login_request(email: str, password: str) -> Request:
    return Request("POST", LOGIN_PATH, data={"username": email, "password": password}, auth="none", stores_tokens=True)


def token_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT, read without checking the signature (the server checks it);
    used only to name the caller in a path. None when the token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    sub = payload.get("sub") if isinstance(payload, dict) else None
    return sub if isinstance(sub, str) and sub else None
