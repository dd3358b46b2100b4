"""Python clients for ragkeep's (and R2R's) v3 API.

>>> from ragkeep import Client
>>> client = Client("http://127.0.0.1:7272", email="me@example.com", password="...")
>>> client.documents.create(raw_text="...", metadata={"team": "search"})
>>> client.retrieval.search("query", search_settings={"filters": {"user_id": {"$eq": uid}}})
>>> team = client.collections.create("team")["results"]["id"]
>>> client.collections.add_user(team, colleague_id)

Namespaces, named as R2R's SDK: ``users``, ``collections``, ``documents``, ``chunks``,
``retrieval``, ``indices`` and ``system``.
"""

from ragkeep.client._core import RagkeepError
from ragkeep.client.client import DEFAULT_BASE_URL, AsyncClient, Client

__all__ = ["DEFAULT_BASE_URL", "AsyncClient", "Client", "RagkeepError"]
