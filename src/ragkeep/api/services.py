"""What a request handler needs, built once per process in the app's lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ragkeep.auth.tokens import TokenIssuer
from ragkeep.config import Settings
from ragkeep.db.database import Database
from ragkeep.embeddings import EmbeddingProvider
from ragkeep.indices.build import IndexBuilder
from ragkeep.ingest.pipeline import Ingestor
from ragkeep.maintenance import Maintenance
from ragkeep.monitoring.monitor import Monitor
from ragkeep.monitoring.searches import SearchRecorder
from ragkeep.search.planner import Planner


@dataclass
class Services:
    settings: Settings
    db: Database
    embedder: EmbeddingProvider
    tokens: TokenIssuer
    ingestor: Ingestor
    indexes: IndexBuilder
    searches: SearchRecorder
    #: The search planner's caches (index directory, small owners' counts), one per app.
    planner: Planner
    started_at: float = field(default_factory=time.time)
    maintenance: Maintenance | None = None
    monitor: Monitor | None = None
