"""When to send a request again: a 503 that carries Retry-After (the service is saturated for a moment), after
the wait it asks for, a bounded number of times. A 503 without Retry-After (a model that cannot be served)
and every other status are final."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class RetryPolicy:
    """`retries`: how many times a request is sent again after a 503 with Retry-After (0: never);
    `max_wait`: the longest wait, in seconds, the client accepts; a service that asks for longer is not
    retried (its 503 is raised at once)."""

    retries: int = 3
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, found {self.retries}")
        if not self.max_wait >= 0:
            raise ValueError(f"max_retry_wait must be >= 0 seconds, found {self.max_wait}")

    def wait_before_retry(self, response: httpx.Response, retried: int) -> float | None:
        """Seconds to wait before sending again, or None when this answer is final."""
        if response.status_code != 503 or retried >= self.retries:
            return None
        wait = retry_after(response)
        return wait if wait is not None and wait <= self.max_wait else None


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds: a number of seconds or an HTTP date (RFC 9110); None when absent or
    unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
