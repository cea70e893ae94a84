"""The graph's vocabulary: entity types, relations (curated vs co-mention) and which relations carry safety facts."""

from __future__ import annotations

from typing import Final

# Entity types, in the order the linker prefers them when one surface form names several entities.
ENTITY_TYPES: Final = (
    "disease", "drug", "phenotype", "symptom", "gene", "procedure", "lab", "specialty",
    "condition", "organism", "concept", "drug_class",
)
TYPE_PRIORITY: Final = {t: i for i, t in enumerate(ENTITY_TYPES)}

# Curated relations (from ontologies), source → target.
IS_A: Final = "is_a"                         # child → parent (any hierarchy)
HAS_PHENOTYPE: Final = "has_phenotype"       # disease → phenotype (HPO annotations)
ASSOCIATED_PHENOTYPE: Final = "associated_phenotype"  # gene → phenotype (HPO genes_to_phenotype)
ASSOCIATED_GENE: Final = "associated_gene"   # disease → gene
HAS_SYMPTOM: Final = "has_symptom"           # disease → symptom
TREATS: Final = "treats"                     # drug → disease (indication)
ADVERSE_REACTION: Final = "adverse_reaction"  # drug → symptom/condition it can cause
INTERACTS_WITH: Final = "interacts_with"     # drug ↔ drug
CONTRAINDICATED_IN: Final = "contraindicated_in"  # drug → condition
CAUTION_IN: Final = "caution_in"             # drug → condition needing care (precautions)
HAS_INGREDIENT: Final = "has_ingredient"     # product → substance
RELATED_DRUG: Final = "related_drug"         # disease → drug (loosely associated)
RELATED_DISEASE: Final = "related_disease"   # disease ↔ disease
COMPLICATION: Final = "complication"         # disease → disease it leads to
DIFFERENTIAL: Final = "differential_diagnosis"  # disease ↔ disease
DIAGNOSTIC_TEST: Final = "diagnostic_test"   # disease → procedure/lab
SPECIALTY: Final = "specialty"               # disease → medical specialty
# Derived, never curated: two entities named in the same chunk; weight = number of shared chunks.
CO_MENTION: Final = "co_mention"

CURATED_RELATIONS: Final = frozenset({
    IS_A, HAS_PHENOTYPE, ASSOCIATED_PHENOTYPE, ASSOCIATED_GENE, HAS_SYMPTOM, TREATS, ADVERSE_REACTION,
    INTERACTS_WITH, CONTRAINDICATED_IN, CAUTION_IN, HAS_INGREDIENT, RELATED_DRUG, RELATED_DISEASE,
    COMPLICATION, DIFFERENTIAL, DIAGNOSTIC_TEST, SPECIALTY,
})
RELATIONS: Final = CURATED_RELATIONS | {CO_MENTION}

# Relations a clinician must be warned about when both ends touch the patient.
SAFETY_RELATIONS: Final = {
    INTERACTS_WITH: "interaction",
    CONTRAINDICATED_IN: "contraindication",
    CAUTION_IN: "caution",
    ADVERSE_REACTION: "adverse_reaction",
}


def check_relation(relation: str) -> str:
    """The relation itself, or InvalidInput naming the vocabulary (CLI and API pass user text here)."""
    from medkb.errors import InvalidInput

    if relation not in RELATIONS:
        raise InvalidInput(f"unknown relation {relation!r}; known: {', '.join(sorted(RELATIONS))}")
    return relation


def check_type(entity_type: str) -> str:
    from medkb.errors import InvalidInput

    if entity_type not in TYPE_PRIORITY:
        raise InvalidInput(f"unknown entity type {entity_type!r}; known: {', '.join(ENTITY_TYPES)}")
    return entity_type
