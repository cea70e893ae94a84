"""De-identification before storage: keyed pseudonyms, per-patient date shifts, birth year (free text: phi.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from medkb.errors import ConfigError

MAX_SHIFT_DAYS = 365
# HIPAA Safe Harbor: ages over 89 are reported as one group, so birth years are floored there.
MAX_AGE = 90


def parse_date(value: str | None) -> dt.date | None:
    """The date part of an ISO date or date-time ('2005-06-18T21:23:30Z'); None when blank."""
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise ValueError(f"not an ISO date: {value[:32]!r}") from None


class Deidentifier:
    """Everything keyed by a secret that never enters the database: pseudonyms and date offsets.

    The same secret, tenant and source id always give the same pseudonym and offset, which is what makes
    a re-ingest idempotent; without the secret neither can be reversed or recomputed."""

    def __init__(self, secret: str, tenant_id: str) -> None:
        if not secret:
            raise ConfigError("de-identification needs a secret (MEDKB_PRIVACY_SECRET)")
        self._key = secret.encode()
        self.tenant_id = tenant_id

    def _mac(self, purpose: str, source_id: str) -> bytes:
        msg = f"{purpose}\x00{self.tenant_id}\x00{source_id}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def patient_id(self, source_id: str) -> str:
        """Pseudonymous patient id: HMAC-SHA256(secret, tenant + source id), 24 hex characters."""
        return "p" + self._mac("patient", source_id).hex()[:24]

    def date_offset(self, source_id: str) -> int:
        """A per-patient shift of ±1…365 days (never 0, so no true date survives)."""
        n = int.from_bytes(self._mac("shift", source_id)[:4], "big")
        days = n % MAX_SHIFT_DAYS + 1
        return days if n & (1 << 31) else -days

    def shift(self, source_id: str, d: dt.date | None) -> dt.date | None:
        return None if d is None else d + dt.timedelta(days=self.date_offset(source_id))

    @staticmethod
    def birth_year(birth: dt.date | None, today: dt.date | None = None) -> int | None:
        if birth is None:
            return None
        today = today or dt.date.today()
        return max(birth.year, today.year - MAX_AGE)

