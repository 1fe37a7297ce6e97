"""Reconnect delays and rate budgets, as pure arithmetic over ``now``.

Why our own backoff: the websockets reconnect iterator resets its delays after any
successful open, so a server that accepts and drops at once is hammered (1220
reconnects/s measured). :class:`Backoff` keeps counting failures until a connection
has stayed up for ``min_uptime`` and never returns a delay below ``floor`` after a
quick drop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Backoff",
    "BackoffStats",
    "CloseKind",
    "RetryDecision",
    "TokenBucket",
    "classify_status",
]


class CloseKind(StrEnum):
    """Why a connection attempt or session ended, as far as the retry policy cares."""

    DROPPED = "dropped"  # network error, close frame, stale, server-directed
    RATE_LIMITED = "rate_limited"  # HTTP 429 on the handshake
    SERVER_ERROR = "server_error"  # HTTP 5xx on the handshake
    AUTH_REJECTED = "auth_rejected"  # HTTP 401/403: never retried silently
    REJECTED = "rejected"  # any other 4xx: a config problem, retried slowly


def classify_status(status: int) -> CloseKind:
    if status == 429:
        return CloseKind.RATE_LIMITED
    if status in (401, 403):
        return CloseKind.AUTH_REJECTED
    if status >= 500:
        return CloseKind.SERVER_ERROR
    return CloseKind.REJECTED


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: float
    reason: str


@dataclass(frozen=True)
class BackoffStats:
    failures: int
    last_delay: float
    total_attempts: int


class Backoff:
    """Capped exponential backoff with full jitter that never gives up and never spins.

    delay = max(floor, uniform(0, min(maximum, initial * 2**failures)))
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        initial: float = 0.5,
        maximum: float = 30.0,
        min_uptime: float = 5.0,
        rate_limit_floor: float = 10.0,
    ) -> None:
        self._rng = rng
        self.initial = initial
        self.maximum = maximum
        self.min_uptime = min_uptime
        self.rate_limit_floor = rate_limit_floor
        self._failures = 0
        self._last_delay = 0.0
        self._attempts = 0

    def _jittered(self, floor: float) -> float:
        cap = min(self.maximum, self.initial * (2.0**self._failures))
        return max(floor, self._rng.uniform(0.0, cap))

    def after_close(
        self,
        uptime: float | None,
        kind: CloseKind = CloseKind.DROPPED,
        retry_after: float | None = None,
    ) -> RetryDecision:
        """Decide what to do after an attempt ended. ``uptime`` is None when it never opened."""
        self._attempts += 1
        if kind is CloseKind.AUTH_REJECTED:
            self._failures += 1
            self._last_delay = 0.0
            return RetryDecision(False, 0.0, "credentials rejected (HTTP 401/403); not retrying")
        if uptime is not None and uptime >= self.min_uptime and kind is CloseKind.DROPPED:
            # A connection that was healthy for a while: reconnect promptly, but with jitter so
            # a whole pool dropped by one server restart does not reconnect in lockstep.
            self._failures = 0
            delay = self._rng.uniform(0.0, self.initial)
            reason = f"dropped after {uptime:.1f}s up"
        elif kind in (CloseKind.RATE_LIMITED, CloseKind.SERVER_ERROR, CloseKind.REJECTED):
            self._failures += 1
            floor = self.rate_limit_floor if kind is CloseKind.RATE_LIMITED else self.initial
            if retry_after is not None:
                floor = max(floor, retry_after)
            delay = min(max(floor, self._jittered(floor)), max(self.maximum, floor))
            reason = f"{kind.value}; retry in {delay:.2f}s"
        else:
            self._failures += 1
            # Opened and dropped at once, or never opened: always wait at least `initial`.
            delay = self._jittered(self.initial)
            reason = "dropped quickly" if uptime is not None else "connect failed"
        self._last_delay = delay
        return RetryDecision(True, delay, reason)

    def reset(self) -> None:
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures

    def statistics(self) -> BackoffStats:
        return BackoffStats(self._failures, self._last_delay, self._attempts)

    def __repr__(self) -> str:
        return f"<Backoff failures={self._failures} last={self._last_delay:.2f}s>"


class TokenBucket:
    """``count`` events per ``per`` seconds, with a burst of ``count``.

    :meth:`reserve` hands out future slots in order, so N callers that all want a
    token get staggered delays instead of all retrying at the same instant.
    """

    def __init__(self, count: float, per: float, now: float) -> None:
        if count <= 0 or per <= 0:
            raise ValueError("token bucket needs count > 0 and per > 0")
        self.capacity = float(count)
        self.rate = count / per
        self._tokens = float(count)
        self._at = now
        self.granted = 0
        self.delayed = 0

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def try_acquire(self, now: float, n: float = 1.0) -> bool:
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            self.granted += 1
            return True
        return False

    def reserve(self, now: float, n: float = 1.0) -> float:
        """Take ``n`` tokens now or in the future; return how long the caller must wait."""
        self._refill(now)
        self._tokens -= n
        self.granted += 1
        if self._tokens >= 0:
            return 0.0
        self.delayed += 1
        return -self._tokens / self.rate

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def used_fraction(self, now: float) -> float:
        """How much of the burst is spent (1.0 = empty or in debt): feeds capacity alerts."""
        return min(1.0, max(0.0, 1.0 - self.available(now) / self.capacity))

    def __repr__(self) -> str:
        return f"<TokenBucket {self._tokens:.2f}/{self.capacity:.0f} rate={self.rate:.3f}/s>"
