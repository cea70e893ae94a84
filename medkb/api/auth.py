"""API keys: random secrets shown once, stored as id prefix + salted scrypt hash, bound to tenant and role."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from sqlalchemy import select, update

from medkb.errors import AuthenticationError, InvalidInput, NotFound, PermissionDenied
from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore

ROLES = ("clinician", "curator", "admin", "researcher")  # researcher: suppressed cohort aggregates only
PATIENT_ROLES = ("clinician", "admin")
KEY_PREFIX = "mk"
# scrypt at n=2^14, r=8: ~16 MiB and tens of ms per check; verified keys are cached per process.
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id (never the secret), its tenant and role."""

    key_id: str
    tenant_id: str
    role: str

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise PermissionDenied(f"role {self.role!r} may not do this (needs {' or '.join(roles)})")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant_id: str
    role: str
    name: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def _hash(secret: str, salt: bytes) -> str:
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def _check(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt_hex, digest_hex = stored.split("$")
        if kind != "scrypt":
            return False
        digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r),
                                p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


def create_key(store: KnowledgeStore, tenant_id: str, role: str, name: str | None = None) -> tuple[str, str]:
    """Create a key; returns (key id, the full key). The full key is never stored and cannot be shown again."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not tenant_id or len(tenant_id) > 64:
        raise InvalidInput("tenant must be 1-64 characters")
    store.ensure_tenant(tenant_id)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with store.engine.begin() as c:
        c.execute(m.ApiKey.__table__.insert().values(
            id=key_id, tenant_id=tenant_id, role=role, key_hash=_hash(secret, secrets.token_bytes(16)),
            name=name, created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        ))
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"


def list_keys(store: KnowledgeStore, tenant_id: str | None = None) -> list[KeyInfo]:
    t = m.ApiKey.__table__
    q = select(t.c.id, t.c.tenant_id, t.c.role, t.c.name, t.c.created_at, t.c.revoked_at).order_by(t.c.created_at)
    if tenant_id:
        q = q.where(t.c.tenant_id == tenant_id)
    with store.engine.connect() as c:
        return [KeyInfo(*row) for row in c.execute(q)]


def revoke_key(store: KnowledgeStore, key_id: str) -> None:
    t = m.ApiKey.__table__
    with store.engine.begin() as c:
        res = c.execute(update(t).where(t.c.id == key_id, t.c.revoked_at.is_(None))
                        .values(revoked_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
        if res.rowcount == 0:
            exists = c.execute(select(t.c.id).where(t.c.id == key_id)).first()
            if exists is None:
                raise NotFound(f"no API key {key_id!r}")


class KeyVerifier:
    """Checks presented keys. Each request reads the key row (so a revocation takes effect at once);
    the expensive scrypt check is remembered per (row hash, presented secret)."""

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store
        self._ok: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def verify(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthenticationError("missing API key (send 'Authorization: Bearer <key>' or 'X-API-Key')")
        parts = presented.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
            raise AuthenticationError("invalid API key")
        key_id, secret = parts[1], parts[2]
        t = m.ApiKey.__table__
        with self.store.engine.connect() as c:
            row = c.execute(select(t.c.tenant_id, t.c.role, t.c.key_hash, t.c.revoked_at)
                            .where(t.c.id == key_id)).first()
        if row is None or row.revoked_at is not None:
            raise AuthenticationError("invalid API key")
        memo = (row.key_hash, hashlib.sha256(secret.encode()).hexdigest())
        with self._lock:
            ok = self._ok.get(memo)
        if ok is None:
            ok = _check(secret, row.key_hash)
            with self._lock:
                if len(self._ok) > 10_000:
                    self._ok.clear()
                self._ok[memo] = ok
        if not ok:
            raise AuthenticationError("invalid API key")
        return Principal(key_id=key_id, tenant_id=row.tenant_id, role=row.role)
