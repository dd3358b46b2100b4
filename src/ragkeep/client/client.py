"""``Client`` (blocking) and ``AsyncClient``: the same namespaces over httpx's two transports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self

import httpx

from ragkeep.client._core import JSON, ME_PATH, RagkeepError, Request, Session, unreachable
from ragkeep.client.namespaces import Chunks, Collections, Documents, Indices, Retrieval, System, Users

DEFAULT_BASE_URL = "http://127.0.0.1:7272"


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        email: str | None,
        password: str | None,
    ) -> None:
        if (email is None) != (password is None):
            raise ValueError("give both `email` and `password`, or neither")
        self._session = Session(base_url, api_key, email, password)

    @property
    def base_url(self) -> str:
        return self._session.base_url

    @property
    def access_token(self) -> str | None:
        """The bearer token in use (None with an API key or before log-in)."""
        return self._session.access_token

    @access_token.setter
    def access_token(self, value: str | None) -> None:
        self._session.access_token = value

    @property
    def refresh_token(self) -> str | None:
        return self._session.refresh_token

    @refresh_token.setter
    def refresh_token(self, value: str | None) -> None:
        self._session.refresh_token = value

    def set_api_key(self, api_key: str | None) -> None:
        """Authenticate later calls with this API key (tokens held are dropped)."""
        self._session.api_key = api_key
        self._session.access_token = self._session.refresh_token = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


class Client(_Base):
    """A blocking client for a ragkeep (or R2R v3) server.

    With ``email``/``password`` it logs in at once and refreshes its token when it expires;
    with ``api_key`` every call sends ``X-API-Key``. Errors raise :class:`RagkeepError`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        email: str | None = None,
        password: str | None = None,
        timeout: float = 300,
    ) -> None:
        super().__init__(base_url, api_key, email, password)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._auth_lock = threading.Lock()
        self.users: Users[JSON] = Users(self)
        self.collections: Collections[JSON] = Collections(self)
        self.documents: Documents[JSON] = Documents(self)
        self.chunks: Chunks[JSON] = Chunks(self)
        self.retrieval: Retrieval[JSON] = Retrieval(self)
        self.indices: Indices[JSON] = Indices(self)
        self.system: System[JSON] = System(self)
        if email is not None and password is not None:
            try:
                self.users.login(email, password)
            except BaseException:
                self.close()
                raise

    def health(self) -> JSON:
        """``GET /v3/health`` (no credentials needed); the same as ``client.system.health()``."""
        return self.system.health()

    def _execute(self, request: Request) -> JSON:
        try:
            with request.files() as files:
                resp = self._http.request(
                    request.method, request.path, files=files, **self._session.http_kwargs(request)
                )
        except httpx.TransportError as e:
            raise unreachable(self.base_url, e) from None
        return self._session.finish(request, resp)

    def _reauthenticate(self) -> None:
        s = self._session
        if s.refresh_token:
            try:
                self._execute(s.refresh_request())
                return
            except RagkeepError as e:
                if e.status_code != 401 or not s.can_login:
                    raise
        self._execute(s.login_request())

    def _for_caller(self, request: Request) -> Request:
        """Fill in the caller's id (from the token, or asked once per API key)."""
        user_id = self._session.caller_id()
        if user_id is None:
            user_id = str(self._send(Request("GET", ME_PATH))["results"]["id"])
            self._session.remember_caller(user_id)
        return request.for_caller(user_id)

    def _send(self, request: Request) -> JSON:
        if self._session.needs_login(request):
            with self._auth_lock:
                if self._session.needs_login(request):
                    self._execute(self._session.login_request())
        if request.names_caller:
            request = self._for_caller(request)
        token = self._session.access_token
        try:
            return self._execute(request)
        except RagkeepError as e:
            if not self._session.should_reauthenticate(request, e):
                raise
        with self._auth_lock:
            if self._session.access_token == token:  # not already renewed by another thread
                self._reauthenticate()
        return self._execute(request)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`; every namespace method is awaited.

    With ``email``/``password`` it logs in on the first call that needs credentials (or when
    you ``await client.users.login(...)``).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        email: str | None = None,
        password: str | None = None,
        timeout: float = 300,
    ) -> None:
        super().__init__(base_url, api_key, email, password)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._auth_lock = asyncio.Lock()
        self.users: Users[Coroutine[Any, Any, JSON]] = Users(self)
        self.collections: Collections[Coroutine[Any, Any, JSON]] = Collections(self)
        self.documents: Documents[Coroutine[Any, Any, JSON]] = Documents(self)
        self.chunks: Chunks[Coroutine[Any, Any, JSON]] = Chunks(self)
        self.retrieval: Retrieval[Coroutine[Any, Any, JSON]] = Retrieval(self)
        self.indices: Indices[Coroutine[Any, Any, JSON]] = Indices(self)
        self.system: System[Coroutine[Any, Any, JSON]] = System(self)

    async def health(self) -> JSON:
        """``GET /v3/health`` (no credentials needed); the same as ``client.system.health()``."""
        return await self.system.health()

    async def _execute(self, request: Request) -> JSON:
        try:
            with request.files() as files:
                resp = await self._http.request(
                    request.method, request.path, files=files, **self._session.http_kwargs(request)
                )
        except httpx.TransportError as e:
            raise unreachable(self.base_url, e) from None
        return self._session.finish(request, resp)

    async def _reauthenticate(self) -> None:
        s = self._session
        if s.refresh_token:
            try:
                await self._execute(s.refresh_request())
                return
            except RagkeepError as e:
                if e.status_code != 401 or not s.can_login:
                    raise
        await self._execute(s.login_request())

    async def _for_caller(self, request: Request) -> Request:
        """Fill in the caller's id (from the token, or asked once per API key)."""
        user_id = self._session.caller_id()
        if user_id is None:
            user_id = str((await self._send(Request("GET", ME_PATH)))["results"]["id"])
            self._session.remember_caller(user_id)
        return request.for_caller(user_id)

    async def _send(self, request: Request) -> JSON:
        if self._session.needs_login(request):
            async with self._auth_lock:
                if self._session.needs_login(request):
                    await self._execute(self._session.login_request())
        if request.names_caller:
            request = await self._for_caller(request)
        token = self._session.access_token
        try:
            return await self._execute(request)
        except RagkeepError as e:
            if not self._session.should_reauthenticate(request, e):
                raise
        async with self._auth_lock:
            if self._session.access_token == token:  # not already renewed by a concurrent call
                await self._reauthenticate()
        return await self._execute(request)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
