"""Drugs from `drug-named-entity-recognition`'s dictionary: names, brands, synonyms, DrugBank/MeSH/MedlinePlus ids."""

from __future__ import annotations

from importlib import metadata

from medkb.errors import BadRecord
from medkb.ingest.ontologies.writer import OntologyData, Term, load_checked_pickle, package_dir

DICTIONARY = "drug_ner_dictionary.pkl.bz2"
DICTIONARY_SHA256 = "ec10a1c7b633fc4bae8d0eecff053892c0e37f49e18eaf59c8a1e9f40fc80d9d"  # the pinned release's
# Identifiers unique per drug: entities merge on them. The MeSH id here is often the drug's class
# (one id for 129 drugs), so it is kept on the entity but never merged on.
CODE_FIELDS = (("drugbank_id", "DrugBank"), ("medline_plus_id", "MedlinePlus"))
XREF_FIELDS = (("mesh_id", "MeSH"),)


def _dictionary() -> dict:
    """The package's own data file, read directly: importing the package writes caches in $HOME."""
    path = package_dir("drug_named_entity_recognition", "drugs") / DICTIONARY
    data = load_checked_pickle(path, DICTIONARY_SHA256, "drug-named-entity-recognition")
    for key in ("drug_variant_to_canonical", "drug_canonical_to_data"):
        if key not in data:
            raise BadRecord(str(path), "missing table", field=key)
    return data


def load(limit: int | None = None) -> OntologyData:
    data = _dictionary()
    canon: dict[str, dict] = data["drug_canonical_to_data"]
    variants: dict[str, list[str]] = {}
    for variant, cs in data["drug_variant_to_canonical"].items():
        for c in cs:
            variants.setdefault(c, []).append(variant)
    terms: list[Term] = []
    for i, (key, d) in enumerate(sorted(canon.items())):
        if limit is not None and i >= limit:
            break
        codes = [(system, str(d[f])) for f, system in CODE_FIELDS if d.get(f)]
        names = [(v, "en") for v in variants.get(key, []) if v != key]
        names += [(s, "en") for s in d.get("synonyms") or [] if isinstance(s, str)]
        xrefs = [(system, str(d[f])) for f, system in XREF_FIELDS if d.get(f)]
        terms.append(Term(key=key, type="drug", name=d.get("name") or key, codes=codes, names=names, xrefs=xrefs))
    return OntologyData(
        release=f"drug-named-entity-recognition {metadata.version('drug-named-entity-recognition')}",
        terms=terms, edges=[], edge_total=0,
        description="Drug names, brands and synonyms with DrugBank, MeSH and MedlinePlus identifiers",
    )
