"""What every MySQL-protocol server (MySQL, MariaDB, TiDB) shares: connection and TLS, the probe, version floors."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from medkb.errors import ConfigError
from medkb.settings import DatabaseSettings

# utf8mb4_bin compares bytes, as SQLite does: "Aspirin" and "aspirin" are two names, not one duplicate.
CHARSET, COLLATION = "utf8mb4", "utf8mb4_bin"
# Oldest server of each kind medkb runs on, and why.
FLOORS: dict[str, tuple[tuple[int, ...], str]] = {
    "tidb": ((8, 4, 0), "the VECTOR type and VEC_COSINE_DISTANCE (8.5 LTS recommended)"),
    "mysql": ((8, 0, 0), "utf8mb4_bin and window functions"),
    "mariadb": ((10, 11, 0), "INSERT … RETURNING and JSON functions (10.11 LTS)"),
}


@dataclass(frozen=True)
class ServerInfo:
    """The kind and version of the server behind a URL, from ``SELECT VERSION()``."""

    flavor: str  # tidb | mysql | mariadb
    version: tuple[int, ...]
    raw: str

    @property
    def label(self) -> str:
        return f"{self.flavor} {'.'.join(map(str, self.version))}"


def parse_version(raw: str) -> ServerInfo:
    """'8.0.11-TiDB-v8.5.1' → tidb 8.5.1; '10.11.6-MariaDB-…' → mariadb 10.11.6; '8.0.36' → mysql 8.0.36."""
    tidb = re.search(r"TiDB-v?(\d+)\.(\d+)\.(\d+)", raw, re.I)
    if tidb:
        return ServerInfo("tidb", tuple(int(x) for x in tidb.groups()), raw)
    nums = re.findall(r"(\d+)\.(\d+)\.(\d+)", raw)
    if "mariadb" in raw.lower():
        # A replication-compatible prefix ("5.5.5-10.11.6-MariaDB") is not the version.
        major = next((n for n in nums if n[0] != "5" or n[1] != "5"), nums[-1] if nums else ("0", "0", "0"))
        return ServerInfo("mariadb", tuple(int(x) for x in major), raw)
    return ServerInfo("mysql", tuple(int(x) for x in (nums[0] if nums else ("0", "0", "0"))), raw)


def probe(conn: Connection) -> ServerInfo:
    return parse_version(str(conn.execute(text("SELECT VERSION()")).scalar()))


def floor_problems(info: ServerInfo, conn: Connection | None = None) -> list[str]:
    """What this server lacks for medkb, in words; empty when it is fit. With ``conn``, features are
    tried on the server itself rather than inferred from the version alone."""
    floor, why = FLOORS[info.flavor]
    problems = []
    if info.version < floor:
        problems.append(
            f"{info.label} is older than {info.flavor} {'.'.join(map(str, floor))}, which medkb needs for {why}"
        )
    if conn is not None and info.flavor == "tidb" and not problems:
        try:
            conn.execute(text("SELECT VEC_COSINE_DISTANCE('[1,0]', '[0,1]')"))
        except Exception as exc:  # noqa: BLE001 - any failure means the function is missing
            problems.append(f"VEC_COSINE_DISTANCE is not available on this TiDB ({str(exc).splitlines()[0]})")
    return problems


def check_server(conn: Connection) -> ServerInfo:
    """Refuse, before any DDL runs, a server that cannot hold medkb's schema (MySQL DDL is not
    transactional: a migration that fails half-way leaves tables that make the re-run fail too)."""
    info = probe(conn)
    problems = floor_problems(info, conn)
    if problems:
        raise ConfigError("unsupported database server: " + "; ".join(problems))
    return info


def pin_collation(conn: Connection) -> bool:
    """Make utf8mb4_bin the database default before medkb creates its tables there (converting
    tables afterwards is refused on MariaDB while foreign keys join them); True if it changed."""
    current = conn.execute(text("SELECT default_collation_name FROM information_schema.schemata "
                                "WHERE schema_name = DATABASE()")).scalar()
    if current == COLLATION:
        return False
    conn.execute(text(f"ALTER DATABASE CHARACTER SET {CHARSET} COLLATE {COLLATION}"))
    return True


def tls_context(db: DatabaseSettings) -> ssl.SSLContext | None:
    """An SSLContext that does exactly what the settings say (pymysql's ``ssl=`` dict with the verify
    flags beside it silently drops the CA file); None when no CA is configured."""
    if db.ssl_ca is None:
        return None
    if not db.ssl_ca.is_file():
        raise ConfigError(f"MEDKB_DATABASE_SSL_CA={db.ssl_ca}: no such file (expected a PEM CA bundle)")
    try:
        ctx = ssl.create_default_context(cafile=str(db.ssl_ca))
    except ssl.SSLError as exc:
        raise ConfigError(f"MEDKB_DATABASE_SSL_CA={db.ssl_ca}: not a PEM CA bundle ({exc})") from exc
    ctx.check_hostname = db.ssl_verify_cert and db.ssl_verify_identity
    ctx.verify_mode = ssl.CERT_REQUIRED if db.ssl_verify_cert else ssl.CERT_NONE
    return ctx


def connect_args(db: DatabaseSettings) -> dict[str, Any]:
    args: dict[str, Any] = {"charset": CHARSET, "collation": COLLATION, "connect_timeout": 10}
    ctx = tls_context(db)
    if ctx is not None:
        args["ssl"] = ctx
    return args


# ---- the restricted application user --------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")
_HOST = re.compile(r"[A-Za-z0-9_.%:-]{1,255}")


def app_user_sql(database: str, user: str, host: str, tables: list[str], password: str) -> list[str]:
    """CREATE USER and table-level GRANTs for the account ``medkb serve`` should use: every DML on
    medkb's tables except ``audit_log``, where only INSERT and SELECT — so the audit trail is
    append-only even on TiDB, which has no triggers. Migrations keep running as the owner."""
    if not _NAME.fullmatch(user):
        raise ConfigError(f"--app-user {user!r}: expected 1-32 letters, digits or underscores")
    if not _HOST.fullmatch(host):
        raise ConfigError(f"--app-host {host!r}: expected a host name, address or '%'")
    who = f"'{user}'@'{host}'"
    stmts = [f"CREATE USER IF NOT EXISTS {who} IDENTIFIED BY '{password}'"]
    for table in tables:
        privileges = {"audit_log": "SELECT, INSERT", "alembic_version": "SELECT"}.get(
            table, "SELECT, INSERT, UPDATE, DELETE")
        stmts.append(f"GRANT {privileges} ON `{database}`.`{table}` TO {who}")
    return stmts
