"""`medkb cohort count|feasibility`: research counts of Circe cohort definitions, every number suppressed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from medkb.cli.context import get_ctx
from medkb.errors import InvalidInput

console = Console()
err = Console(stderr=True)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None


def _print(report: dict[str, Any]) -> None:
    console.print(f"cohort: {report['cohort']['persons']} persons, {report['cohort']['entries']} entries "
                  f"(cells under {report['min_cell_count']} suppressed)")
    for mode in ("by_person", "by_event"):
        a = report["attrition"][mode]
        t = Table("rule", "name", "meets", "gain (fails only this)", "of", title=f"attrition {mode.replace('_', ' ')}: "
                  f"{a['base_count']} → {a['final_count']}")
        for r in a["rules"]:
            t.add_row(str(r["sequence"]), r["name"], str(r["person_count"]), str(r["gain_count"]), str(r["person_total"]))
        console.print(t)


def register(app: typer.Typer) -> None:
    cohort = typer.Typer(help="Research cohorts (OHDSI Circe JSON): counts, attrition, feasibility; all suppressed.",
                         no_args_is_help=True)

    @cohort.command("count")
    def count(
        ctx: typer.Context,
        tenant: Annotated[str, typer.Option("--tenant", help="Tenant (hospital) whose patients are counted.")],
        definition: Annotated[Optional[Path], typer.Argument(help="A Circe cohort definition (ATLAS JSON).")] = None,
        condition: Annotated[Optional[str], typer.Option("--condition", help="Quick form: a condition in words.")] = None,
        drug: Annotated[Optional[str], typer.Option("--drug", help="Quick form: a drug in words.")] = None,
        after: Annotated[Optional[int], typer.Option("--after", help="Quick form: the condition within N days "
                                                                      "after the drug.")] = None,
        min_cell_count: Annotated[Optional[str], typer.Option(
            "--min-cell-count", help="Smallest count shown: a number, or a preset: cms (11, default), ohdsi (5).")] = None,
        disable_rule: Annotated[Optional[list[int]], typer.Option(
            "--disable-rule", help="Leave inclusion rule N out (repeatable); recomputed from stored rule masks.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    ) -> None:
        """Persons and entries of a cohort with attrition by person and by event.

        Example: medkb cohort count tests/cohorts/eunomia_gi_bleed.json --tenant research --json
        Example: medkb cohort count def.json --tenant research --disable-rule 2 --min-cell-count ohdsi
        Example: medkb cohort count --condition "GI bleeding" --drug celecoxib --after 365 --tenant research
        """
        from medkb.cohorts.service import count as run

        c = get_ctx(ctx)
        if definition is not None:
            raw = _load(definition)
        else:
            from medkb.cohorts.quick import quick_definition

            raw, resolved = quick_definition(c.store, condition=condition, drug=drug, after=after)
            for r in resolved:  # printed before counting, for the researcher to check
                codes = ", ".join(f"{k} {' '.join(v)}" for k, v in sorted(r.codes.items()))
                err.print(f"--{r.role} {r.text!r} → {r.name} ({codes}), with descendants", markup=False)
        report = run(c.store, raw, tenant, threshold=min_cell_count or c.settings.cohort.min_cell_count,
                     disabled_rules=disable_rule or (), reuse=bool(disable_rule))
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print(report)

    @cohort.command("feasibility")
    def feasibility(
        ctx: typer.Context,
        definition: Annotated[Path, typer.Argument(help="A Circe cohort definition (ATLAS JSON export).")],
        tenant: Annotated[list[str], typer.Option("--tenant", help="A tenant to count in (repeat for each hospital).")],
        min_cell_count: Annotated[Optional[str], typer.Option("--min-cell-count", help="Number or preset.")] = None,
    ) -> None:
        """Counts per hospital and in total for a regional feasibility study; no row is returned.

        Example: medkb cohort feasibility def.json --tenant hospital-a --tenant hospital-b
        """
        from medkb.cohorts.service import feasibility as run

        c = get_ctx(ctx)
        typer.echo(json.dumps(run(c.store, _load(definition), tenant,
                                  threshold=min_cell_count or c.settings.cohort.min_cell_count), indent=2))

    @cohort.command("members")
    def members(
        ctx: typer.Context,
        definition: Annotated[Path, typer.Argument(help="A Circe cohort definition (ATLAS JSON export).")],
        tenant: Annotated[str, typer.Option("--tenant", help="The one tenant whose members are listed.")],
    ) -> None:
        """Pseudonymous members with cohort dates and failed rules (operator's CLI = admin; audited).

        Example: medkb cohort members def.json --tenant research > members.json
        """
        from medkb.api import audit
        from medkb.api.auth import Principal
        from medkb.cohorts import engine
        from medkb.cohorts.definition import parse_definition

        store = get_ctx(ctx).store
        d = parse_definition(_load(definition))
        audit.record(store, Principal("cli", tenant, "admin"), "cohort_members", endpoint="cli:cohort members",
                     patient_id=None, detail={"definition_hash": d.hash})
        run = engine.generate(store, d, tenant)
        eras = engine.members(store, d, run)
        typer.echo(json.dumps({"definition_hash": d.hash, "members": [
            {"person_id": p, "cohort_start_date": str(a), "cohort_end_date": str(b)} for p, a, b in eras],
            "failed_rules": engine.failed_rules(store, d, run)}, indent=2))

    @cohort.command("export")
    def export(
        ctx: typer.Context,
        definition: Annotated[Path, typer.Argument(help="A Circe cohort definition (ATLAS JSON export).")],
        tenant: Annotated[str, typer.Option("--tenant", help="The one tenant whose members are exported.")],
        out: Annotated[Path, typer.Option("--out", help="A new or empty folder for the dataset.")],
        fmt: Annotated[str, typer.Option("--format", help="csv | parquet")] = "csv",
    ) -> None:
        """The members' de-identified rows as an OMOP CDM (CSV or Parquet) with manifest.json (audited).

        Example: medkb cohort export def.json --tenant research --out study-42 --format parquet
        """
        from medkb.api import audit
        from medkb.api.auth import Principal
        from medkb.cohorts.definition import parse_definition
        from medkb.cohorts.export import export as run

        c = get_ctx(ctx)
        d = parse_definition(_load(definition))
        audit.record(c.store, Principal("cli", tenant, "admin"), "cohort_export", endpoint="cli:cohort export",
                     patient_id=None, detail={"definition_hash": d.hash, "format": fmt})
        manifest = run(c.store, d, tenant, out, fmt=fmt, threshold=c.settings.cohort.min_cell_count)
        console.print(f"exported {len(manifest['files'])} tables to {out}; manifest.json lists rows and sha256")

    app.add_typer(cohort, name="cohort")
