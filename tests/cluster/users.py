"""Users of the cluster tests, as the two clients make them: R2R's ``R2RClient`` and ragkeep's
``Client``, both pointed at HAProxy, and the few calls the tests make through either."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkeep.client import Client

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from r2r import R2RClient

from tests.support.cluster import http_status, retry_once


@dataclass
class User:
    """One account and the client it uses (``kind``: "r2r" or "ragkeep")."""

    kind: str
    id: str
    email: str
    password: str
    client: Any

    def upload_text(self, text: str) -> tuple[int, str]:
        """A synchronous ``raw_text`` upload: the status (201/200/202) and the document id."""
        if self.kind == "r2r":
            done = self.client.documents.create(raw_text=text)
            return 201, str(done.results.document_id)
        return self._ours(self.client.documents.create(raw_text=text))

    def upload_file(self, path: Path) -> tuple[int, str]:
        if self.kind == "r2r":
            done = self.client.documents.create(file_path=str(path))
            return 202, str(done.results.document_id)
        return self._ours(self.client.documents.create(file_path=path))

    @staticmethod
    def _ours(answer: dict[str, Any]) -> tuple[int, str]:
        return 200, str(answer["results"]["document_id"])

    def search(self, query: str, limit: int = 10) -> list[str]:
        """Document ids of a search's chunk results (no retry)."""
        settings = {"limit": limit}
        if self.kind == "r2r":
            done = self.client.retrieval.search(query=query, search_mode="basic", search_settings=settings)
            return [str(c.document_id) for c in done.results.chunk_search_results]
        answer = self.client.retrieval.search(query, search_mode="basic", search_settings=settings)
        return [str(c["document_id"]) for c in answer["results"]["chunk_search_results"]]

    def search_retrying(self, query: str, limit: int = 10) -> tuple[list[str], int]:
        """:meth:`search` with the client's one retry on a 502/503 or no answer; the retries used."""
        return retry_once(lambda: self.search(query, limit), http_status)

    def close(self) -> None:
        if self.kind == "r2r":
            self.client.client.close()
        else:
            self.client.close()


def register(base_url: str, kind: str, prefix: str) -> User:
    """A new user, registered and logged in with the client of ``kind`` ("r2r" or "ragkeep")."""
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@ragkeep.test"
    password = f"pw-{uuid.uuid4().hex}"
    if kind == "r2r":
        r2r = R2RClient(base_url, timeout=120)
        made = r2r.users.create(email=email, password=password).results
        r2r.users.login(email, password)
        return User(kind, str(made.id), email, password, r2r)
    bootstrap = Client(base_url, timeout=120)
    try:
        made_id = str(bootstrap.users.create(email=email, password=password)["results"]["id"])
    finally:
        bootstrap.close()
    return User(kind, made_id, email, password, Client(base_url, email=email, password=password, timeout=120))
