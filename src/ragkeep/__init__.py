"""ragkeep: a self-hosted, multi-tenant retrieval server on PostgreSQL + pgvector."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Client", "RagkeepError", "__version__"]

if TYPE_CHECKING:
    from ragkeep.client import AsyncClient, Client, RagkeepError


def __getattr__(name: str) -> Any:
    """``ragkeep.Client`` and friends, imported on first use so the server does not load them."""
    if name in ("AsyncClient", "Client", "RagkeepError"):
        import ragkeep.client

        return getattr(ragkeep.client, name)
    raise AttributeError(f"module 'ragkeep' has no attribute {name!r}")
