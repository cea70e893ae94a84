"""Patient generator: the in-scope patient's own record notes, and their coded conditions and medications."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sqlalchemy import select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters, document_clause
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.types import Candidate


class PatientGenerator:
    """Only runs when ``filters.patient_id`` is set; ranks that patient's notes by similarity to the query.

    The notes are found with the same filter object narrowed to record notes, so tenant, date and
    supersession rules apply exactly as for every other generator.
    """

    name = "patient"

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store

    @staticmethod
    def scope(filters: SearchFilters) -> SearchFilters | None:
        if not filters.patient_id:
            return None
        if filters.doc_types is not None and "record_note" not in filters.doc_types:
            return None
        return dataclasses.replace(filters, doc_types=("record_note",))

    def search(self, qvec: np.ndarray | None, filters: SearchFilters, n: int) -> list[Candidate]:
        scoped = self.scope(filters)
        if scoped is None:
            return []
        reason = {"patient_id": filters.patient_id}
        if qvec is not None:
            hits = self.store.vector_search(qvec, n, scoped)
            if hits:
                return [Candidate(h.chunk_id, h.score, reason) for h in hits]
        # No embeddings (or none stored): newest notes first, still inside the same SQL filters.
        q = (
            select(m.Chunk.id)
            .join(m.Document, m.Document.id == m.Chunk.document_id)
            .where(document_clause(scoped), m.Document.patient_id == filters.patient_id)
            .order_by(m.Document.effective_date.desc(), m.Chunk.id)
            .limit(n)
        )
        with self.store.engine.connect() as c:
            ids = [r[0] for r in c.execute(q)]
        return [Candidate(cid, 1.0 / (i + 1), reason) for i, cid in enumerate(ids)]

    def facts(self, filters: SearchFilters, limit: int = 50) -> list[dict[str, Any]]:
        """Coded conditions and medications of the patient in scope (same tenant only)."""
        if not filters.patient_id:
            return []
        out: list[dict[str, Any]] = []
        with self.store.engine.connect() as c:
            for kind, table in (("condition", m.Condition), ("medication", m.Medication)):
                q = (
                    select(table.code_system, table.code, table.description, table.start, table.stop,
                           table.entity_id)
                    .where(table.patient_id == filters.patient_id, table.tenant_id == filters.tenant_id)
                    .order_by(table.start.desc(), table.id)
                    .limit(limit)
                )
                for system, code, desc, start, stop, eid in c.execute(q):
                    out.append({
                        "kind": kind, "code_system": system, "code": code, "description": desc,
                        "start": start.isoformat() if start else None,
                        "stop": stop.isoformat() if stop else None, "entity_id": eid,
                    })
        return out
