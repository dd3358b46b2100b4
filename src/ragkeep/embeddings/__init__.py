"""Text embeddings: the bundled MiniLM model or an OpenAI-compatible server, behind one interface."""

from ragkeep.embeddings.base import EmbeddingError, EmbeddingProvider
from ragkeep.embeddings.factory import create_provider

__all__ = ["EmbeddingError", "EmbeddingProvider", "create_provider"]
