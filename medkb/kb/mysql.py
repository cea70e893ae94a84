"""MySQL 8.0+ / MariaDB 10.11+ backend: float32 blob embeddings searched in-process (``kb/inprocess.py``)."""

from __future__ import annotations

from sqlalchemy import Engine

from medkb.kb.inprocess import InProcessVectors


class MySQLStore(InProcessVectors):
    """For hospitals that already run MySQL or MariaDB: the shared SQL in ``kb/store.py`` plus exact
    cosine search over a cached matrix, filters applied in SQL, reloaded when the generation moves."""

    write_lanes = 4

    def __init__(self, engine: Engine, flavor: str = "mysql") -> None:
        super().__init__(engine)
        self.backend = flavor  # "mysql" or "mariadb", as the server said
