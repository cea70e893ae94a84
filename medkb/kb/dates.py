"""Date arithmetic in SQL, compiled per backend (SQLite: day numbers, ``types.Day``; MySQL/MariaDB/TiDB: DATE_ADD,
YEAR, TO_DAYS); all else is shared."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from medkb.kb.types import Day


class date_add(FunctionElement[Any]):  # noqa: N801 - reads like the SQL it renders
    """``date + days`` (days an integer expression or literal)."""

    type = Day()
    name = "date_add"
    inherit_cache = True


class year_of(FunctionElement[Any]):  # noqa: N801
    """The calendar year of a date, as an integer."""

    type = Integer()
    name = "year_of"
    inherit_cache = True


@compiles(date_add, "sqlite")
def _date_add_sqlite(element: date_add, compiler: Any, **kw: Any) -> str:
    d, n = list(element.clauses)  # a day number plus days
    return f"({compiler.process(d, **kw)} + {compiler.process(n, **kw)})"


@compiles(date_add, "mysql")
def _date_add_mysql(element: date_add, compiler: Any, **kw: Any) -> str:
    d, n = list(element.clauses)
    return f"DATE_ADD({compiler.process(d, **kw)}, INTERVAL {compiler.process(n, **kw)} DAY)"


@compiles(year_of, "sqlite")
def _year_sqlite(element: year_of, compiler: Any, **kw: Any) -> str:
    (d,) = list(element.clauses)
    return f"CAST(strftime('%Y', {compiler.process(d, **kw)}) AS INTEGER)"


@compiles(year_of, "mysql")
def _year_mysql(element: year_of, compiler: Any, **kw: Any) -> str:
    (d,) = list(element.clauses)
    return f"YEAR({compiler.process(d, **kw)})"


def plus_days(d: Any, days: int) -> Any:
    """``d + days`` for a constant number of days; ``d`` itself for 0 (saves a date computation per row)."""
    return d if days == 0 else date_add(d, days)


class greatest(FunctionElement[Any]):  # noqa: N801
    """The later of two dates (NULL if either is): SQLite's scalar max(), GREATEST elsewhere."""

    type = Day()
    name = "greatest"
    inherit_cache = True


class least(FunctionElement[Any]):  # noqa: N801
    """The earlier of two dates (NULL if either is): SQLite's scalar min(), LEAST elsewhere."""

    type = Day()
    name = "least"
    inherit_cache = True


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: Any, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"


@compiles(greatest)
def _greatest_default(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(least)
def _least_default(element: least, compiler: Any, **kw: Any) -> str:
    return f"LEAST({compiler.process(element.clauses, **kw)})"


class day_number(FunctionElement[Any]):  # noqa: N801
    """A date as a number of days (TO_DAYS; SQLite stores dates as day numbers): date + n is then plain addition."""

    type = Integer()
    name = "day_number"
    inherit_cache = True


@compiles(day_number, "sqlite")
def _day_number_sqlite(element: day_number, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)})"


@compiles(day_number)
def _day_number_default(element: day_number, compiler: Any, **kw: Any) -> str:
    return f"TO_DAYS({compiler.process(element.clauses, **kw)})"
