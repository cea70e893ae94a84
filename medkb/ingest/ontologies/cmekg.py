"""CMeKG (Chinese medical knowledge graph, ~967k triples in `PyCMeKG`'s pickle) mapped to our relation vocabulary."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import metadata

from medkb.errors import BadRecord
from medkb.ingest.ontologies.writer import OntologyData, Rel, Term, load_checked_pickle, package_dir
from medkb.kb.graph import relations as r

# predicate → (relation, object type, reversed). reversed: the object is the edge's source
# ("disease 药物治疗 drug" becomes "drug treats disease").
PREDICATES: dict[str, tuple[str, str, bool]] = {
    "适应症": (r.TREATS, "disease", False),
    "主治": (r.TREATS, "disease", False),
    "不良反应": (r.ADVERSE_REACTION, "symptom", False),
    "常见症状": (r.HAS_SYMPTOM, "symptom", False),
    "相关症状": (r.HAS_SYMPTOM, "symptom", False),
    "临床症状及体征": (r.HAS_SYMPTOM, "symptom", False),
    "相关药物": (r.RELATED_DRUG, "drug", False),
    "药物治疗": (r.TREATS, "drug", True),
    "成份": (r.HAS_INGREDIENT, "drug", False),
    "组成": (r.HAS_INGREDIENT, "drug", False),
    "药物相互作用": (r.INTERACTS_WITH, "drug", False),
    "禁忌": (r.CONTRAINDICATED_IN, "condition", False),
    "注意事项": (r.CAUTION_IN, "condition", False),
    "相关疾病": (r.RELATED_DISEASE, "disease", False),
    "并发症": (r.COMPLICATION, "disease", False),
    "鉴别诊断": (r.DIFFERENTIAL, "disease", False),
    "就诊科室": (r.SPECIALTY, "specialty", False),
    "检查": (r.DIAGNOSTIC_TEST, "procedure", False),
    "实验室检查": (r.DIAGNOSTIC_TEST, "lab", False),
    "辅助检查": (r.DIAGNOSTIC_TEST, "procedure", False),
    "影像学检查": (r.DIAGNOSTIC_TEST, "procedure", False),
    "上位关系": (r.IS_A, "", False),  # "" = the subject's own type
    "下位关系": (r.IS_A, "", True),
}
# Names of the subject itself: (predicate, language).
NAME_PREDICATES = {"英文名": "en", "英文名称": "en", "英文别名": "en", "别称": "zh", "通用名": "zh", "商品名": "zh"}
DRUG_HINTS = {"适应症", "不良反应", "成份", "主治", "药品类型", "OTC类型", "用法用量", "规格", "药物相互作用"}
DISEASE_HINTS = {"常见症状", "ICD10", "就诊科室", "并发症", "相关药物", "药物治疗", "多发群体", "传染性"}
ORGANISM_HINTS = {"界", "门", "纲", "科", "属", "种"}
KG_SHA256 = "eb0ab98b384b4272feead720bbb5f262715973589004d8a5093c5020d954c4b5"  # PyCMeKG 0.2.5's cmekg.pkl
MAX_NAME = 120  # longer "objects" are sentences (注意事项), kept as condition text but not as entities


def _kg() -> tuple[dict, str]:
    path = package_dir("pyCMeKG", "cmekg") / "model" / "cmekg.pkl"
    kg = load_checked_pickle(path, KG_SHA256, "PyCMeKG")
    if not isinstance(kg, dict):
        raise BadRecord(str(path), f"expected a dict of subjects, found {type(kg).__name__}")
    return kg, str(path)


def subject_type(preds: dict) -> str:
    keys = set(preds)
    if keys & DRUG_HINTS:
        return "drug"
    if keys & DISEASE_HINTS:
        return "disease"
    if keys & ORGANISM_HINTS:
        return "organism"
    return "concept"


def load(limit: int | None = None, subjects: Sequence[str] | None = None) -> OntologyData:
    """``limit`` caps the triples read (subjects in file order); ``subjects`` loads only those subjects."""
    kg, path = _kg()
    items = [(s, kg[s]) for s in subjects if s in kg] if subjects is not None else kg.items()
    types: dict[str, str] = {}
    chosen: list[tuple[str, dict]] = []
    triples = 0
    for s, preds in items:
        if not isinstance(preds, dict):
            raise BadRecord(path, "predicates are not a dict", field=str(s))
        if limit is not None and triples >= limit:
            break
        chosen.append((s, preds))
        types[s] = subject_type(preds)
        triples += sum(len(v) for v in preds.values() if isinstance(v, list))
    terms: dict[str, Term] = {}
    rels: list[Rel] = []
    for s, preds in chosen:
        t = terms.setdefault(s, Term(key=s, type=types[s], name=s, language="zh"))
        for p, values in preds.items():
            if not isinstance(values, list):
                continue
            if p in NAME_PREDICATES:
                t.names.extend((v, NAME_PREDICATES[p]) for v in values if isinstance(v, str) and v.strip())
            elif p == "ICD10":
                t.codes.extend(("ICD10", v.strip()) for v in values if isinstance(v, str) and v.strip())
            elif p in PREDICATES:
                rel, otype, rev = PREDICATES[p]
                for v in values:
                    if not isinstance(v, str) or not v.strip() or len(v) > MAX_NAME:
                        continue
                    v = v.strip()
                    if v not in terms:
                        typ = types.get(v) or otype or t.type
                        # Contraindication/caution objects are label sentences: kept, but not linkable.
                        terms[v] = Term(key=v, type=typ, name=v, language="text" if typ == "condition" else "zh")
                    rels.append(Rel(v, s, rel) if rev else Rel(s, v, rel))

    def edges() -> Iterator[Rel]:
        yield from rels

    return OntologyData(
        release=f"CMeKG (PyCMeKG {metadata.version('PyCMeKG')})", terms=list(terms.values()), edges=edges(),
        edge_total=len(rels), description="Chinese medical knowledge graph: drugs, diseases, symptoms, relations",
    )
