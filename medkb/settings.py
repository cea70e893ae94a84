"""Configuration: one pydantic-settings object, built at the edge (CLI, app factory) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./medkb.db"


class DatabaseSettings(BaseSettings):
    """MEDKB_DATABASE_*: where the knowledge base lives."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_DATABASE_", extra="ignore")

    url: str = DEFAULT_DATABASE_URL
    # TLS for TiDB Cloud / any MySQL-protocol server: path to the CA bundle, and whether to verify.
    ssl_ca: Path | None = None
    ssl_verify_cert: bool = True
    ssl_verify_identity: bool = True
    pool_size: int = 5
    echo: bool = False
    # SQLite: chunks at which dense search turns approximate (faiss IVF, kb/ann.py); 0 = always exact.
    ann_threshold: int = 200_000
    ann_ef_search: int = 1024  # HNSW candidate list per query (more: higher recall, slower)


class EmbeddingSettings(BaseSettings):
    """MEDKB_EMBEDDING_*: which offline embedding model a knowledge base uses."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_EMBEDDING_", extra="ignore")

    model: str = "all-MiniLM-L6-v2"  # or "multilingual-e5-small"
    batch_size: int = 64
    device: str = "cpu"
    backend: str = "auto"  # auto (ONNX Runtime where installed) | onnx | torch (the reference path)
    threads: int = 0  # intra-op threads per process; 0 = every core (`serve --workers N` sets cores / N)
    cache_dir: Path | None = None  # where the ONNX export is cached (default $XDG_CACHE_HOME/medkb or ~/.cache/medkb)


class LLMSettings(BaseSettings):
    """MEDKB_LLM_*: the generator behind litellm; no model means evidence mode."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_LLM_", extra="ignore")

    model: str | None = None
    api_base: str | None = None
    api_key: SecretStr | None = None
    temperature: float = 0.0  # the default; a request may choose up to max_temperature
    max_temperature: float = 1.0
    max_tokens: int = 512  # the default and the ceiling a request may lower but not raise
    timeout_s: float = 60.0  # per attempt
    max_retries: int = 2  # litellm's num_retries: connection errors, timeouts, 429 and 5xx


class RetrievalSettings(BaseSettings):
    """MEDKB_RETRIEVAL_*: fusion weights and depths of the hybrid retriever."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_RETRIEVAL_", extra="ignore")

    # bm25_weight, graph_weight and the feedback pair were tuned jointly on one half of bioasq-dev's
    # questions with z-score fusion (bench/tune_feedback.py --split dev; the other half held out).
    bm25_weight: float = 1.0
    dense_weight: float = 1.0
    # Boost of a fused candidate naming all of the query's graph_types entities (z-score units);
    # 0 turns the graph leg off in hybrid.
    graph_weight: float = 3.0
    graph_types: tuple[str, ...] = ("drug", "gene")
    patient_weight: float = 1.0
    rrf_k: int = 60
    candidates: int = 100
    mmr_lambda: float | None = None
    graph_hops: int = 2
    fusion: str = "zscore"  # zscore (CombSUM of per-generator z-scores; best on bioasq-dev) | rrf
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    # Dense pseudo-relevance feedback in hybrid: the query vector + feedback_beta x the 1/rank-weighted mean
    # vector of the top feedback_depth fused hits, searched again as the dense leg, then fused again (Rocchio;
    # no re-embedding, one more vector search). 0 turns it off.
    feedback_depth: int = 2
    feedback_beta: float = 1.0
    dedup_threshold: float = 0.9  # Jaccard of word 3-shingles above which a hit repeats a better one


class GateSettings(BaseSettings):
    """MEDKB_GATE_*: the evidence gate's operating point (see docs/evidence-gate.md for the curve)."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_GATE_", extra="ignore")

    enabled: bool = True
    # A passage is evidence when its gate score (a probability) is at least the threshold. Unset: the
    # threshold the model was fitted for, or the one reaching target_coverage on its development split.
    threshold: float | None = None
    target_coverage: float | None = None  # e.g. 0.99: answer more, abstain less; 0.9: the reverse
    model_path: Path | None = None  # a model fitted with `medkb eval fit-gate` instead of the shipped one


class PrivacySettings(BaseSettings):
    """MEDKB_PRIVACY_*: the secret behind pseudonyms and date shifts (keep it out of the database)."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_PRIVACY_", extra="ignore")

    secret: SecretStr = SecretStr("medkb-dev-secret-change-me")


class APISettings(BaseSettings):
    """MEDKB_API_*: the HTTP service."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)  # worker processes of `medkb serve` (one per core scales search)
    # Searches one process runs at once; more wait their turn. 0 = its intra-op threads (cores / workers under
    # `serve --workers N`): searches beyond the cores only contend for the GIL and the cores, and each costs more CPU.
    search_concurrency: int = Field(default=0, ge=0)
    max_body_bytes: int = 1_000_000
    require_auth: bool = True
    # Per API key, moving window (the `limits` package's notation): chat and completions, and search.
    rate_limit_answers: str = "30/minute"
    rate_limit_search: str = "120/minute"
    rate_limit_storage: str = "memory://"  # per process; redis://… to share one limit among workers
    sse_keepalive_s: float = Field(default=15.0, gt=0)  # a comment line on quiet streams, so proxies keep them


class CohortSettings(BaseSettings):
    """Research cohorts: the suppression threshold, and regions whose keys may ask feasibility across hospitals."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_COHORT_", extra="ignore")

    min_cell_count: int = Field(default=11, ge=1)  # CMS: no cell of 1-10; OHDSI tools default to 5
    # region tenant → its hospitals' tenants, e.g. MEDKB_COHORT_REGIONS='{"north": ["hosp-a", "hosp-b"]}'
    regions: dict[str, list[str]] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Everything medkb is configured with. Build it once with ``Settings()`` at the edge."""

    model_config = SettingsConfigDict(env_prefix="MEDKB_", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    api: APISettings = Field(default_factory=APISettings)
    cohort: CohortSettings = Field(default_factory=CohortSettings)
    log_level: str = "INFO"

    def with_database(self, url: str | None) -> "Settings":
        """A copy pointing at another database URL (the CLI's ``--db``)."""
        if not url:
            return self
        return self.model_copy(update={"database": self.database.model_copy(update={"url": url})})
