"""Links record rows and document chunks to graph entities again after a source loads (load order is free).

Record rows link by code first (the systems ontologies write: RxNorm ingredient, SNOMED, ICD-10-CM, …), then by
the entity linker over their description (the ingredient inside "Methylprednisolone 4 MG Oral Tablet", a brand
such as "Gilenya" through the drug dictionary's brand names, the disease in "Essential hypertension"). A code
whose other rows resolved by description gives its undescribed rows ("RxNorm Code") the same entity. Chunks get
their mentions recomputed from their stored text: nothing is re-embedded.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, update

from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.graph.linker import EntityLinker, EntityMatch
from medkb.kb.graph.names import fold
from medkb.kb.store import KnowledgeStore

# Record table → the entity types its description may name, most wanted first.
RECORD_TYPES: dict[str, tuple[str, ...]] = {
    "medications": ("drug",),
    "conditions": ("disease", "phenotype", "symptom", "condition"),
    "procedures": ("procedure", "lab"),
    "allergies": ("drug", "concept", "disease", "phenotype"),
}
TABLES: dict[str, Any] = {"medications": m.Medication, "conditions": m.Condition, "procedures": m.Procedure,
                          "allergies": m.Allergy}
# SNOMED CT semantic tags ("Anemia (disorder)").
_TAG = re.compile(r"\s*\((disorder|finding|procedure|situation|substance|product|medicinal product|"
                  r"clinical drug|morphologic abnormality|observable entity|regime/therapy)\)\s*$", re.I)
CHUNK_BATCH = 500


@dataclass
class RelinkReport:
    rows: dict[str, int] = field(default_factory=dict)  # per table: rows seen
    linked: dict[str, int] = field(default_factory=dict)  # per table: rows with an entity after relinking
    changed: int = 0  # record rows whose entity changed
    chunks: int = 0
    mentions_added: int = 0
    mentions_removed: int = 0


class RecordLinker:
    """Code index and entity linker of one store, loaded once; ``entity_for`` never queries."""

    def __init__(self, store: KnowledgeStore, tenant_id: str | None = None) -> None:
        self.linker = EntityLinker.load(store, tenant_id)
        with store.session() as s:
            self.codes: dict[tuple[str, str], int] = {
                (canonical_system(sy) or "", c): e
                for sy, c, e in s.execute(select(m.EntityCode.system, m.EntityCode.code, m.EntityCode.entity_id))
            }
        self.by_code_only: set[tuple[str, str]] = set()

    def by_code(self, system: str | None, code: str | None) -> int | None:
        if not code:
            return None
        sy = canonical_system(system)
        if sy:
            return self.codes.get((sy, code.strip()))
        # Synthea's medications.csv names no system: its codes are RxNorm.
        return self.codes.get(("RXNORM", code.strip()))

    def by_description(self, table: str, description: str | None) -> int | None:
        if not description:
            return None
        text = _TAG.sub("", description).strip()
        wanted = RECORD_TYPES[table]
        whole = self._whole(text)
        if whole is not None and whole.type in wanted:
            return whole.entity_id
        matches = [x for x in self.linker.link(text) if x.type in wanted]
        if not matches:
            return None
        # The longest mention of the most wanted type: "Hydrochlorothiazide 25 MG" → the drug, not "MG".
        best = max(matches, key=lambda x: (x.end - x.start, -wanted.index(x.type), -x.start))
        return best.entity_id

    def _whole(self, text: str) -> EntityMatch | None:
        """The entity named by the whole description, also in its plural ("Clinically isolated syndromes")
        or "unspecified" form, as ICD-10-CM and HPO spell names a record states plainly."""
        norm = fold(text)
        for form in (norm, norm + "s", norm + " unspecified"):
            hit = self.linker.automaton.get(form, None) if len(self.linker.automaton) else None
            if hit is not None:
                eid = hit[1]
                name, typ, codes = self.linker.entities[eid]
                return EntityMatch(eid, name, typ, codes, 0, len(text), text)
        return None

    def entity_for(self, table: str, system: str | None, code: str | None, description: str | None) -> int | None:
        eid = self.by_code(system, code)
        if eid is not None and self.linker.entities.get(eid, ("", "", {}))[1] in RECORD_TYPES[table]:
            return eid
        return self.by_description(table, description) or eid


def relink_records(store: KnowledgeStore, tenant_id: str | None = None) -> RelinkReport:
    """Recompute ``entity_id`` of every record row (of ``tenant_id``, or all tenants); write only changes."""
    report = RelinkReport()
    tenants = [tenant_id] if tenant_id else _record_tenants(store)
    for tenant in tenants:
        rl = RecordLinker(store, tenant)
        for name, table in TABLES.items():
            with store.session() as s:
                rows = s.execute(select(table.id, table.code_system, table.code, table.description, table.entity_id)
                                 .where(table.tenant_id == tenant)).all()
            new = link_rows(rl, name, rows)
            changes = [{"id": rid, "entity_id": new[rid]} for rid, *_x, old in rows if new[rid] != old]
            if changes:
                with store.session() as s:
                    for i in range(0, len(changes), 5000):
                        s.execute(update(table), changes[i : i + 5000])
            report.rows[name] = report.rows.get(name, 0) + len(rows)
            report.linked[name] = report.linked.get(name, 0) + sum(1 for v in new.values() if v is not None)
            report.changed += len(changes)
    return report


def link_rows(rl: RecordLinker, table: str, rows: Sequence[Any]) -> dict[Any, int | None]:
    """(row id, system, code, description, …) rows of one record table → row id: entity id or None."""
    memo: dict[tuple, int | None] = {}
    new: dict[Any, int | None] = {}
    for rid, system, code, desc, *_rest in rows:
        key = (system, code, desc)
        if key not in memo:
            memo[key] = rl.entity_for(table, system, code, desc)
        new[rid] = memo[key]
    _propagate_codes(rows, new)
    return new


def _propagate_codes(rows: Iterable[Any], new: dict[int, int | None]) -> None:
    """A code all of whose linked rows agree on one entity lends it to its rows that found none."""
    votes: dict[tuple, Counter] = defaultdict(Counter)
    for rid, system, code, *_rest in rows:
        if code and new[rid] is not None:
            votes[(canonical_system(system), code)][new[rid]] += 1
    for rid, system, code, *_rest in rows:
        if new[rid] is None and code:
            v = votes.get((canonical_system(system), code))
            if v and len(v) == 1:
                new[rid] = next(iter(v))


def _record_tenants(store: KnowledgeStore) -> list[str]:
    with store.session() as s:
        return sorted(t for (t,) in s.execute(select(m.Patient.tenant_id).distinct()))


def relink_mentions(store: KnowledgeStore) -> RelinkReport:
    """Mentions of every chunk recomputed from its text with the current dictionary; only differences written."""
    report = RelinkReport()
    linkers: dict[str, EntityLinker] = {}
    last = 0
    while True:
        with store.session() as s:
            chunks = s.execute(select(m.Chunk.id, m.Chunk.tenant_id, m.Chunk.text).where(m.Chunk.id > last)
                               .order_by(m.Chunk.id).limit(CHUNK_BATCH)).all()
            if not chunks:
                break
            last = chunks[-1][0]
            ids = [c[0] for c in chunks]
            have: dict[int, dict[int, int]] = defaultdict(dict)
            for cid, eid, cnt in s.execute(select(m.Mention.chunk_id, m.Mention.entity_id, m.Mention.count)
                                           .where(m.Mention.chunk_id.in_(ids))):
                have[cid][eid] = cnt
            add: list[dict[str, Any]] = []
            gone: list[tuple[int, int]] = []
            for cid, tenant, text in chunks:
                if tenant not in linkers:
                    linkers[tenant] = EntityLinker.load(store, None if tenant == m.PUBLIC_TENANT else tenant)
                want = linkers[tenant].entity_ids(text or "")
                old = have.get(cid, {})
                add += [{"chunk_id": cid, "entity_id": e, "tenant_id": tenant, "count": n}
                        for e, n in want.items() if e not in old]
                gone += [(cid, e) for e in old if e not in want]
            for cid, e in gone:
                s.execute(delete(m.Mention).where(m.Mention.chunk_id == cid, m.Mention.entity_id == e))
            if add:
                s.execute(insert(m.Mention.__table__), add)
            report.chunks += len(chunks)
            report.mentions_added += len(add)
            report.mentions_removed += len(gone)
    if report.mentions_added or report.mentions_removed:
        with store.session() as s:
            store._bump_generation(s)  # the graph generator and caches see the new mentions
    return report


def relink(store: KnowledgeStore) -> RelinkReport:
    """Records of every tenant, then document mentions: what `medkb graph relink` and ontology loads run."""
    rec = relink_records(store)
    men = relink_mentions(store)
    rec.chunks, rec.mentions_added, rec.mentions_removed = men.chunks, men.mentions_added, men.mentions_removed
    return rec
