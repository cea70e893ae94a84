"""Settings come from MEDKB_* variables, nested by part, and are built only when asked."""

from __future__ import annotations

import pytest

from medkb.settings import DEFAULT_DATABASE_URL, Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MEDKB_DATABASE_URL", "MEDKB_LLM_MODEL", "MEDKB_EMBEDDING_MODEL"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.database.url == DEFAULT_DATABASE_URL == "sqlite:///./medkb.db"
    assert s.llm.model is None  # evidence mode
    assert s.embedding.model == "all-MiniLM-L6-v2"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDKB_DATABASE_URL", "mysql+pymysql://u:p@db:4000/kb")
    monkeypatch.setenv("MEDKB_DATABASE_SSL_CA", "/etc/ssl/ca.pem")
    monkeypatch.setenv("MEDKB_LLM_MODEL", "openai/local")
    monkeypatch.setenv("MEDKB_LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("MEDKB_RETRIEVAL_RRF_K", "30")
    s = Settings()
    assert s.database.url.startswith("mysql+pymysql://")
    assert str(s.database.ssl_ca) == "/etc/ssl/ca.pem"
    assert s.llm.model == "openai/local" and s.retrieval.rrf_k == 30
    assert "sk-secret" not in repr(s)  # secrets never print


def test_with_database_is_a_copy() -> None:
    s = Settings()
    t = s.with_database("sqlite:///other.db")
    assert t.database.url == "sqlite:///other.db" and s.database.url != t.database.url
    assert s.with_database(None) is s
