"""The one text toolkit (medkb.text) and the one code-system map (medkb.kb.codes) that every layer shares."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from medkb.eval.metrics import evaluate
from medkb.ingest.ontologies.writer import Term
from medkb.kb.codes import canonical_system, same_concept_systems
from medkb.text import (
    add_chinese_words, content_terms, detect_language, is_cjk, segment_chinese, sentence_spans, terms,
)

ROOT = Path(__file__).resolve().parents[1]


def test_language_and_cjk_ranges_agree_everywhere() -> None:
    assert detect_language("二甲双胍的副作用是什么？") == "zh" and detect_language("metformin?") == "en"
    # Chinese clinical text full of Latin drug names is still Chinese; a stray character is not.
    assert detect_language("患者服用metformin 500mg后出现乳酸酸中毒") == "zh"
    assert detect_language("The 肝 (liver) is large in this patient") == "en"
    assert is_cjk("\u3400") and is_cjk("\uf900") and not is_cjk("abc")  # extension A and compatibility ideographs


def test_one_sentence_splitter_for_prose_and_answers() -> None:
    prose = "Metformin is first line. It lowers glucose.\nwrapped line. 二甲双胍是一线药物。它降低血糖！"
    got = [prose[a:b] for a, b in sentence_spans(prose)]
    assert got == ["Metformin is first line.", "It lowers glucose.\nwrapped line.", "二甲双胍是一线药物。", "它降低血糖！"]
    answer = "- Metformin [1]\n- Insulin [2]"
    assert [answer[a:b] for a, b in sentence_spans(answer, line_breaks=True)] == ["- Metformin [1]", "- Insulin [2]"]


def test_terms_are_snowball_stems_and_content_terms_drop_function_words() -> None:
    # PyStemmer's Snowball, not a suffix list: "studies"/"study" and "complications"/"complication" meet.
    assert terms("diabetic complications") == terms("diabetes complication") == ["diabet", "complic"]
    assert terms("the drug") == ["drug"]
    assert content_terms("However, patients in the study were treated with warfarin") == {"treat", "warfarin"}
    assert "糖尿病" in terms("糖尿病患者的治疗") and "的" not in terms("糖尿病患者的治疗")
    # Search drops question words but keeps a capitalised abbreviation; the claim check's words are unchanged.
    assert terms("Which drugs treat ALL?") == ["drug", "treat", "all"] and terms("which drugs treat all") == ["drug", "treat"]
    assert content_terms("Which drugs treat ALL?") == {"drug", "treat"}


def test_chinese_dictionary_can_be_extended() -> None:
    word = "沙库巴曲缬沙坦"  # sacubitril/valsartan: jieba splits it without help
    assert word not in segment_chinese(f"服用{word}片")
    add_chinese_words([word])
    assert word in segment_chinese(f"服用{word}片") and word in terms(f"服用{word}片")


def test_one_code_system_map() -> None:
    spellings = ["RxNorm", "RXNORM", "rxnorm", "http://www.nlm.nih.gov/research/umls/rxnorm", "RXCUI"]
    assert {canonical_system(s) for s in spellings} == {"RXNORM"}
    assert {canonical_system(s) for s in ("SNOMED-CT", "http://snomed.info/sct", "SNOMEDCT_US")} == {"SNOMEDCT"}
    assert canonical_system("drugbank") == "DrugBank" and canonical_system("ICD-10-CM") == "ICD10CM"
    assert canonical_system("", "LOINC") == "LOINC" and canonical_system("local-lab") == "LOCAL-LAB"
    assert same_concept_systems("icd-10") == ("ICD10", "ICD10CM")
    # Ontology terms store the canonical spelling, so record codes (canonicalised the same way) meet them.
    assert Term("k", "drug", "x", codes=[("RxNorm", "6809")]).codes == [("RXNORM", "6809")]


def test_tune_script_scores_with_the_eval_metrics() -> None:
    spec = importlib.util.spec_from_file_location("tune_bioasq", ROOT / "bench" / "tune_bioasq.py")
    assert spec and spec.loader
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    runs = {"q1": ["d2", "d2", "d1"], "q2": ["d9"], "q3": ["d1"]}
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d1": 0}}  # q3 has no relevant judgement
    got = tune.metrics(runs, qrels)
    want = evaluate({q: list(dict.fromkeys(r)) for q, r in runs.items()}, qrels,
                    ("ndcg@10", "recall@10", "recall@100", "mrr@10"))
    assert got == {"nDCG@10": want["ndcg@10"], "R@10": want["recall@10"], "R@100": want["recall@100"],
                   "MRR@10": want["mrr@10"]}
    assert got["MRR@10"] == 0.5  # q3 is skipped, not averaged in as a zero
