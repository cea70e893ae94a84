"""Dictionary entity linking: longest match over folded names (Aho-Corasick), abbreviations, Chinese, codes."""

from __future__ import annotations

import re
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import ahocorasick
from sqlalchemy import func, select

from medkb.kb import models as m
from medkb.kb.graph.names import ABBREVIATIONS, fold, fold_with_offsets, is_cjk, usable_name
from medkb.kb.graph.relations import TYPE_PRIORITY
from medkb.kb.store import KnowledgeStore

# Case-sensitive tokens (abbreviations, gene symbols): letters, digits, hyphen, starting with a letter.
_TOKEN = re.compile(r"(?<![\w-])[A-Za-z][A-Za-z0-9-]{1,11}(?![\w-])")
# Names stored for lookup by code or display only: modifiers ("Frequent"), sentences from labels.
UNLINKED_LANGUAGES = frozenset({"code", "text"})
MIN_SYMBOL = 3  # shorter gene symbols ("AR", "F8") collide with too much ordinary text


@dataclass(frozen=True)
class EntityMatch:
    entity_id: int
    name: str
    type: str
    codes: dict[str, list[str]]
    start: int  # character offsets into the linked text
    end: int
    surface: str


_cache: weakref.WeakKeyDictionary[KnowledgeStore, dict[str | None, tuple[tuple, EntityLinker]]] = \
    weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _signature(store: KnowledgeStore) -> tuple:
    """Changes whenever a name is added or removed (ontology loads and deletes bump the generation too)."""
    with store.session() as s:
        n, top = s.execute(select(func.count(m.EntityName.id), func.max(m.EntityName.id))).one()
    return store.generation(), int(n or 0), int(top or 0)


class EntityLinker:
    """Built once from ``entity_names`` and reused: ``link`` never touches the database."""

    def __init__(self, entities: dict[int, tuple[str, str, dict[str, list[str]]]],
                 folded: dict[str, int], exact: dict[str, int]) -> None:
        self.entities, self.exact = entities, exact
        # Symbols with a digit also in other cases: mouse and yeast genes are written "Chd1", "Twist1", "MeCP2"
        # for the same gene as "CHD1"; a token with a digit in it is no English word that could collide.
        self.exact_digit = {k.upper(): v for k, v in exact.items() if any(c.isdigit() for c in k)}
        self.automaton: Any = ahocorasick.Automaton()
        for norm, eid in folded.items():
            self.automaton.add_word(norm, (len(norm), eid))
        if folded:
            self.automaton.make_automaton()
        self.size = len(folded) + len(exact)
        self.load_seconds = 0.0

    # ---- building -------------------------------------------------------------------------

    @classmethod
    def load(cls, store: KnowledgeStore, tenant_id: str | None = None) -> EntityLinker:
        """The linker for ``store`` (public entities plus ``tenant_id``'s), rebuilt only after names change."""
        sig = _signature(store)
        with _cache_lock:
            hit = _cache.get(store, {}).get(tenant_id)
            if hit is not None and hit[0] == sig:
                return hit[1]
            t0 = time.perf_counter()
            linker = cls._build(store, tenant_id)
            linker.load_seconds = time.perf_counter() - t0
            _cache.setdefault(store, {})[tenant_id] = (sig, linker)
            return linker

    @classmethod
    def _build(cls, store: KnowledgeStore, tenant_id: str | None) -> EntityLinker:
        tenants = [m.PUBLIC_TENANT] + ([tenant_id] if tenant_id and tenant_id != m.PUBLIC_TENANT else [])
        entities: dict[int, tuple[str, str, dict[str, list[str]]]] = {}
        best: dict[str, tuple[int, int]] = {}  # norm → (rank, entity id)
        exact: dict[str, tuple[int, int]] = {}
        with store.session() as s:
            for eid, name, typ, codes in s.execute(
                select(m.Entity.id, m.Entity.name, m.Entity.type, m.Entity.codes)
                .where(m.Entity.tenant_id.in_(tenants))
            ):
                entities[eid] = (name, typ, codes or {})
            rows = s.execute(select(m.EntityName.norm, m.EntityName.language, m.EntityName.entity_id))
            for norm, lang, eid in rows:
                ent = entities.get(eid)
                if ent is None or lang in UNLINKED_LANGUAGES:
                    continue
                rank = TYPE_PRIORITY.get(ent[1], len(TYPE_PRIORITY))
                if lang == "sym":
                    if len(ent[0]) >= MIN_SYMBOL and ent[0] not in exact:
                        exact[ent[0]] = (rank, eid)
                    continue
                if usable_name(norm) and (norm not in best or (rank, eid) < best[norm]):
                    best[norm] = (rank, eid)
            by_code = cls._abbreviation_targets(s)
        folded = {k: v[1] for k, v in best.items()}
        exact_ids = {k: v[1] for k, v in exact.items()}
        for abbr, system, code, name in ABBREVIATIONS:
            eid = by_code.get((system, code)) or folded.get(name)
            if eid is None or eid not in entities:
                continue
            if is_cjk(abbr):
                folded[fold(abbr)] = eid  # curated Chinese shorthand wins over a partial dictionary hit
            else:
                exact_ids[abbr] = eid
        return cls(entities, folded, exact_ids)

    @staticmethod
    def _abbreviation_targets(s: Any) -> dict[tuple[str, str], int]:
        wanted = {(sy, c) for _a, sy, c, _n in ABBREVIATIONS}
        codes = sorted({c for _sy, c in wanted})
        rows = s.execute(select(m.EntityCode.system, m.EntityCode.code, m.EntityCode.entity_id)
                         .where(m.EntityCode.code.in_(codes)))
        return {(sy, c): e for sy, c, e in rows if (sy, c) in wanted}

    # ---- linking --------------------------------------------------------------------------

    def link(self, text: str) -> list[EntityMatch]:
        """Non-overlapping matches, longest first, in text order; one entity per match."""
        if not text:
            return []
        cands: list[tuple[int, int, int]] = []  # (start, end, entity id) in original offsets
        if len(self.automaton):
            folded, pos = fold_with_offsets(text)
            for end, (length, eid) in self.automaton.iter(folded):
                start = end - length + 1
                if _bounded(folded, start, end):
                    cands.append((pos[start], pos[end] + 1, eid))
        if self.exact:
            for mt in _TOKEN.finditer(text):
                tok = mt.group()
                eid = self.exact.get(tok)
                if eid is None and self.exact_digit:
                    eid = self.exact_digit.get(tok.upper())
                if eid is not None:
                    cands.append((mt.start(), mt.end(), eid))
        cands.sort(key=lambda c: (c[0] - c[1], c[0]))
        taken: list[tuple[int, int, int]] = []
        used = bytearray(len(text))
        for c in cands:
            if not any(used[c[0] : c[1]]):
                used[c[0] : c[1]] = b"\x01" * (c[1] - c[0])
                taken.append(c)
        taken.sort()
        out = []
        for start, end, eid in taken:
            name, typ, codes = self.entities[eid]
            out.append(EntityMatch(eid, name, typ, codes, start, end, text[start:end]))
        return out

    def entity_ids(self, text: str) -> dict[int, int]:
        """{entity id: mention count}, the shape ``ChunkIn.entity_ids`` takes."""
        counts: dict[int, int] = {}
        for mt in self.link(text):
            counts[mt.entity_id] = counts.get(mt.entity_id, 0) + 1
        return counts


def _bounded(folded: str, start: int, end: int) -> bool:
    """A latin/digit match must be whole words; CJK needs no boundary (no spaces between words)."""
    first, last = folded[start], folded[end]
    left_ok = start == 0 or folded[start - 1] == " " or is_cjk(first) or is_cjk(folded[start - 1])
    right_ok = end == len(folded) - 1 or folded[end + 1] == " " or is_cjk(last) or is_cjk(folded[end + 1])
    return left_ok and right_ok
