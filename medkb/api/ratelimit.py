"""Per-API-key rate limits (the `limits` package, moving window) on the answer (LLM-backed) and search endpoints."""

from __future__ import annotations

import math
import time

from medkb.errors import ConfigError, RateLimited
from medkb.settings import APISettings


class RateLimits:
    """One moving-window limiter per kind of endpoint, counted per API key.

    ``memory://`` storage counts per process: with ``serve --workers N`` each worker allows the limit, so
    point ``MEDKB_API_RATE_LIMIT_STORAGE`` at a shared store (e.g. ``redis://``) to hold one limit across them.
    """

    def __init__(self, api: APISettings) -> None:
        from limits import parse
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        try:
            self.items = {"answers": parse(api.rate_limit_answers), "search": parse(api.rate_limit_search)}
            self.limiter = MovingWindowRateLimiter(storage_from_string(api.rate_limit_storage))
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"MEDKB_API_RATE_LIMIT_*: {exc} (expected e.g. '30/minute', 'memory://')") from None

    def hit(self, kind: str, key_id: str) -> None:
        """Count one request of ``key_id``; RateLimited (429, Retry-After) when its window is full."""
        item = self.items[kind]
        if self.limiter.hit(item, kind, key_id):
            return
        reset = self.limiter.get_window_stats(item, kind, key_id).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        raise RateLimited(f"rate limit of {item} {kind} requests per API key reached; retry in {retry} s",
                          retry_after=retry)
