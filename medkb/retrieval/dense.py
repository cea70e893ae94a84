"""Dense generator: cosine top-n through the store's own filtered vector search (exact on SQLite, ANN on TiDB)."""

from __future__ import annotations

import numpy as np

from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.types import Candidate


class DenseGenerator:
    name = "dense"

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store

    def search(self, qvec: np.ndarray, filters: SearchFilters, n: int) -> list[Candidate]:
        # The store applies the filters inside the search, so n is always the filtered top-n.
        return [Candidate(h.chunk_id, h.score) for h in self.store.vector_search(qvec, n, filters)]
