"""server backends: utf8mb4_bin, DATETIME(6), append-only audit_log on MySQL / MariaDB

Revision ID: 0003_issue12
Revises: 0002_issue20
"""
from __future__ import annotations

from alembic import op
from sqlalchemy import text
from sqlalchemy.dialects.mysql import DATETIME

revision = "0003_issue12"
down_revision = "0002_issue20"
branch_labels = None
depends_on = None

# (table, column, nullable) of every timestamp in 0001, created as DATETIME (whole seconds) on MySQL.
TIMESTAMPS = (
    ("tenants", "created_at", False), ("sources", "created_at", False), ("sources", "updated_at", False),
    ("documents", "created_at", False), ("api_keys", "created_at", False), ("api_keys", "revoked_at", True),
    ("audit_log", "at", False),
)
MEDKB_TABLES = (
    "kb_meta", "tenants", "sources", "documents", "chunks", "entities", "entity_codes", "entity_names",
    "edges", "mentions", "patients", "encounters", "conditions", "medications", "observations", "allergies",
    "procedures", "observation_periods", "api_keys", "audit_log",
)


def _flavor() -> str:
    version = str(op.get_bind().execute(text("SELECT VERSION()")).scalar())
    return "tidb" if "tidb" in version.lower() else "mysql"


def upgrade() -> None:
    if op.get_context().dialect.name != "mysql":
        return  # SQLite compares bytes, keeps microseconds and has its audit triggers from 0001
    bind = op.get_bind()
    # The binary collation (uniqueness as on SQLite: "Aspirin" != "aspirin"). ``init`` makes it the
    # database default before 0001 runs; tables an older init created otherwise are converted here
    # (TiDB's default already is utf8mb4_bin, and 0001 could not run on MySQL / MariaDB before).
    if bind.execute(text("SELECT default_collation_name FROM information_schema.schemata "
                         "WHERE schema_name = DATABASE()")).scalar() != "utf8mb4_bin":
        op.execute("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    rows = bind.execute(text(
        "SELECT table_name, table_collation FROM information_schema.tables WHERE table_schema = DATABASE()"
    )).all()
    collations = {str(name).lower(): coll for name, coll in rows}
    convert = [t for t in MEDKB_TABLES if collations.get(t, "utf8mb4_bin") != "utf8mb4_bin"]
    if convert:
        op.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in convert:
            op.execute(f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        op.execute("SET FOREIGN_KEY_CHECKS = 1")
    for table, column, nullable in TIMESTAMPS:
        op.alter_column(table, column, type_=DATETIME(fsp=6), existing_nullable=nullable)
    if _flavor() == "tidb":
        from medkb.kb.tidb import drop_redundant_fk_indexes

        drop_redundant_fk_indexes(bind)
        return  # TiDB has no triggers: the restricted application user (medkb init --app-user) instead
    for verb in ("UPDATE", "DELETE"):
        name = f"audit_log_no_{verb.lower()}"
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {verb} ON audit_log FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_log is append-only'"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "mysql":
        return
    if _flavor() != "tidb":
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_log_no_{verb}")
    for table, column, nullable in TIMESTAMPS:
        op.alter_column(table, column, type_=DATETIME(), existing_nullable=nullable)
