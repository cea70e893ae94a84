"""The cohort operations the CLI and API expose: released (suppressed) counts, attrition and feasibility."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from medkb.cohorts import engine
from medkb.cohorts.definition import parse_definition
from medkb.cohorts.disclosure import count_report, feasibility_report, min_cell_count
from medkb.kb.store import KnowledgeStore


def count(store: KnowledgeStore, definition: Any, tenant: str, *, threshold: int | str | None = None,
          disabled_rules: Iterable[int] = (), reuse: bool = False) -> dict[str, Any]:
    """Suppressed counts and attrition of a Circe definition in one tenant.

    ``reuse`` recomputes from the rule masks stored by the last run of this definition (switching rules off
    without regenerating); without a stored run it generates one."""
    d = parse_definition(definition)
    run_id = engine.latest_run(store, d, tenant) if reuse else None
    c = engine.counts(store, d, tenant, disabled_rules=disabled_rules, run_id=run_id)
    return count_report(c, min_cell_count(threshold))


def feasibility(store: KnowledgeStore, definition: Any, tenants: Iterable[str], *,
                threshold: int | str | None = None) -> dict[str, Any]:
    """Persons and entries per tenant and in total, every cell suppressed; no row leaves the database."""
    d = parse_definition(definition)
    per = {t: engine.counts(store, d, t) for t in dict.fromkeys(tenants)}
    return feasibility_report(per, min_cell_count(threshold))
