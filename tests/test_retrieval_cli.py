"""`medkb search --json` prints a stable shape with traces; bad options fail with one line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests.test_retrieval_bm25 import add_doc

HIT_KEYS = {"rank", "score", "chunk_id", "document_id", "external_id", "title", "source", "doc_type",
            "tenant_id", "version", "section", "text", "trace"}
TRACE_KEYS = {"version", "rank", "fusion", "fused_score", "generators", "graph_path", "duplicates",
              "rerank_score"}


def test_search_json_shape(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store = open_store(DatabaseSettings(url=url))
    init_store(store)
    store.set_embedding_model(embedder.name, embedder.dim)
    add_doc(store, embedder, "public", "g1", ["Statins lower LDL cholesterol and cardiovascular risk."])
    add_doc(store, embedder, "public", "g2", ["Beta blockers after myocardial infarction."])
    add_doc(store, embedder, "hosp-a", "g3", ["Statins in the hospital formulary of tenant A."])
    store.close()

    res = CliRunner().invoke(app, ["--db", url, "search", "statins cholesterol", "--k", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == {"version", "query", "mode", "k", "filters", "hits", "linked_entities",
                        "patient_facts", "timings_ms"}
    assert out["mode"] == "hybrid" and out["k"] == 2 and out["filters"]["tenant_id"] == "public"
    assert 1 <= len(out["hits"]) <= 2
    top = out["hits"][0]
    assert set(top) == HIT_KEYS and set(top["trace"]) == TRACE_KEYS
    assert top["external_id"] == "g1" and top["tenant_id"] == "public"
    assert {"bm25", "dense"} <= set(top["trace"]["generators"])
    assert all(set(v) >= {"rank", "score"} for v in top["trace"]["generators"].values())
    assert {"embed_query", "total"} <= set(out["timings_ms"])

    res = CliRunner().invoke(app, ["--db", url, "search", "statins", "--mode", "bm25", "--tenant", "hosp-a",
                                   "--json", "--k", "5"])
    got = json.loads(res.output)
    assert {h["external_id"] for h in got["hits"]} == {"g1", "g3"}
    assert all(set(h["trace"]["generators"]) == {"bm25"} for h in got["hits"])

    res = CliRunner().invoke(app, ["--db", url, "search", "statins"])
    assert res.exit_code == 0 and "g1" in res.output

    res = CliRunner().invoke(app, ["--db", url, "search", "statins", "--mode", "fuzzy"])
    assert res.exit_code != 0 and "--mode" in str(res.exception or res.output)
