"""The one medkb exception family, mapped once to HTTP status codes and once to CLI messages.

Hierarchy::

    MedkbError
    ├── ConfigError            bad settings or URL                      (HTTP 500, CLI exit 2)
    ├── DatabaseUnavailable    the database cannot be reached            (HTTP 503, CLI exit 3)
    │   └── DatabaseBusy       a write conflict / deadlock outlasted the bounded retries
    ├── DatabaseError          the server refused a statement (code)     (HTTP 500, CLI exit 8)
    ├── NotFound               an id/name that does not exist            (HTTP 404, CLI exit 4)
    ├── InvalidInput           a request or file that is malformed       (HTTP 422, CLI exit 2)
    │   └── BadRecord          one bad file/line/field during ingestion
    ├── Conflict               state forbids it (e.g. embedding dim)     (HTTP 409, CLI exit 5)
    ├── AuthenticationError    missing or wrong API key                  (HTTP 401, CLI exit 6)
    ├── PermissionDenied       right key, wrong role or tenant           (HTTP 403, CLI exit 6)
    ├── RateLimited            an API key over its request rate          (HTTP 429 + Retry-After)
    └── UpstreamError          the LLM or another dependency failed      (HTTP 502, CLI exit 7)
"""

from __future__ import annotations


class MedkbError(Exception):
    """Base of every error medkb raises on purpose; its message is safe to show a user."""

    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(MedkbError):
    http_status = 500
    exit_code = 2


class DatabaseUnavailable(MedkbError):
    http_status = 503
    exit_code = 3


class StorageError(DatabaseUnavailable):
    """The database cannot write at all: its disk is full or it is read-only. Stops a run (every later write
    would fail the same way); what was committed before stays intact."""


class DatabaseBusy(DatabaseUnavailable):
    """A transient conflict (deadlock, write conflict, lock wait): retried a bounded number of times."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DatabaseError(MedkbError):
    """The server is up but refused the statement (e.g. TiDB 8004 transaction too large); names the code."""

    http_status = 500
    exit_code = 8

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(MedkbError):
    http_status = 404
    exit_code = 4


class InvalidInput(MedkbError):
    http_status = 422
    exit_code = 2


class BadRecord(InvalidInput):
    """One input item is bad: names the file, the line (or record) and the field."""

    def __init__(
        self, path: str, reason: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        where = path
        if line is not None:
            where += f":{line}"
        if field:
            where += f" [{field}]"
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.field, self.reason = path, line, field, reason


class Conflict(MedkbError):
    http_status = 409
    exit_code = 5


class AuthenticationError(MedkbError):
    http_status = 401
    exit_code = 6


class PermissionDenied(MedkbError):
    http_status = 403
    exit_code = 6


class RateLimited(MedkbError):
    http_status = 429
    exit_code = 9

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, sent as the Retry-After header


class UpstreamError(MedkbError):
    http_status = 502
    exit_code = 7
