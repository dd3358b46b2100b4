"""Request and response models at the API edge, shaped as R2R's v3 API."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragkeep.search.settings import SearchSettings
from ragkeep.text import text_problem

T = TypeVar("T")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Results(BaseModel, Generic[T]):
    results: T


class PaginatedResults(BaseModel, Generic[T]):
    results: T
    total_entries: int


class GenericMessage(BaseModel):
    message: str


class GenericBoolean(BaseModel):
    success: bool


# -- users ------------------------------------------------------------------------------------


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=320)
    password: str = Field(min_length=8, max_length=1024)
    name: str | None = Field(None, max_length=200)
    bio: str | None = Field(None, max_length=5000)
    profile_picture: str | None = Field(None, max_length=2000)
    is_verified: bool | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError("not a valid email address")
        return v.strip()

    @field_validator("password", "name", "bio", "profile_picture")
    @classmethod
    def _storable(cls, v: str | None) -> str | None:
        if v is not None and (problem := text_problem(v)):
            raise ValueError(problem)
        return v


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime
    is_verified: bool
    collection_ids: list[uuid.UUID] = []
    graph_ids: list[uuid.UUID] = []
    document_ids: list[uuid.UUID] = []
    limits_overrides: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    name: str | None = None
    bio: str | None = None
    profile_picture: str | None = None
    total_size_in_bytes: int | None = None
    num_files: int | None = None
    account_type: str = "password"


class Token(BaseModel):
    token: str
    token_type: Literal["access", "refresh"]


class TokenPairOut(BaseModel):
    access_token: Token
    refresh_token: Token


class ApiKeyCreate(BaseModel):
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)


class ApiKeyOut(BaseModel):
    public_key: str
    api_key: str
    key_id: str
    name: str | None = None


class ApiKeyInfo(BaseModel):
    public_key: str
    key_id: str
    name: str | None = None
    updated_at: datetime
    description: str | None = None


# -- collections ------------------------------------------------------------------------------


class CollectionOut(BaseModel):
    """R2R's ``CollectionResponse``; ragkeep builds no graphs, so both graph statuses stay pending."""

    id: uuid.UUID
    owner_id: uuid.UUID | None
    name: str
    description: str | None
    graph_cluster_status: str = "pending"
    graph_sync_status: str = "pending"
    created_at: datetime
    updated_at: datetime
    user_count: int
    document_count: int


# -- documents --------------------------------------------------------------------------------


class IngestionOut(BaseModel):
    message: str
    task_id: uuid.UUID | None = None
    document_id: uuid.UUID


class DocumentOut(BaseModel):
    id: uuid.UUID
    collection_ids: list[uuid.UUID]
    owner_id: uuid.UUID
    document_type: str
    metadata: dict[str, Any]
    title: str | None = None
    version: str = "v0"
    size_in_bytes: int | None = None
    ingestion_status: str
    extraction_status: str = "pending"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ingestion_attempt_number: int | None = None
    summary: str | None = None
    summary_embedding: list[float] | None = None
    total_tokens: int | None = None
    chunk_count: int | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DocumentOut:
        """A documents row as the API shows it (the content hash stays internal)."""
        return cls(**{k: v for k, v in row.items() if k != "content_hash"})


class ChunkOut(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID
    owner_id: uuid.UUID
    collection_ids: list[uuid.UUID]
    text: str
    metadata: dict[str, Any]
    vector: list[float] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ChunkOut:
        """A chunks row as the API shows it (the vector only when it was read)."""
        vec = row.get("embedding")
        return cls(
            id=row["id"],
            document_id=row["document_id"],
            owner_id=row["owner_id"],
            collection_ids=row["collection_ids"],
            text=row["text"],
            metadata=row["metadata"],
            vector=vec.to_list() if vec is not None else None,
        )


# -- retrieval --------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(min_length=1, max_length=10_000)
    search_mode: Literal["basic", "advanced", "custom"] = "custom"
    search_settings: SearchSettings = Field(default_factory=SearchSettings)

    @field_validator("search_settings", mode="before")
    @classmethod
    def _null_means_defaults(cls, v: object) -> object:
        return {} if v is None else v  # R2R's SDK sends null when no settings are given

    @field_validator("query")
    @classmethod
    def _storable(cls, v: str) -> str:
        if problem := text_problem(v):
            raise ValueError(problem)
        return v

    def settings(self) -> SearchSettings:
        """The settings the search runs with, after R2R's ``search_mode`` rule."""
        return SearchSettings.for_mode(self.search_mode, self.search_settings)


class ChunkSearchResult(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID
    owner_id: uuid.UUID | None
    collection_ids: list[uuid.UUID]
    score: float | None = None
    text: str
    metadata: dict[str, Any]


class AggregateSearchResult(BaseModel):
    chunk_search_results: list[ChunkSearchResult] | None = None
    graph_search_results: list[Any] | None = None
    web_search_results: list[Any] | None = None
    document_search_results: list[Any] | None = None
