"""Tenants and sources of a KnowledgeStore: create, list, and delete a source with everything derived from it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medkb.errors import NotFound
from medkb.kb import models as m
from medkb.kb.dberrors import retrying
from medkb.kb.records import SourceInfo

# Rows per transaction when deleting a source: bounded for TiDB's transaction size limit.
DELETE_BATCH = 500


class SourcesMixin:
    """Tenant and source rows for KnowledgeStore, which supplies ``session()``, ``_bump_generation``,
    ``_delete_chunks``, ``_invalidate`` and the ``_source_ids`` cache."""


    def ensure_tenant(self, tenant_id: str, name: str | None = None) -> None:
        def run() -> None:
            with self.session() as s:
                if s.get(m.Tenant, tenant_id) is None:
                    s.add(m.Tenant(id=tenant_id, name=name or tenant_id))

        _once_more_on_duplicate(lambda: retrying(run))

    def ensure_source(
        self, tenant_id: str, name: str, kind: str = "docs", release: str | None = None,
        description: str | None = None, fake_data: bool = False,
    ) -> int:
        self.ensure_tenant(tenant_id)

        def run() -> int:
            with self.session() as s:
                src = s.scalar(select(m.Source).where(m.Source.tenant_id == tenant_id, m.Source.name == name))
                if src is None:
                    src = m.Source(tenant_id=tenant_id, name=name, kind=kind, release=release,
                                   description=description, fake_data=fake_data)
                    s.add(src)
                    s.flush()
                else:
                    if release and src.release != release:
                        src.release = release
                    if fake_data and not src.fake_data:
                        src.fake_data = True
                return src.id

        sid = _once_more_on_duplicate(lambda: retrying(run))
        self._source_ids[(tenant_id, name)] = sid
        return sid

    def get_source(self, tenant_id: str, name: str) -> SourceInfo:
        for info in self.list_sources(tenant_id, include_public=False):
            if info.name == name:
                return info
        raise NotFound(f"no source named {name!r} in tenant {tenant_id!r}")

    def list_sources(self, tenant_id: str | None = None, include_public: bool = True) -> list[SourceInfo]:
        def per_source(stmt) -> dict[int, int]:  # type: ignore[no-untyped-def]
            return {sid: n for sid, n in s.execute(stmt)}

        with self.session() as s:
            q = select(m.Source)
            if tenant_id is not None:
                tenants = (tenant_id, m.PUBLIC_TENANT) if include_public else (tenant_id,)
                q = q.where(m.Source.tenant_id.in_(tenants))
            sources = list(s.scalars(q.order_by(m.Source.tenant_id, m.Source.name)))
            docs = per_source(select(m.Document.source_id, func.count()).group_by(m.Document.source_id))
            chunks = per_source(
                select(m.Document.source_id, func.count(m.Chunk.id))
                .join(m.Chunk, m.Chunk.document_id == m.Document.id)
                .group_by(m.Document.source_id)
            )
            ents = per_source(
                select(m.EntityCode.source_id, func.count(func.distinct(m.EntityCode.entity_id)))
                .group_by(m.EntityCode.source_id)
            )
            ents_by_name = per_source(
                select(m.EntityName.source_id, func.count(func.distinct(m.EntityName.entity_id)))
                .group_by(m.EntityName.source_id)
            )
            edges = per_source(select(m.Edge.source_id, func.count()).group_by(m.Edge.source_id))
            pats = per_source(select(m.Patient.source_id, func.count()).group_by(m.Patient.source_id))
            return [
                SourceInfo(
                    id=x.id, tenant_id=x.tenant_id, name=x.name, kind=x.kind, release=x.release,
                    documents=docs.get(x.id, 0), chunks=chunks.get(x.id, 0),
                    entities=max(ents.get(x.id, 0), ents_by_name.get(x.id, 0)),
                    edges=edges.get(x.id, 0), patients=pats.get(x.id, 0),
                )
                for x in sources
            ]

    def delete_source(self, tenant_id: str, name: str) -> SourceInfo:
        """Delete a source and everything derived from it, committed in batches of DELETE_BATCH rows
        (a large ontology would exceed a server's transaction size as one). Interrupted, it leaves a
        source with fewer rows that ``delete_source`` run again finishes; the source row goes last."""
        info = self.get_source(tenant_id, name)
        sid = info.id
        self._source_ids.pop((tenant_id, name), None)
        doc_ids = select(m.Document.id).where(m.Document.source_id == sid)
        self._delete_batches(doc_ids, self._delete_documents)
        self._delete_batches(select(m.Edge.id).where(m.Edge.source_id == sid),
                             lambda s, ids: s.execute(delete(m.Edge).where(m.Edge.id.in_(ids))))
        self._delete_batches(select(m.Patient.id).where(m.Patient.source_id == sid), self._delete_patients)
        self._delete_batches(
            select(m.EntityCode.system, m.EntityCode.code).where(m.EntityCode.source_id == sid),
            lambda s, keys: s.execute(delete(m.EntityCode).where(
                tuple_(m.EntityCode.system, m.EntityCode.code).in_([tuple(k) for k in keys]))),
            scalar=False,
        )
        self._delete_batches(select(m.EntityName.id).where(m.EntityName.source_id == sid),
                             lambda s, ids: s.execute(delete(m.EntityName).where(m.EntityName.id.in_(ids))))
        named, coded = select(m.EntityName.entity_id), select(m.EntityCode.entity_id)
        self._delete_batches(select(m.Entity.id).where(m.Entity.id.not_in(named), m.Entity.id.not_in(coded)),
                             self._delete_entities)

        def drop_source() -> None:
            with self.session() as s:
                s.execute(delete(m.Source).where(m.Source.id == sid))
                self._bump_generation(s)

        retrying(drop_source)
        self._invalidate()
        return info

    def _delete_batches(self, ids_query, delete_batch, scalar: bool = True) -> None:  # type: ignore[no-untyped-def]
        """Run ``delete_batch(session, ids)`` over the rows ``ids_query`` selects, one transaction per
        DELETE_BATCH rows (each bumping the generation, so other processes' caches follow)."""
        while True:
            def run() -> bool:
                with self.session() as s:
                    q = ids_query.limit(DELETE_BATCH)
                    ids = list(s.scalars(q) if scalar else s.execute(q).all())
                    if not ids:
                        return False
                    delete_batch(s, ids)
                    self._bump_generation(s)
                    return True

            if not retrying(run):
                return

    def _delete_documents(self, s: Session, doc_ids: Sequence[int]) -> None:
        self._delete_chunks(s, doc_ids)
        s.execute(delete(m.Document).where(m.Document.id.in_(doc_ids)))

    def _delete_patients(self, s: Session, ids: Sequence[str]) -> None:
        for table in (m.Encounter, m.Condition, m.Medication, m.Observation, m.Allergy, m.Procedure,
                      m.ObservationPeriod):
            s.execute(delete(table).where(table.patient_id.in_(ids)))
        s.execute(delete(m.Patient).where(m.Patient.id.in_(ids)))

    def _delete_entities(self, s: Session, ids: Sequence[int]) -> None:
        s.execute(delete(m.Mention).where(m.Mention.entity_id.in_(ids)))
        s.execute(delete(m.Edge).where(m.Edge.source_entity_id.in_(ids)))
        s.execute(delete(m.Edge).where(m.Edge.target_entity_id.in_(ids)))
        for table in (m.Condition, m.Medication, m.Procedure, m.Allergy):
            s.execute(update(table).where(table.entity_id.in_(ids)).values(entity_id=None))
        s.execute(delete(m.Entity).where(m.Entity.id.in_(ids)))


def _once_more_on_duplicate(fn):  # type: ignore[no-untyped-def]
    """Get-or-create raced by another process: its row now exists, so the second run finds it."""
    try:
        return fn()
    except IntegrityError:
        return fn()
