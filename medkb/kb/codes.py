"""Code-system names: every spelling (FHIR URIs, Synthea, UMLS, ontology loaders) → the one name stored."""

from __future__ import annotations

from typing import Final

# canonical name → the other spellings seen in exports and ontologies (compared case-insensitively).
_SPELLINGS: Final[dict[str, tuple[str, ...]]] = {
    "ICD10CM": ("icd-10-cm", "icd10-cm", "http://hl7.org/fhir/sid/icd-10-cm"),
    "ICD10": ("icd-10", "http://hl7.org/fhir/sid/icd-10"),
    "SNOMEDCT": ("snomed", "snomed-ct", "snomedct_us", "sct", "http://snomed.info/sct"),
    "RXNORM": ("rxcui", "http://www.nlm.nih.gov/research/umls/rxnorm"),
    "LOINC": ("http://loinc.org",),
    "CVX": ("http://hl7.org/fhir/sid/cvx",),
    "CPT": ("http://www.ama-assn.org/go/cpt",),
    "HPO": ("hp", "http://purl.obolibrary.org/obo/hp.owl"),
    "DrugBank": ("http://www.drugbank.ca", "https://go.drugbank.com"),
    "MeSH": ("http://id.nlm.nih.gov/mesh",),
    "MedlinePlus": (),
    "NCBIGene": ("entrez",),
    "OMIM": (),
    "ORPHA": ("orphanet",),
}
_BY_KEY: Final[dict[str, str]] = {
    s.casefold(): canon for canon, spellings in _SPELLINGS.items() for s in (canon, *spellings)
}
# Different systems whose codes name the same concept when spelled the same (WHO ICD-10 vs ICD-10-CM).
EQUIVALENT: Final[dict[str, tuple[str, ...]]] = {"ICD10": ("ICD10CM",), "ICD10CM": ("ICD10",)}
MAX_SYSTEM_LENGTH: Final = 32  # the code_system columns


def canonical_system(raw: str | None, default: str | None = None) -> str | None:
    """The stored name of a code system; an unknown system is kept, upper-cased, so spellings still meet."""
    if not raw or not raw.strip():
        return default
    key = raw.strip()
    return _BY_KEY.get(key.casefold(), key.upper()[:MAX_SYSTEM_LENGTH])


def same_concept_systems(system: str) -> tuple[str, ...]:
    """``system`` and the systems whose identically spelled codes name the same concept."""
    canon = canonical_system(system) or system
    return (canon, *EQUIVALENT.get(canon, ()))
