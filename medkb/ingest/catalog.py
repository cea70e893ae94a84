"""What a source holds, for curators: counts by type, version and language, and its latest documents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore


def source_details(store: KnowledgeStore, tenant_id: str, name: str, recent: int = 10) -> dict[str, Any]:
    """The source's SourceInfo plus document breakdowns; NotFound if there is no such source."""
    info = store.get_source(tenant_id, name)
    with store.session() as s:
        def breakdown(col: Any) -> dict[str, int]:
            q = select(col, func.count()).where(m.Document.source_id == info.id).group_by(col)
            return {str(k): int(n) for k, n in s.execute(q)}

        superseded = s.scalar(select(func.count()).where(m.Document.source_id == info.id,
                                                        m.Document.superseded.is_(True))) or 0
        docs = s.execute(
            select(m.Document.id, m.Document.external_id, m.Document.title, m.Document.version,
                   m.Document.superseded, m.Document.created_at)
            .where(m.Document.source_id == info.id)
            # By time, then id: AUTO_INCREMENT ids are not monotonic across TiDB nodes.
            .order_by(m.Document.created_at.desc(), m.Document.id.desc()).limit(recent)
        ).all()
    return {
        **info.__dict__,
        "doc_types": breakdown(m.Document.doc_type),
        "languages": breakdown(m.Document.language),
        "versions": breakdown(m.Document.version),
        "superseded": int(superseded),
        "recent": [
            {"id": d.id, "external_id": d.external_id, "title": d.title, "version": d.version,
             "superseded": bool(d.superseded), "created_at": d.created_at.isoformat(timespec="seconds")}
            for d in docs
        ],
    }
