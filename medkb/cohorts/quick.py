"""The quick form: criteria named in words, resolved by the entity linker into a Circe definition to check and count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medkb.errors import InvalidInput
from medkb.kb.store import KnowledgeStore

# medkb's code-system names → OMOP vocabulary ids (what a Circe concept carries)
_VOCABULARIES = {"SNOMEDCT": "SNOMED", "RXNORM": "RxNorm", "LOINC": "LOINC", "ICD10CM": "ICD10CM", "CVX": "CVX"}
_TYPES = {"condition": ("disease", "phenotype", "symptom", "observation"), "drug": ("drug",)}


@dataclass(frozen=True)
class Resolved:
    role: str  # condition | drug
    text: str
    entity_id: int
    name: str
    codes: dict[str, list[str]]


def _resolve(store: KnowledgeStore, role: str, text: str) -> Resolved:
    from medkb.ingest.pipeline import load_linker

    linker = load_linker(store)
    matches = linker.link(text) if linker is not None else []
    wanted = [x for x in matches if x.type in _TYPES[role]] or matches
    if not wanted:
        raise InvalidInput(f"--{role} {text!r}: no concept of the knowledge base matches; load its vocabulary first "
                           "(e.g. ingest an OMOP CDM, or an ontology)")
    best = max(wanted, key=lambda x: (x.end - x.start, bool(x.codes.get("OMOP"))))
    return Resolved(role, text, best.entity_id, best.name, best.codes)


def _item(r: Resolved) -> dict[str, Any]:
    concept: dict[str, Any] = {"CONCEPT_NAME": r.name}
    if r.codes.get("OMOP"):
        concept["CONCEPT_ID"] = int(r.codes["OMOP"][0])
    for system, vocabulary in _VOCABULARIES.items():
        if r.codes.get(system):
            concept.update(VOCABULARY_ID=vocabulary, CONCEPT_CODE=r.codes[system][0])
            break
    if "CONCEPT_ID" not in concept and "CONCEPT_CODE" not in concept:
        raise InvalidInput(f"--{r.role} {r.text!r}: {r.name!r} carries no OMOP id nor a SNOMED/RxNorm/LOINC code")
    return {"concept": concept, "includeDescendants": True}


def quick_definition(store: KnowledgeStore, *, condition: str | None = None, drug: str | None = None,
                     after: int | None = None) -> tuple[dict[str, Any], list[Resolved]]:
    """Entry = the condition (or the drug alone); with both, the drug within ``after`` days before the condition."""
    if not condition and not drug:
        raise InvalidInput("name a --condition and/or a --drug, or give a definition file")
    resolved = [_resolve(store, role, text) for role, text in (("condition", condition), ("drug", drug)) if text]
    sets = [{"id": i, "name": r.name, "expression": {"items": [_item(r)]}} for i, r in enumerate(resolved)]
    domain = {"condition": "ConditionOccurrence", "drug": "DrugExposure"}
    d: dict[str, Any] = {
        "ConceptSets": sets,
        "PrimaryCriteria": {"CriteriaList": [{domain[resolved[0].role]: {"CodesetId": 0}}],
                            "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
                            "PrimaryCriteriaLimit": {"Type": "First"}},
        "InclusionRules": [], "ExpressionLimit": {"Type": "First"},
        "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
    }
    if len(resolved) == 2:
        start: dict[str, Any] = {"Coeff": -1} if after is None else {"Days": after, "Coeff": -1}
        d["InclusionRules"].append({"name": f"{resolved[1].name} in the {after or 'any number of'} days before", "expression": {
            "Type": "ALL", "CriteriaList": [{"Criteria": {"DrugExposure": {"CodesetId": 1}},
                                             "StartWindow": {"Start": start, "End": {"Days": 0, "Coeff": 1}},
                                             "Occurrence": {"Type": 2, "Count": 1}}]}})
    return d, resolved
