"""R2R's ``search_settings`` and their translation into what a search runs: the kind (semantic,
full-text, hybrid), the hybrid and index parameters, and the shape of a result.

The models are the wire format of ``search_settings`` (``ragkeep.api.schemas`` uses them in its
requests); the rules are R2R's, kept in one place for every route that searches.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragkeep.errors import InvalidInput
from ragkeep.search.queries import Kind
from ragkeep.search.service import HybridParams, IndexParams


class InvalidSearch(InvalidInput, ValueError):
    """Settings no search can run with (the API answers 422 with the message)."""


class HybridSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    full_text_weight: float = Field(1.0, ge=0, le=1000)
    semantic_weight: float = Field(5.0, ge=0, le=1000)
    full_text_limit: int = Field(200, ge=1, le=10_000)
    rrf_k: int = Field(50, ge=0, le=10_000)

    @model_validator(mode="after")
    def _some_weight(self) -> HybridSettings:
        # The fused score is a weighted mean: divided by the sum of the weights.
        if self.full_text_weight + self.semantic_weight <= 0:
            raise ValueError("full_text_weight and semantic_weight may not both be 0")
        return self


class ChunkSettings(BaseModel):
    """R2R's chunk_settings. ``ef_search`` and ``probes`` reach the index scan when set; unset, the
    ``[search]`` defaults apply (see docs/planner.md)."""

    model_config = ConfigDict(extra="ignore")

    index_measure: str = "cosine_distance"
    probes: int = Field(10, ge=1, le=10_000)
    ef_search: int = Field(40, ge=1, le=1000)
    enabled: bool = True


class SearchSettings(BaseModel):
    """R2R's search_settings; fields R2R accepts that do not apply here are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    use_semantic_search: bool = True
    use_fulltext_search: bool = False
    use_hybrid_search: bool = False
    filters: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=100_000)
    include_metadatas: bool = True
    include_scores: bool = True
    search_strategy: str = "vanilla"
    hybrid_settings: HybridSettings = Field(default_factory=HybridSettings)
    chunk_settings: ChunkSettings = Field(default_factory=ChunkSettings)

    @classmethod
    def for_mode(cls, mode: str, given: SearchSettings) -> SearchSettings:
        """R2R's rule: ``basic`` and ``advanced`` start from their defaults, then the fields the
        caller set win; ``custom`` takes the caller's settings as they are."""
        if mode == "custom":
            return given
        base = {"basic": {}, "advanced": {"use_fulltext_search": True, "use_hybrid_search": True}}[mode]
        return cls.model_validate({**base, **given.model_dump(exclude_unset=True)})


def search_kind(settings: SearchSettings) -> Kind:
    """R2R's precedence: hybrid when asked or when both kinds are on; then full-text; then semantic."""
    if settings.use_hybrid_search or (settings.use_fulltext_search and settings.use_semantic_search):
        return Kind.HYBRID
    if settings.use_fulltext_search:
        return Kind.FULL_TEXT
    if settings.use_semantic_search:
        return Kind.SEMANTIC
    raise InvalidSearch("search_settings: at least one of use_semantic_search or use_fulltext_search must be true")


def hybrid_params(settings: SearchSettings) -> HybridParams:
    h = settings.hybrid_settings
    return HybridParams(h.full_text_weight, h.semantic_weight, h.full_text_limit, h.rrf_k)


def index_params(settings: SearchSettings) -> IndexParams:
    """R2R's defaults (40, 10) only when the caller set them; else ragkeep's ``[search]`` ones."""
    c = settings.chunk_settings
    return IndexParams(
        c.ef_search if "ef_search" in c.model_fields_set else None,
        c.probes if "probes" in c.model_fields_set else None,
    )


def result_fields(row: dict[str, Any], settings: SearchSettings) -> dict[str, Any]:
    """A search row as R2R's ChunkSearchResult fields: metadata and score as the settings ask,
    hybrid ranks in the metadata."""
    metadata = row["metadata"] if settings.include_metadatas else {}
    if "semantic_rank" in row:
        metadata = {**metadata, "semantic_rank": row["semantic_rank"], "full_text_rank": row["full_text_rank"]}
    return {
        "id": row["id"],
        "document_id": row["document_id"],
        "owner_id": row["owner_id"],
        "collection_ids": row["collection_ids"],
        "score": float(row["score"]) if settings.include_scores else None,
        "text": row["text"],
        "metadata": metadata,
    }
