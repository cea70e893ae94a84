"""Per-connection temporary tables for set-at-a-time evaluation, and the DDL and join hints that differ per backend."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import Column, Connection, Index, MetaData, Table
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import DDLElement
from sqlalchemy.sql import Select
from sqlalchemy.sql.selectable import Join
from sqlalchemy.sql.functions import FunctionElement

_NAMES = itertools.count()


class _DropTemporary(DDLElement):
    def __init__(self, name: str) -> None:
        self.name = name


@compiles(_DropTemporary)
def _drop_default(element: _DropTemporary, compiler: Any, **kw: Any) -> str:
    return f"DROP TABLE IF EXISTS {element.name}"


@compiles(_DropTemporary, "mysql")
def _drop_mysql(element: _DropTemporary, compiler: Any, **kw: Any) -> str:
    # Without TEMPORARY, MySQL/MariaDB/TiDB commit the open transaction (the cohort run's rows with it).
    return f"DROP TEMPORARY TABLE IF EXISTS {element.name}"


def in_written_order(q: Select[Any]) -> Select[Any]:
    """Join in FROM order on MySQL/MariaDB/TiDB (STRAIGHT_JOIN): their planner, misled by per-patient estimates,
    starts from observation periods and reads every row of each patient through the patient index (6x slower
    at Eunomia x10) instead of the concept set's rows through the covering index. SQLite plans these well."""
    if any(text == "STRAIGHT_JOIN" for text, _ in q._prefixes):
        return q
    return q.prefix_with("STRAIGHT_JOIN", dialect="mysql")


class outer_key(FunctionElement):  # type: ignore[type-arg]
    """A join key read from the outer side only: on SQLite ``+col``, which keeps the planner from copying a range
    on that column to the inner table through the join's equality (with a person range on the events, SQLite then
    drove the join from the observation periods and read a range of events per period: quadratic)."""

    inherit_cache = True
    name = "outer_key"


@compiles(outer_key)
def _outer_key_default(element: outer_key, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # type: ignore[no-any-return]


@compiles(outer_key, "sqlite")
def _outer_key_sqlite(element: outer_key, compiler: Any, **kw: Any) -> str:
    return f"+{compiler.process(element.clauses, **kw)}"


class ordered_join(Join):  # noqa: N801 - reads like the SQL it renders
    """An inner join SQLite must drive from its left side (``CROSS JOIN``, which its planner never reorders): a
    few keys probing a large derived table's index. Left to itself SQLite scanned the large side once more and
    probed an automatic index of the keys. Other backends: a plain inner join."""

    inherit_cache = True


@compiles(ordered_join)
def _ordered_join_default(element: ordered_join, compiler: Any, **kw: Any) -> str:
    return compiler.visit_join(element, **kw)  # type: ignore[no-any-return]


@compiles(ordered_join, "sqlite")
def _ordered_join_sqlite(element: ordered_join, compiler: Any, asfrom: bool = False, from_linter: Any = None,
                         **kw: Any) -> str:
    if from_linter:
        from_linter.edges.update((a, b) for a in element.left._from_objects for b in element.right._from_objects)
    side = {"asfrom": True, "from_linter": from_linter, **kw}
    return (f"{element.left._compiler_dispatch(compiler, **side)} CROSS JOIN "
            f"{element.right._compiler_dispatch(compiler, **side)} ON "
            f"{element.onclause._compiler_dispatch(compiler, from_linter=from_linter, **kw)}")


class TempTables:
    """Temporary tables of one unit of work, on its connection: created, filled from a SELECT, indexed after the
    fill (one sort instead of a b-tree insert per row), and dropped when the work ends, whatever happens."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.meta = MetaData()
        self.prefix = f"tmp_{uuid.uuid4().hex[:8]}_"
        self.tables: list[Table] = []
        if conn.dialect.name == "sqlite":
            # The temp schema has its own small page cache; spilling large intermediate sets to a file each
            # statement costs more than the memory (SQLite's default is 2 MB).
            conn.exec_driver_sql("PRAGMA temp.cache_size = -262144")

    def new(self, columns: list[Column[Any]], select: Select[Any] | None = None,
            index: tuple[str, ...] = ()) -> Table:
        t = Table(f"{self.prefix}{next(_NAMES)}", self.meta, *columns, prefixes=["TEMPORARY"])
        t.create(self.conn)
        self.tables.append(t)
        if select is not None:
            self.fill(t, select)
        if index:
            self.index(t, *index)
        return t

    def fill(self, t: Table, select: Select[Any]) -> None:
        # in written order on MySQL-family backends also when ``select`` wraps a hinted one: merging the derived
        # table drops its hint (entry events at Eunomia x10: from periods through the patient index, 3.3 s)
        self.conn.execute(t.insert().from_select([c.name for c in t.columns], in_written_order(select)))

    def index(self, t: Table, *cols: str) -> None:
        Index(f"{t.name}_ix{len(t.indexes)}", *(t.c[c] for c in cols)).create(self.conn)

    def drop_all(self) -> None:
        for t in reversed(self.tables):
            self.conn.execute(_DropTemporary(t.name))
        self.tables.clear()


__all__ = ["TempTables", "in_written_order", "ordered_join", "outer_key"]
