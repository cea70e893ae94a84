"""MySQL 8.0+ / MariaDB 10.11+ backend: float32 blob embeddings searched in-process (``kb/inprocess.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

from medkb.kb.inprocess import InProcessVectors

# MariaDB moves an internal temporary table (a window's or GROUP BY's rows) above tmp_table_size (16 MB by
# default) to an Aria file, and a sort above sort_buffer_size (2 MB) to merge files, in its tmpdir (/tmp): slow,
# and on a shared machine such a file was pulled away mid-query ("Error on delete of '/tmp/#sql-temptable-….MAI'
# (Errcode: 2)", a cohort benchmark at Eunomia x10). Sessions keep more in memory; MySQL 8's TempTable engine
# already keeps up to 1 GB in memory.
MARIADB_SESSION = "SET SESSION tmp_table_size = 268435456, max_heap_table_size = 268435456, sort_buffer_size = 16777216"


class MySQLStore(InProcessVectors):
    """For hospitals that already run MySQL or MariaDB: the shared SQL in ``kb/store.py`` plus exact
    cosine search over a cached matrix, filters applied in SQL, reloaded when the generation moves."""

    write_lanes = 4

    def __init__(self, engine: Engine, flavor: str = "mysql") -> None:
        super().__init__(engine)
        self.backend = flavor  # "mysql" or "mariadb", as the server said
        if flavor == "mariadb":
            event.listen(engine, "connect", _mariadb_session)
            engine.dispose()  # the probe's pooled connection predates the hook


def _mariadb_session(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(MARIADB_SESSION)
    cur.close()
