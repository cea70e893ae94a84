"""Makes the all-MiniLM-L6-v2 ONNX file from the packaged weights (torch, once), fuses it for ONNX Runtime's CPU
kernels and verifies it against torch."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medkb.errors import ConfigError

log = logging.getLogger(__name__)

MIN_COSINE = 0.9999
# Fixed texts the export must reproduce: short and long (over 256 tokens, so truncation is exercised), clinical,
# Chinese, digits and punctuation, in batches that mix lengths (padding) and one at a time.
VERIFY_TEXTS = [
    "metformin",
    "What is the first-line drug therapy for type 2 diabetes mellitus in adults?",
    "Lactic acidosis is a rare but serious adverse effect of metformin in patients with renal impairment "
    "(eGFR < 30 mL/min/1.73 m²); the drug should be withheld before iodinated contrast.",
    "高血压的一线治疗药物有哪些？",
    "BP 142/91 mmHg, HbA1c 7.9 %, LDL-C 3.4 mmol/L — follow-up in 3 months.",
    " ".join(["Randomised controlled trials of statins for primary prevention in older adults reported "
              "reductions in major cardiovascular events with few serious adverse effects."] * 12),
    "Café-au-lait macules, neurofibromas and Lisch nodules suggest neurofibromatosis type 1.",
    "?",
]


def _pipeline_module(st: Any) -> Any:
    """The whole sentence-transformers pipeline (transformer → mean pooling → L2 norm) as one module of token ids,
    so that the exported graph computes exactly what ``SentenceTransformer.encode`` does."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.st(features)["sentence_embedding"]

    return SentenceEmbedding().eval()


def _load_reference(folder: Path, attention: str | None = None) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError("making the ONNX file needs torch and sentence-transformers (a core install has "
                          "them), or set MEDKB_EMBEDDING_BACKEND=torch") from exc
    kwargs = {"attn_implementation": attention} if attention else {}
    return SentenceTransformer(str(folder), device="cpu", model_kwargs=kwargs)


def _fuse(path: Path, config: Any) -> dict[str, int]:
    """Rewrite the exported graph in place with ONNX Runtime's BERT fusions (still fp32): one Attention op per layer
    (QKV in one GEMM, the mask as sequence lengths), EmbedLayerNormalization, SkipLayerNormalization, BiasGelu.

    Unfused, the traced SDPA attention is ~100 small ops per layer; Softmax, Where and IsNaN alone took 31 % of a
    batch's kernel time, and op count dominates a single query. Fusion matches the *eager* attention pattern, hence
    the eager export. The fused Attention reads the mask as lengths: inputs must be right-padded (the embedder's are).
    """
    from onnxruntime.transformers import optimizer

    layers = int(config.num_hidden_layers)
    # opt_level 0: only these fusions; ONNX Runtime applies its own (machine-specific) ones when it loads the file.
    model = optimizer.optimize_model(str(path), model_type="bert", num_heads=int(config.num_attention_heads),
                                     hidden_size=int(config.hidden_size), opt_level=0)
    stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    if stats.get("Attention") != layers:
        raise ConfigError(f"ONNX Runtime fused {stats.get('Attention', 0)} of {layers} attention layers of "
                          f"all-MiniLM-L6-v2 (fusions: {stats}); the export no longer has the expected pattern")
    model.save_model_to_file(str(path))
    return stats


def export_verified(folder: Path, target: Path) -> dict[str, Any]:
    """Export to a temporary folder beside ``target``, verify, then move it into place in one rename.

    Raises ConfigError (and caches nothing) if any verification text's cosine to torch is below MIN_COSINE.
    """
    import onnxruntime
    import torch

    from medkb.kb.onnx_embedder import INPUTS, ONNX_FILE, MANIFEST_FILE, OnnxMiniLMEmbedder, weights_sha256

    try:
        import onnx  # noqa: F401  (torch's exporter serialises through it)
    except ImportError as exc:
        raise ConfigError("making the ONNX file needs the onnx package (pip install 'onnx')") from exc
    st = _load_reference(folder)  # the torch path as it runs (SDPA attention): the reference
    exported = _load_reference(folder, attention="eager")  # same weights; the attention pattern fusion recognises
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        example = (getattr(st, "preprocess", None) or st.tokenize)(VERIFY_TEXTS[1:3])
        axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python branches; verified below
            torch.onnx.export(
                _pipeline_module(exported), tuple(example[n] for n in INPUTS), str(tmp / ONNX_FILE), dynamo=False,
                input_names=list(INPUTS), output_names=["sentence_embedding"],
                dynamic_axes={**axes, "sentence_embedding": {0: "batch"}}, opset_version=17,
            )
        fused = _fuse(tmp / ONNX_FILE, exported[0].auto_model.config)
        ref = np.asarray(st.encode(VERIFY_TEXTS, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False), np.float32)
        candidate = OnnxMiniLMEmbedder(batch_size=3, threads=1, path=tmp / ONNX_FILE)
        got = np.vstack([candidate.embed_passages(VERIFY_TEXTS),
                         np.stack([candidate.embed_query(t) for t in VERIFY_TEXTS])])
        cos = (got * np.vstack([ref, ref])).sum(1) / np.linalg.norm(got, axis=1)
        worst = float(cos.min())
        if not worst >= MIN_COSINE:
            raise ConfigError(f"the ONNX export of {folder.name} does not reproduce torch: cosine {worst:.6f} "
                              f"< {MIN_COSINE} on the verification texts; using it would change every vector")
        manifest = {
            "model": "all-MiniLM-L6-v2", "weights_sha256": weights_sha256(folder), "min_cosine": worst,
            "verification_texts": len(VERIFY_TEXTS), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": 17, "fused": fused,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        try:
            tmp.rename(target)
        except OSError:  # another process finished the same export first; theirs is as good as ours
            if not (target / MANIFEST_FILE).is_file():
                raise
        log.info("made %s (min cosine to torch %.6f)", target / ONNX_FILE, worst)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
