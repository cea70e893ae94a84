"""Circe cohort definitions (OHDSI ATLAS JSON): the documented subset, parsed and checked; anything else refused by path."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from medkb.errors import InvalidInput

# Circe criteria names → the record domain they read.
DOMAINS = {"ConditionOccurrence": "condition", "DrugExposure": "drug", "ProcedureOccurrence": "procedure",
           "Measurement": "measurement", "Observation": "observation", "VisitOccurrence": "visit",
           "Death": "death", "ObservationPeriod": "observation_period"}
GENDERS = {8507: "male", 8532: "female"}
MAX_RULES = 30  # masks are 64-bit integers; far more rules than any readable attrition table
_OCCURRENCE = {0: "=", 1: "<=", 2: ">="}
_OPS = ("gt", "gte", "lt", "lte", "eq", "bt", "!bt")


class UnsupportedElement(InvalidInput):
    """A Circe element outside medkb's documented subset: refused, never silently ignored."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path}: {what} is not supported by medkb's cohort engine (see README: Cohorts)")
        self.path = path


def _bad(path: str, what: str) -> InvalidInput:
    err = InvalidInput(f"{path}: {what}")
    err.path = path  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class ConceptItem:
    concept_id: int | None
    vocabulary: str | None
    code: str | None
    name: str | None
    descendants: bool = False
    excluded: bool = False
    mapped: bool = False


@dataclass(frozen=True)
class ConceptSet:
    id: int
    name: str
    items: tuple[ConceptItem, ...]


@dataclass(frozen=True)
class Criterion:
    domain: str
    codeset_id: int | None
    first: bool
    path: str


@dataclass(frozen=True)
class Endpoint:
    days: int | None  # None: unbounded (the observation period's edge unless it is ignored)
    coeff: int  # -1 before the index date, +1 after


@dataclass(frozen=True)
class Window:
    start: Endpoint
    end: Endpoint
    use_index_end: bool = False
    use_event_end: bool = False


@dataclass(frozen=True)
class Correlated:
    criterion: Criterion
    window: Window
    ignore_observation_period: bool
    occurrence: str  # "=", "<=", ">="
    count: int


@dataclass(frozen=True)
class NumericRange:
    op: str
    value: float
    extent: float | None = None


@dataclass(frozen=True)
class Demographic:
    age: NumericRange | None
    genders: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    type: str  # ALL | ANY | AT_LEAST | AT_MOST
    count: int | None
    criteria: tuple[Correlated, ...]
    demographics: tuple[Demographic, ...]
    groups: tuple["Group", ...]

    def is_empty(self) -> bool:
        return not (self.criteria or self.demographics or self.groups)


@dataclass(frozen=True)
class Rule:
    name: str
    group: Group


@dataclass(frozen=True)
class Definition:
    concept_sets: tuple[ConceptSet, ...]
    primary: tuple[Criterion, ...]
    prior_days: int
    post_days: int
    primary_limit: str  # All | First | Last
    additional: Group | None
    qualified_limit: str
    rules: tuple[Rule, ...]
    expression_limit: str
    end_offset: tuple[str, int] | None  # ("start_date" | "end_date", days); None: end of observation period
    era_pad: int
    hash: str = field(default="")


def definition_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _empty(v: Any) -> bool:
    return v is None or v == [] or v == {} or v is False or v == ""


def _check_keys(obj: dict[str, Any], path: str, allowed: set[str], ignored: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for k, v in obj.items():
        if k not in allowed and k not in ignored and not _empty(v):
            raise UnsupportedElement(f"{path}.{k}", f"'{k}'")


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(path, f"expected an object, got {type(v).__name__}")
    return v


def _list(v: Any, path: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _bad(path, f"expected a list, got {type(v).__name__}")
    return v


def _int(v: Any, path: str, default: int | None = None) -> int:
    if v is None and default is not None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise _bad(path, f"expected an integer, got {v!r}")
    return int(v)


def _limit(obj: dict[str, Any], key: str) -> str:
    lim = _obj(obj.get(key) or {"Type": "All"}, key)
    _check_keys(lim, key, {"Type"})
    t = str(lim.get("Type") or "All").capitalize()
    if t not in ("All", "First", "Last"):
        raise _bad(f"{key}.Type", f"expected All, First or Last, got {lim.get('Type')!r}")
    return t


def _concept_sets(v: Any) -> tuple[ConceptSet, ...]:
    out = []
    for i, cs in enumerate(_list(v, "ConceptSets")):
        p = f"ConceptSets[{i}]"
        cs = _obj(cs, p)
        _check_keys(cs, p, {"id", "name", "expression"})
        expr = _obj(cs.get("expression") or {}, f"{p}.expression")
        _check_keys(expr, f"{p}.expression", {"items"})
        items = []
        for j, it in enumerate(_list(expr.get("items"), f"{p}.expression.items")):
            ip = f"{p}.expression.items[{j}]"
            it = _obj(it, ip)
            _check_keys(it, ip, {"concept", "isExcluded", "includeDescendants", "includeMapped"})
            c = _obj(it.get("concept"), f"{ip}.concept")
            cid = c.get("CONCEPT_ID")
            if cid is None and not (c.get("VOCABULARY_ID") and c.get("CONCEPT_CODE")):
                raise _bad(f"{ip}.concept", "needs CONCEPT_ID, or VOCABULARY_ID and CONCEPT_CODE")
            items.append(ConceptItem(
                None if cid is None else _int(cid, f"{ip}.concept.CONCEPT_ID"),
                c.get("VOCABULARY_ID"), None if c.get("CONCEPT_CODE") is None else str(c["CONCEPT_CODE"]),
                c.get("CONCEPT_NAME"), bool(it.get("includeDescendants")), bool(it.get("isExcluded")),
                bool(it.get("includeMapped"))))
        out.append(ConceptSet(_int(cs.get("id"), f"{p}.id"), str(cs.get("name") or ""), tuple(items)))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise _bad("ConceptSets", "concept set ids must be unique")
    return tuple(out)


def _criterion(v: Any, path: str, codesets: set[int]) -> Criterion:
    v = _obj(v, path)
    if len(v) != 1:
        raise _bad(path, "expected exactly one criteria type, e.g. {\"ConditionOccurrence\": {...}}")
    (name, body), = v.items()
    if name not in DOMAINS:
        raise UnsupportedElement(f"{path}.{name}", f"criteria type '{name}'")
    body = _obj(body or {}, f"{path}.{name}")
    allowed = {"First"} | ({"CodesetId"} if name not in ("Death", "ObservationPeriod") else set())
    _check_keys(body, f"{path}.{name}", allowed)
    cs = body.get("CodesetId")
    if cs is not None:
        cs = _int(cs, f"{path}.{name}.CodesetId")
        if cs not in codesets:
            raise _bad(f"{path}.{name}.CodesetId", f"no concept set with id {cs}")
    return Criterion(DOMAINS[name], cs, bool(body.get("First")), f"{path}.{name}")


def _endpoint(v: Any, path: str) -> Endpoint:
    v = _obj(v or {}, path)
    _check_keys(v, path, {"Days", "Coeff"})
    coeff = _int(v.get("Coeff"), f"{path}.Coeff", 1)
    if coeff not in (-1, 1):
        raise _bad(f"{path}.Coeff", "expected -1 or 1")
    return Endpoint(None if v.get("Days") is None else _int(v["Days"], f"{path}.Days"), coeff)


def _correlated(v: Any, path: str, codesets: set[int]) -> Correlated:
    v = _obj(v, path)
    _check_keys(v, path, {"Criteria", "StartWindow", "Occurrence", "IgnoreObservationPeriod"},
                ignored={"RestrictVisit"} if v.get("RestrictVisit") is False else set())
    sw = _obj(v.get("StartWindow"), f"{path}.StartWindow")
    _check_keys(sw, f"{path}.StartWindow", {"Start", "End", "UseIndexEnd", "UseEventEnd"})
    occ = _obj(v.get("Occurrence"), f"{path}.Occurrence")
    _check_keys(occ, f"{path}.Occurrence", {"Type", "Count"}, ignored={"IsDistinct", "CountColumn"}
                if not occ.get("IsDistinct") else set())
    t = _int(occ.get("Type"), f"{path}.Occurrence.Type")
    if t not in _OCCURRENCE:
        raise _bad(f"{path}.Occurrence.Type", "expected 0 (exactly), 1 (at most) or 2 (at least)")
    window = Window(_endpoint(sw.get("Start"), f"{path}.StartWindow.Start"),
                    _endpoint(sw.get("End"), f"{path}.StartWindow.End"),
                    bool(sw.get("UseIndexEnd")), bool(sw.get("UseEventEnd")))
    return Correlated(_criterion(v.get("Criteria"), f"{path}.Criteria", codesets), window,
                      bool(v.get("IgnoreObservationPeriod")), _OCCURRENCE[t],
                      _int(occ.get("Count"), f"{path}.Occurrence.Count"))


def _range(v: Any, path: str) -> NumericRange:
    v = _obj(v, path)
    _check_keys(v, path, {"Value", "Op", "Extent"})
    op = str(v.get("Op") or "")
    if op not in _OPS:
        raise _bad(f"{path}.Op", f"expected one of {', '.join(_OPS)}")
    if not isinstance(v.get("Value"), (int, float)):
        raise _bad(f"{path}.Value", "expected a number")
    extent = v.get("Extent")
    if op.endswith("bt") and not isinstance(extent, (int, float)):
        raise _bad(f"{path}.Extent", "a between range needs a numeric Extent")
    return NumericRange(op, float(v["Value"]), None if extent is None else float(extent))


def _demographic(v: Any, path: str) -> Demographic:
    v = _obj(v, path)
    _check_keys(v, path, {"Age", "Gender"})
    genders = []
    for i, g in enumerate(_list(v.get("Gender"), f"{path}.Gender")):
        cid = _int(_obj(g, f"{path}.Gender[{i}]").get("CONCEPT_ID"), f"{path}.Gender[{i}].CONCEPT_ID")
        if cid not in GENDERS:
            raise UnsupportedElement(f"{path}.Gender[{i}]", f"gender concept {cid} (only 8507 male, 8532 female)")
        genders.append(GENDERS[cid])
    age = None if v.get("Age") is None else _range(v["Age"], f"{path}.Age")
    return Demographic(age, tuple(genders))


def _group(v: Any, path: str, codesets: set[int]) -> Group:
    v = _obj(v, path)
    _check_keys(v, path, {"Type", "Count", "CriteriaList", "DemographicCriteriaList", "Groups"})
    t = str(v.get("Type") or "ALL").upper()
    if t not in ("ALL", "ANY", "AT_LEAST", "AT_MOST"):
        raise _bad(f"{path}.Type", "expected ALL, ANY, AT_LEAST or AT_MOST")
    count = _int(v.get("Count"), f"{path}.Count") if t.startswith("AT_") else None
    return Group(
        t, count,
        tuple(_correlated(c, f"{path}.CriteriaList[{i}]", codesets)
              for i, c in enumerate(_list(v.get("CriteriaList"), f"{path}.CriteriaList"))),
        tuple(_demographic(d, f"{path}.DemographicCriteriaList[{i}]")
              for i, d in enumerate(_list(v.get("DemographicCriteriaList"), f"{path}.DemographicCriteriaList"))),
        tuple(_group(g, f"{path}.Groups[{i}]", codesets) for i, g in enumerate(_list(v.get("Groups"), f"{path}.Groups"))),
    )


def parse_definition(raw: Any) -> Definition:
    """A Circe cohort expression (dict or JSON text) → Definition; InvalidInput naming the JSON path otherwise."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _bad("$", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    raw = _obj(raw, "$")
    _check_keys(raw, "$", {"ConceptSets", "PrimaryCriteria", "AdditionalCriteria", "QualifiedLimit", "InclusionRules",
                           "ExpressionLimit", "EndStrategy", "CollapseSettings"},
                ignored={"cdmVersionRange", "Title", "title", "CensoringCriteria", "CensorWindow"}
                if not raw.get("CensoringCriteria") and not raw.get("CensorWindow") else {"cdmVersionRange"})
    sets = _concept_sets(raw.get("ConceptSets"))
    ids = {c.id for c in sets}
    pc = _obj(raw.get("PrimaryCriteria"), "PrimaryCriteria")
    _check_keys(pc, "PrimaryCriteria", {"CriteriaList", "ObservationWindow", "PrimaryCriteriaLimit"})
    primary = tuple(_criterion(c, f"PrimaryCriteria.CriteriaList[{i}]", ids)
                    for i, c in enumerate(_list(pc.get("CriteriaList"), "PrimaryCriteria.CriteriaList")))
    if not primary:
        raise _bad("PrimaryCriteria.CriteriaList", "needs at least one entry event")
    ow = _obj(pc.get("ObservationWindow") or {}, "PrimaryCriteria.ObservationWindow")
    _check_keys(ow, "PrimaryCriteria.ObservationWindow", {"PriorDays", "PostDays"})
    additional = raw.get("AdditionalCriteria")
    rules = []
    for i, r in enumerate(_list(raw.get("InclusionRules"), "InclusionRules")):
        r = _obj(r, f"InclusionRules[{i}]")
        _check_keys(r, f"InclusionRules[{i}]", {"name", "description", "expression"})
        rules.append(Rule(str(r.get("name") or f"rule {i}"), _group(r.get("expression"), f"InclusionRules[{i}].expression", ids)))
    if len(rules) > MAX_RULES:
        raise _bad("InclusionRules", f"at most {MAX_RULES} rules")
    end = None
    es = raw.get("EndStrategy")
    if es:
        es = _obj(es, "EndStrategy")
        _check_keys(es, "EndStrategy", {"DateOffset"})
        do = _obj(es.get("DateOffset"), "EndStrategy.DateOffset")
        _check_keys(do, "EndStrategy.DateOffset", {"DateField", "Offset"})
        fld = do.get("DateField")
        if fld not in ("StartDate", "EndDate"):
            raise _bad("EndStrategy.DateOffset.DateField", "expected StartDate or EndDate")
        end = ("end_date" if fld == "EndDate" else "start_date", _int(do.get("Offset"), "EndStrategy.DateOffset.Offset", 0))
    cs = _obj(raw.get("CollapseSettings") or {"CollapseType": "ERA", "EraPad": 0}, "CollapseSettings")
    _check_keys(cs, "CollapseSettings", {"CollapseType", "EraPad"})
    if str(cs.get("CollapseType") or "ERA").upper() != "ERA":
        raise UnsupportedElement("CollapseSettings.CollapseType", f"collapse type {cs.get('CollapseType')!r}")
    return Definition(
        concept_sets=sets, primary=primary,
        prior_days=_int(ow.get("PriorDays"), "PrimaryCriteria.ObservationWindow.PriorDays", 0),
        post_days=_int(ow.get("PostDays"), "PrimaryCriteria.ObservationWindow.PostDays", 0),
        primary_limit=_limit(pc, "PrimaryCriteriaLimit"),
        additional=None if not additional else _group(additional, "AdditionalCriteria", ids),
        qualified_limit=_limit(raw, "QualifiedLimit"), rules=tuple(rules),
        expression_limit=_limit(raw, "ExpressionLimit"), end_offset=end,
        era_pad=_int(cs.get("EraPad"), "CollapseSettings.EraPad", 0), hash=definition_hash(raw),
    )
