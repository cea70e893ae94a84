"""Small-cell suppression for every released cohort number: primary, differences, sums (complementary suppression)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medkb.cohorts.engine import Attrition, CohortCounts
from medkb.errors import InvalidInput

PRESETS = {"cms": 11, "ohdsi": 5}
DEFAULT_MIN_CELL_COUNT = PRESETS["cms"]


def min_cell_count(value: int | str | None) -> int:
    """A threshold from a number or a preset name (cms = 11, ohdsi = 5); 11 when unset."""
    if value is None:
        return DEFAULT_MIN_CELL_COUNT
    if isinstance(value, str) and not value.strip().isdigit():
        try:
            return PRESETS[value.strip().lower()]
        except KeyError:
            raise InvalidInput(f"min cell count: a number >= 1 or a preset ({', '.join(PRESETS)}), not {value!r}") \
                from None
    n = int(value)
    if n < 1:
        raise InvalidInput(f"min cell count must be at least 1, not {n}")
    return n


@dataclass
class _Cell:
    path: str
    value: int
    suppressed: bool = False


class Suppressor:
    """Decides which cells of one release are withheld.

    1. primary: every count 1..t-1 (zero may be shown);
    2. differences: no two released counts differ by 1..t-1, since either could be subtracted from the other;
    3. sums: where released cells add up (a total and its parts), never exactly one part withheld.
    The rules repeat until nothing changes, so a withheld cell is never the only unknown of any relation."""

    def __init__(self, threshold: int) -> None:
        self.t = threshold
        self.cells: dict[str, _Cell] = {}
        self.sums: list[tuple[str, list[str]]] = []

    def add(self, path: str, value: int) -> None:
        self.cells[path] = _Cell(path, int(value))

    def add_sum(self, total: str, parts: list[str]) -> None:
        self.sums.append((total, parts))

    def run(self) -> set[str]:
        t = self.t
        for c in self.cells.values():
            if 0 < c.value < t:
                c.suppressed = True
        changed = True
        while changed:
            changed = False
            shown = sorted((c for c in self.cells.values() if not c.suppressed), key=lambda c: c.value)
            for a, b in zip(shown, shown[1:]):  # sorted: the closest pairs are neighbours
                if 0 < b.value - a.value < t:
                    a.suppressed = changed = True
                    break
            if changed:
                continue
            for total, parts in self.sums:
                group = [self.cells[p] for p in [total, *parts]]
                hidden = [c for c in group if c.suppressed]
                if len(hidden) == 1:
                    rest = sorted((c for c in group if not c.suppressed and c.value > 0 and c.path != total),
                                  key=lambda c: c.value)
                    (rest[0] if rest else self.cells[total]).suppressed = changed = True
                    if not rest and self.cells[total].value == 0:
                        for c in group:
                            c.suppressed = True
        return {c.path for c in self.cells.values() if c.suppressed}

    def value(self, path: str) -> int | str:
        c = self.cells[path]
        return f"<{self.t}" if c.suppressed else c.value


def _attrition_cells(s: Suppressor, prefix: str, a: Attrition) -> None:
    s.add(f"{prefix}.base_count", a.base_count)
    s.add(f"{prefix}.final_count", a.final_count)
    for i, r in enumerate(a.rules):
        p = f"{prefix}.rules[{i}]"
        s.add(f"{p}.person_count", r.person_count)
        s.add(f"{p}.gain_count", r.gain_count)
        s.add(f"{p}.person_total", r.person_total)
        s.add_sum(f"{p}.person_total", [f"{prefix}.base_count"])  # the same number twice
    if len(a.rules) == 1:  # with one rule: base = meets + fails (= gain), and final = meets
        p = f"{prefix}.rules[0]"
        s.add_sum(f"{prefix}.base_count", [f"{p}.person_count", f"{p}.gain_count"])
        s.add_sum(f"{prefix}.final_count", [f"{p}.person_count"])


def _attrition_json(s: Suppressor, prefix: str, a: Attrition) -> dict[str, Any]:
    return {"base_count": s.value(f"{prefix}.base_count"), "final_count": s.value(f"{prefix}.final_count"),
            "rules": [{"sequence": r.sequence, "name": r.name,
                       "person_count": s.value(f"{prefix}.rules[{i}].person_count"),
                       "gain_count": s.value(f"{prefix}.rules[{i}].gain_count"),
                       "person_total": s.value(f"{prefix}.rules[{i}].person_total")}
                      for i, r in enumerate(a.rules)]}


def count_report(c: CohortCounts, threshold: int) -> dict[str, Any]:
    """The released report: {"cohort", "attrition": {"by_person", "by_event"}, "min_cell_count", "suppressed"}."""
    s = Suppressor(threshold)
    s.add("cohort.persons", c.persons)
    s.add("cohort.entries", c.entries)
    _attrition_cells(s, "attrition.by_person", c.by_person)
    _attrition_cells(s, "attrition.by_event", c.by_event)
    suppressed = s.run()
    return {"cohort": {"persons": s.value("cohort.persons"), "entries": s.value("cohort.entries")},
            "attrition": {"by_person": _attrition_json(s, "attrition.by_person", c.by_person),
                          "by_event": _attrition_json(s, "attrition.by_event", c.by_event)},
            "min_cell_count": threshold, "suppressed": sorted(suppressed)}


def feasibility_report(per_tenant: dict[str, CohortCounts], threshold: int) -> dict[str, Any]:
    """Persons and entries per tenant and in total, each suppressed, so no tenant's figure follows from the total."""
    s = Suppressor(threshold)
    tenants = sorted(per_tenant)
    for key in ("persons", "entries"):
        for t in tenants:
            s.add(f"tenants.{t}.{key}", getattr(per_tenant[t], key))
        s.add(f"total.{key}", sum(getattr(per_tenant[t], key) for t in tenants))
        s.add_sum(f"total.{key}", [f"tenants.{t}.{key}" for t in tenants])
    suppressed = s.run()
    return {"tenants": {t: {"persons": s.value(f"tenants.{t}.persons"), "entries": s.value(f"tenants.{t}.entries")}
                        for t in tenants},
            "total": {"persons": s.value("total.persons"), "entries": s.value("total.entries")},
            "min_cell_count": threshold, "suppressed": sorted(suppressed)}
