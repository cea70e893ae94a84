"""Ontology loaders (one module each) and `load_ontology`, which writes a release into the graph tables."""

from __future__ import annotations

import importlib
from typing import Any

from medkb.errors import InvalidInput
from medkb.ingest.ontologies.writer import OntologyProgress, OntologyReport, OntologyWriter
from medkb.kb.store import KnowledgeStore

# name → loader module (each has ``load(**options) -> OntologyData``)
LOADERS: dict[str, str] = {
    "hpo": "medkb.ingest.ontologies.hpo",
    "icd10cm": "medkb.ingest.ontologies.icd10cm",
    "drugs": "medkb.ingest.ontologies.drugs",
    "diseases-basic": "medkb.ingest.ontologies.diseases_basic",
    "cmekg": "medkb.ingest.ontologies.cmekg",
    "interactions": "medkb.ingest.ontologies.interactions",
}

__all__ = ["LOADERS", "OntologyReport", "load_ontology"]


def load_ontology(store: KnowledgeStore, name: str, progress: OntologyProgress | None = None,
                  relink: bool = True, **options: Any) -> OntologyReport:
    """Load ontology ``name`` as the public source of that name; a second run writes nothing.

    When it wrote something and ``relink`` is set, record rows and document mentions are linked again
    (``medkb.kb.graph.relink``), so records and documents loaded before the ontology reach it too.
    ``options`` go to the loader, e.g. ``limit=`` (a prefix of the data) or, for cmekg, ``subjects=``.
    """
    if name not in LOADERS:
        raise InvalidInput(f"unknown ontology {name!r}; available: {', '.join(LOADERS)}")
    module = importlib.import_module(LOADERS[name])
    if progress is not None:
        progress("reading", 0, None)
    data = module.load(**options)
    report = OntologyWriter(store, name, progress).write(data)
    if relink and report.written:
        from medkb.kb.graph.relink import relink as relink_all

        report.relink = relink_all(store)
    return report
