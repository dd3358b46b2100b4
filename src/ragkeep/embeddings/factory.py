"""From the ``[embedding]`` configuration section to a ready provider."""

from __future__ import annotations

from ragkeep.config import EmbeddingConfig
from ragkeep.embeddings.base import EmbeddingError, EmbeddingProvider

#: Names an operator may reasonably write for the bundled model.
MINILM_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


def create_provider(cfg: EmbeddingConfig) -> EmbeddingProvider:
    """Imports lazily, so a server on a remote model never loads onnxruntime.

    The section's batch_size and max_tokens defaults are the local model's; a remote provider
    keeps its own defaults unless the operator set them.
    """
    if cfg.provider == "minilm":
        if cfg.model not in MINILM_NAMES:
            raise EmbeddingError(
                f"the minilm provider only runs all-MiniLM-L6-v2, not {cfg.model!r}; remove embedding.model "
                "or set embedding.provider = 'openai' with a base_url that serves it"
            )
        from ragkeep.embeddings.minilm import MiniLMProvider

        if cfg.tokenizer is not None:
            raise EmbeddingError("embedding.tokenizer is for the openai provider; minilm uses its own tokenizer")
        return MiniLMProvider(
            threads=cfg.threads,
            batch_size=cfg.batch_size,
            max_tokens=cfg.max_tokens,
            query_cache_size=cfg.query_cache_size,
        )

    if not cfg.base_url or cfg.dimensions is None:
        raise EmbeddingError("the openai embedding provider needs embedding.base_url and .dimensions")
    from ragkeep.embeddings.openai import OpenAICompatibleProvider

    explicit = {k: getattr(cfg, k) for k in ("batch_size", "max_tokens") if k in cfg.model_fields_set}
    return OpenAICompatibleProvider(
        base_url=cfg.base_url,
        model=cfg.model,
        dimensions=cfg.dimensions,
        api_key=cfg.api_key,
        timeout_seconds=cfg.timeout_seconds,
        query_cache_size=cfg.query_cache_size,
        tokenizer_path=cfg.tokenizer,
        **explicit,
    )
