"""faker-healthcare-provider's disease table: symptoms, medications, specialty, ICD-10 codes, six languages."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib import metadata

from medkb.errors import BadRecord, ConfigError
from medkb.ingest.ontologies.writer import OntologyData, Rel, Term
from medkb.kb.graph import relations as r

# The base catalogue is English; every locale lists the same diseases in the same order, slot by slot.
LOCALES = (("en", ""), ("de", ".de_DE"), ("es", ".es_ES"), ("fr", ".fr_FR"), ("pt", ".pt_BR"), ("zh", ".zh_CN"))
MODULE = "faker_healthcare{}.disease_correlations"


def _tables() -> list[tuple[str, dict]]:
    out = []
    for lang, suffix in LOCALES:
        name = MODULE.format(suffix)
        try:
            out.append((lang, importlib.import_module(name).DISEASE_CORRELATIONS))
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"the diseases-basic ontology needs faker-healthcare-provider ({name}): "
                "pip install 'medkb[ontologies]'"
            ) from exc
    return out


def load(limit: int | None = None) -> OntologyData:
    tables = _tables()
    base = tables[0][1]
    for lang, table in tables[1:]:
        if len(table) != len(base):
            raise BadRecord(MODULE.format(lang), f"{len(table)} diseases, the base catalogue has {len(base)}")
    rows = [list(t.items()) for _, t in tables]
    terms: dict[str, Term] = {}
    rels: list[Rel] = []

    def term(key: str, typ: str, name: str, codes: list[tuple[str, str]] | None = None) -> Term:
        t = terms.get(key)
        if t is None:
            t = terms[key] = Term(key=key, type=typ, name=name, codes=codes or [])
        return t

    for i, (name, d) in enumerate(rows[0]):
        if limit is not None and i >= limit:
            break
        where = f"{MODULE.format('')}[{name!r}]"
        for fld in ("icd10", "symptoms", "medications", "medical_specialty"):
            if fld not in d:
                raise BadRecord(where, "missing field", field=fld)
        dis = term(f"disease:{name}", "disease", name, [("ICD10CM", d["icd10"])])
        syms = [term(f"symptom:{s}", "symptom", s) for s in d["symptoms"]]
        meds = [term(f"drug:{x}", "drug", x) for x in d["medications"]]
        spec = term(f"specialty:{d['medical_specialty']}", "specialty", d["medical_specialty"])
        for (lang, _), table_rows in zip(LOCALES[1:], rows[1:]):
            lname, ld = table_rows[i]
            if ld.get("icd10") != d["icd10"] or len(ld["symptoms"]) != len(syms) or \
                    len(ld["medications"]) != len(meds):
                raise BadRecord(MODULE.format(lang), "slot mismatch with the base catalogue", field=lname)
            dis.names.append((lname, lang))
            for t, x in zip(syms, ld["symptoms"]):
                t.names.append((x, lang))
            for t, x in zip(meds, ld["medications"]):
                t.names.append((x, lang))
            spec.names.append((ld["medical_specialty"], lang))
        rels.extend(Rel(dis.key, s.key, r.HAS_SYMPTOM) for s in syms)
        rels.extend(Rel(x.key, dis.key, r.TREATS) for x in meds)
        rels.append(Rel(dis.key, spec.key, r.SPECIALTY))
    for t in terms.values():  # the same translation repeats for every disease naming the symptom
        t.names = list(dict.fromkeys(t.names))

    def edges() -> Iterator[Rel]:
        yield from rels

    return OntologyData(
        release=f"faker-healthcare-provider {metadata.version('faker-healthcare-provider')}",
        terms=list(terms.values()), edges=edges(), edge_total=len(rels),
        fake_data=True,  # faker-healthcare-provider builds it to generate fake records
        description="Basic disease table: symptoms, medications, specialty, ICD-10-CM code; en/de/es/fr/pt/zh names",
    )
