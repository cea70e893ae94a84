"""ICD-10-CM from `simple-icd-10-cm`: every chapter, block and code with its description, is_a its parent."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from importlib import metadata, resources

from medkb.errors import ConfigError
from medkb.ingest.ontologies.writer import OntologyData, Rel, Term
from medkb.kb.graph import relations as r


def _release() -> str:
    """The CDC release the package carries, read from its data file name (code-list-April-2026.txt)."""
    for f in resources.files("simple_icd_10_cm.data").iterdir():
        hit = re.match(r"code-list-(\w+)-(\d{4})\.txt$", f.name)
        if hit:
            return f"{hit.group(1)} {hit.group(2)}"
    return "unknown"


_PAREN = re.compile(r"\s*\([^)]*\)")
_NOS = re.compile(r",?\s+NOS$")


def _synonyms(desc: str, inclusions: Sequence[str]) -> list[tuple[str, str]]:
    """ICD-10-CM conventions: words in parentheses are supplementary ("Essential (primary) hypertension"
    also reads "Essential hypertension"); inclusion terms are synonyms, "NOS" meaning unspecified."""
    out: list[str] = []
    bare = " ".join(_PAREN.sub("", desc).split())
    if bare and bare != desc:
        out.append(bare)
    for inc in inclusions:
        inc = _NOS.sub("", inc.strip())
        if inc and inc not in out:
            out.append(inc)
    return [(n, "en") for n in out]


def load(limit: int | None = None, prefixes: Sequence[str] | None = None) -> OntologyData:
    """``limit`` keeps the first codes in classification order; ``prefixes`` (e.g. ``["E11"]``) keeps the codes
    starting with one of them, with their ancestors so the hierarchy stays connected."""
    try:
        import simple_icd_10_cm as cm
    except ModuleNotFoundError as exc:
        raise ConfigError("the icd10cm ontology needs simple-icd-10-cm: pip install 'medkb[ontologies]'") from exc
    codes = cm.get_all_codes(with_dots=True)
    if prefixes:
        keep = {c for c in codes if c.startswith(tuple(prefixes))}
        keep |= {a for c in list(keep) for a in cm.get_ancestors(c)}
        codes = [c for c in codes if c in keep]
    if limit is not None:
        codes = codes[:limit]
    terms: list[Term] = []
    parents: list[tuple[str, str]] = []
    for code in codes:
        desc = cm.get_description(code)
        # Chapters are numbered 1..22; keep them distinct from any code in the same system.
        key = f"chapter {code}" if cm.is_chapter(code) else code
        names = [] if cm.is_chapter(code) or cm.is_block(code) else _synonyms(desc, cm.get_inclusion_term(code))
        terms.append(Term(key=key, type="disease", name=desc, codes=[("ICD10CM", key)], names=names))
        parent = cm.get_parent(code)
        if parent:
            parents.append((key, f"chapter {parent}" if cm.is_chapter(parent) else parent))

    def edges() -> Iterator[Rel]:
        for child, parent in parents:
            yield Rel(child, parent, r.IS_A)

    return OntologyData(
        release=f"ICD-10-CM {_release()} (simple-icd-10-cm {metadata.version('simple-icd-10-cm')})",
        terms=terms, edges=edges(), edge_total=len(parents),
        description="ICD-10-CM diagnosis codes with their hierarchy (CDC release)",
    )
