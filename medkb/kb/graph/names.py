"""Folding of names and text for dictionary matching, and the curated clinical abbreviation table."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from medkb.text import CJK_IDEOGRAPHS, CJK_RE, FUNCTION_WORDS_EN, REPORTING_WORDS_EN, STOPWORDS_ZH, is_cjk

# Anything that is not a letter, digit or CJK ideograph separates words ("type-2", "Alzheimer's").
_SEP = re.compile(f"[^\\w{CJK_IDEOGRAPHS}]+|_+")

# A few words that are also (fragments of) ontology names or brand names but almost never mean them.
STOPWORDS: Final = FUNCTION_WORDS_EN | REPORTING_WORDS_EN | frozenset(
    """normal abnormal risk high low left right male female mild severe acute chronic frequent occasional onset
    total care test tests time type level levels rate early late child adult age day days week weeks year
    years""".split()
)

# Chinese function words and verbs that CMeKG also lists as objects ("引起" as a "disease").
CJK_STOPWORDS: Final = STOPWORDS_ZH | frozenset(
    """引起 导致 出现 患者 治疗 使用 服用 注意 可能 症状 疾病 药物 包括 其他 其它 以及 或者 一般 常见 发生 增加 减少
    影响 作用 反应 不良 表现 可以 应用 用于 本品 慎用 禁用 过敏 正常 异常 检查 减轻 升高 降低 严重 轻度 部分 少数
    偶见 罕见 个别 停药 剂量 长期 短期 儿童 老人 孕妇 其他症状""".split()
)


# NFKC spells these out as letters ("Yescarta™" → "YescartaTM"), which would glue onto the name they mark.
_MARKS: Final = str.maketrans({"\u2122": " ", "\u2120": " "})  # ™ ℠


def fold(text: str) -> str:
    """Case, width and punctuation folding: ``"Type-2 Diabetes, "`` → ``"type 2 diabetes"``."""
    t = unicodedata.normalize("NFKC", text.translate(_MARKS)).casefold()
    return " ".join(_SEP.sub(" ", t).split())


def fold_with_offsets(text: str) -> tuple[str, list[int]]:
    """``fold(text)`` plus, for each folded character, the index of the original character it came from.

    Character by character so that a match in the folded text maps back to the exact original span.
    """
    out: list[str] = []
    pos: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        piece = unicodedata.normalize("NFKC", ch.translate(_MARKS)).casefold()
        for c in piece:
            if c.isalnum() or CJK_RE.match(c):
                if pending_space and out:
                    out.append(" ")
                    pos.append(i)
                pending_space = False
                out.append(c)
                pos.append(i)
            else:
                pending_space = True
    return "".join(out), pos


def usable_name(norm: str) -> bool:
    """Whether a folded name is specific enough to look for in free text."""
    if not norm or norm in STOPWORDS:
        return False
    if is_cjk(norm):
        return len(norm) >= 2 and norm not in CJK_STOPWORDS
    return len(norm) >= 4 or (len(norm) == 3 and not norm.isalpha())


# Clinical abbreviations, matched case-sensitively as whole tokens and resolved through codes, so they
# name the same entity the ontologies built. (abbreviation, code system, code, fallback folded name).
ABBREVIATIONS: Final[tuple[tuple[str, str, str, str], ...]] = (
    ("T2DM", "ICD10CM", "E11", "type 2 diabetes mellitus"),
    ("T2D", "ICD10CM", "E11", "type 2 diabetes mellitus"),
    ("NIDDM", "ICD10CM", "E11", "type 2 diabetes mellitus"),
    ("T1DM", "ICD10CM", "E10", "type 1 diabetes mellitus"),
    ("T1D", "ICD10CM", "E10", "type 1 diabetes mellitus"),
    ("IDDM", "ICD10CM", "E10", "type 1 diabetes mellitus"),
    ("DM", "ICD10CM", "E08-E13", "diabetes mellitus"),
    ("HTN", "ICD10CM", "I10", "essential primary hypertension"),
    ("MI", "ICD10CM", "I21", "acute myocardial infarction"),
    ("AMI", "ICD10CM", "I21", "acute myocardial infarction"),
    ("CAD", "ICD10CM", "I25.10", "coronary artery disease"),
    ("CHF", "ICD10CM", "I50.9", "heart failure unspecified"),
    ("HF", "ICD10CM", "I50.9", "heart failure unspecified"),
    ("AF", "ICD10CM", "I48.91", "unspecified atrial fibrillation"),
    ("AFib", "ICD10CM", "I48.91", "unspecified atrial fibrillation"),
    ("CKD", "ICD10CM", "N18.9", "chronic kidney disease unspecified"),
    ("AKI", "ICD10CM", "N17.9", "acute kidney failure unspecified"),
    ("COPD", "ICD10CM", "J44.9", "chronic obstructive pulmonary disease unspecified"),
    ("GERD", "ICD10CM", "K21.9", "gastro esophageal reflux disease without esophagitis"),
    ("DVT", "ICD10CM", "I82.40", "deep vein thrombosis"),
    ("PE", "ICD10CM", "I26.99", "pulmonary embolism"),
    ("UTI", "ICD10CM", "N39.0", "urinary tract infection site not specified"),
    ("TIA", "ICD10CM", "G45.9", "transient cerebral ischemic attack unspecified"),
    ("RA", "ICD10CM", "M06.9", "rheumatoid arthritis unspecified"),
    ("OSA", "ICD10CM", "G47.33", "obstructive sleep apnea adult pediatric"),
    ("NAFLD", "ICD10CM", "K76.0", "fatty liver not elsewhere classified"),
    ("DKA", "ICD10CM", "E11.10", "type 2 diabetes mellitus with ketoacidosis without coma"),
    ("ASA", "DrugBank", "DB00945", "aspirin"),
    ("HCTZ", "DrugBank", "DB00999", "hydrochlorothiazide"),
    ("MTX", "DrugBank", "DB00563", "methotrexate"),
    # Chinese clinical shorthand, resolved the same way.
    ("2型糖尿病", "ICD10CM", "E11", "type 2 diabetes mellitus"),
    ("二型糖尿病", "ICD10CM", "E11", "type 2 diabetes mellitus"),
    ("II型糖尿病", "ICD10CM", "E11", "type 2 diabetes mellitus"),
    ("1型糖尿病", "ICD10CM", "E10", "type 1 diabetes mellitus"),
    ("一型糖尿病", "ICD10CM", "E10", "type 1 diabetes mellitus"),
)
