"""The persistent notification outbox: written before any send, removed only on acceptance.

``enqueue`` commits the notification to SQLite first; one delivery task per channel
then sends that channel's rows oldest first. A row leaves the outbox in the same
transaction that records the delivery, so a crash at any point leaves it queued and
the next run replays it: delivery is at least once, and the stable notification id
(``X-Wsgate-Delivery``, the email Message-ID) lets receivers make it exactly once.

The policy pieces (``Backoff``, ``TokenBucket``, ``CircuitBreaker``) are pure: they
take ``now`` and never read a clock.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wsgate.errors import DeliveryError
from wsgate.runtime.ops.notifiers.base import (
    ChannelGone,
    DeliveryResult,
    NotificationPayload,
    Notifier,
    channel_wants,
)
from wsgate.runtime.persistence.store import OutboxRow, Store

__all__ = [
    "Backoff",
    "BreakerState",
    "ChannelStatistics",
    "CircuitBreaker",
    "Outbox",
    "OutboxStatistics",
    "TokenBucket",
    "test_payload",
]

log = logging.getLogger("wsgate.outbox")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
DisabledCallback = Callable[[str, str], None]


# -- pure policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (AWS "Exponential Backoff and Jitter")."""

    base: float = 1.0
    cap: float = 300.0

    def ceiling(self, attempt: int) -> float:
        """Upper bound before jitter for the ``attempt``-th failure (1-based)."""
        return min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 32))

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The wait before the next attempt; a server's Retry-After is used as given."""
        jittered = rng.uniform(0.0, self.ceiling(attempt))
        if retry_after is not None:
            return max(retry_after, 0.0)
        return jittered


class TokenBucket:
    """``count`` sends per ``per`` seconds, bursts up to ``count``."""

    def __init__(self, count: int, per: float, now: float) -> None:
        if count < 1 or per <= 0:
            raise ValueError(f"rate must be >= 1 per > 0 s, got {count}/{per}")
        self.capacity = float(count)
        self.rate = count / per
        self.tokens = float(count)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def ready_at(self, now: float) -> float:
        """When one token will be available (``now`` if one is)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return now
        return now + (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def __repr__(self) -> str:
        return f"<TokenBucket {self.tokens:.2f}/{self.capacity:g} at {self.rate:g}/s>"


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; one trial after ``reset_after`` s."""

    def __init__(self, threshold: int = 5, reset_after: float = 60.0) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0

    def _set(self, state: BreakerState, why: str) -> None:
        if state is not self.state:
            log.debug("breaker %s -> %s (%s)", self.state.value, state.value, why)
            self.state = state

    def ready_at(self, now: float) -> float:
        """When a call may be made; moves OPEN to HALF_OPEN once the wait is over."""
        if self.state is BreakerState.OPEN:
            if now >= self.opened_at + self.reset_after:
                self._set(BreakerState.HALF_OPEN, "reset timeout elapsed")
                return now
            return self.opened_at + self.reset_after
        return now

    def success(self) -> None:
        self.failures = 0
        self._set(BreakerState.CLOSED, "success")

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = now
            self._set(BreakerState.OPEN, f"{self.failures} consecutive failures")

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state.value} failures={self.failures}/{self.threshold}>"


# -- statistics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelStatistics:
    channel: str
    kind: str
    queued: int
    delivered: int  # lifetime, from the deliveries table; skipped ones never count
    failed: int  # failed attempts since this process started
    last_success: float | None
    last_error: str | None
    breaker: BreakerState
    disabled: bool
    disabled_reason: str | None
    skipped: int = 0  # lifetime: notifications the channel could not show or send
    skip_reason: str | None = None  # the latest skip's reason, e.g. "no terminal"
    unavailable: str | None = None  # why the channel skips everything now, if it does


@dataclass(frozen=True)
class OutboxStatistics:
    channels: tuple[ChannelStatistics, ...]

    def channel(self, name: str) -> ChannelStatistics:
        for ch in self.channels:
            if ch.channel == name:
                return ch
        raise KeyError(name)


class _Channel:
    """Mutable per-channel state, touched only by the outbox."""

    def __init__(self, notifier: Notifier, now: float) -> None:
        self.notifier = notifier
        rate = getattr(notifier.config, "rate", None)
        self.bucket = TokenBucket(rate.count, rate.per, now) if rate is not None else None
        self.breaker = CircuitBreaker()
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.failed = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.disabled_reason: str | None = None


def test_payload(channel: str, now: float) -> NotificationPayload:
    """The notification ``wsgate alerts test --channel`` sends."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {
        "version": "4",
        "id": f"test-{uuid.uuid4().hex}",
        "kind": "test",
        "groupKey": '{}:{alertname="wsgate_test"}',
        "status": "firing",
        "receiver": channel,
        "groupLabels": {"alertname": "wsgate_test"},
        "commonLabels": {"alertname": "wsgate_test", "severity": "info"},
        "commonAnnotations": {"summary": "Test notification from wsgate"},
        "externalURL": "",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "wsgate_test", "severity": "info"},
                "annotations": {"summary": f"Test notification from wsgate to channel {channel}"},
                "startsAt": stamp,
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "0000000000000000",
            }
        ],
    }


# -- the outbox --------------------------------------------------------------------------------


class Outbox:
    """Durable, per-channel, rate-limited delivery of notifications.

    ``clock`` is wall time (rows persist ``next_attempt_at`` across restarts, where a
    monotonic clock would restart from zero); ``sleep`` is injectable so tests can see
    every wait without spending it.
    """

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        *,
        rng: random.Random,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff = Backoff(),
        on_channel_disabled: DisabledCallback | None = None,
    ) -> None:
        self._store = store
        self._rng = rng
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._on_disabled = on_channel_disabled
        now = clock()
        self._channels = {name: _Channel(n, now) for name, n in notifiers.items()}

    def __repr__(self) -> str:
        queued = sum(self._store.outbox_count(name) for name in self._channels)
        return f"<Outbox channels={len(self._channels)} queued={queued} db={self._store.path!r}>"

    # -- producer side ---------------------------------------------------------------------------

    def enqueue(
        self, channel: str, payload: NotificationPayload, claim: list[dict[str, Any]] | None = None
    ) -> bool:
        """Persist one notification for one channel (never waits).

        Returns ``False`` when the channel's filters (enabled, min_severity,
        send_resolved) drop it, or when this id is already queued or delivered. With
        ``claim`` (a cluster fact) it is held until :meth:`settle`.
        """
        ch = self._channels.get(channel)
        if ch is None:
            raise KeyError(f"unknown alert channel {channel!r}")
        if not channel_wants(ch.notifier.config, payload):
            return False
        notification_id = str(payload.get("id") or "")
        if not notification_id:
            raise ValueError("a notification needs a stable 'id' for idempotent delivery")
        added = self._store.outbox_put(
            notification_id, channel, payload, self._clock(), claim=claim
        )
        if added:
            ch.wake.set()
        return added

    def settle(
        self, channel: str, notification_id: str, payload: NotificationPayload | None
    ) -> bool:
        """A held notification's claim is decided: send ``payload``, or drop it (``None``)."""
        settled = self._store.outbox_settle(notification_id, channel, payload)
        ch = self._channels.get(channel)
        if settled and payload is not None and ch is not None:
            ch.wake.set()
        return settled

    async def send_test(self, channel: str) -> DeliveryResult:
        """Send a test notification now, bypassing queue, bucket and breaker."""
        ch = self._channels.get(channel)
        if ch is None:
            raise KeyError(f"unknown alert channel {channel!r}")
        return await ch.notifier.send(test_payload(channel, self._clock()))

    def enable_channel(self, channel: str) -> None:
        """Undo a disable (after the operator fixed the URL); queued rows go out again."""
        ch = self._channels[channel]
        ch.disabled_reason = None
        ch.breaker.success()
        ch.wake.set()

    def statistics(self) -> OutboxStatistics:
        delivered = self._store.delivery_stats()
        out = []
        for name, ch in self._channels.items():
            d = delivered.get(name)
            out.append(
                ChannelStatistics(
                    channel=name,
                    kind=ch.notifier.kind,
                    queued=self._store.outbox_count(name),
                    delivered=d.delivered if d else 0,
                    failed=ch.failed,
                    last_success=ch.last_success or (d.last_delivered_at if d else None),
                    last_error=ch.last_error,
                    breaker=ch.breaker.state,
                    disabled=ch.disabled_reason is not None,
                    disabled_reason=ch.disabled_reason,
                    skipped=d.skipped if d else 0,
                    skip_reason=d.last_skip_reason if d else None,
                    unavailable=ch.notifier.unavailable(),
                )
            )
        return OutboxStatistics(tuple(out))

    # -- delivery --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set. Rows left by a previous run go out first."""
        async with asyncio.TaskGroup() as tg:
            for name in self._channels:
                tg.create_task(self._deliver_loop(name, stop), name=f"outbox:{name}")

    async def _wait(self, ch: _Channel, stop: asyncio.Event, delay: float | None) -> None:
        """Wait ``delay`` seconds (``None``: no limit), or less if woken or stopped."""
        ch.wake.clear()
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(ch.wake.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        if delay is not None:
            waiters.append(asyncio.ensure_future(self._sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _deliver_loop(self, name: str, stop: asyncio.Event) -> None:
        ch = self._channels[name]
        while not stop.is_set():
            now = self._clock()
            row = None if ch.disabled_reason else self._store.outbox_head(name)
            if row is None:
                # Rows only appear through enqueue or enable_channel, and both wake us.
                await self._wait(ch, stop, None)
                continue
            ready = max(row.next_attempt_at, ch.breaker.ready_at(now))
            if ch.bucket is not None:
                ready = max(ready, ch.bucket.ready_at(now))
            if ready > now:
                await self._wait(ch, stop, ready - now)
                continue
            await self._attempt(name, ch, row)

    async def _attempt(self, name: str, ch: _Channel, row: OutboxRow) -> bool:
        """One send of one row; updates the store, breaker and statistics. True if delivered."""
        async with ch.lock:
            if self._store.outbox_get(row.id, name) is None:
                return True  # delivered by a concurrent flush
            if ch.bucket is not None:
                ch.bucket.take(self._clock())
            attempts = row.attempts + 1
            try:
                # The notifier has its own timeout; this bound catches one that hangs anyway.
                timeout = float(getattr(ch.notifier.config, "timeout", 30.0)) * 2 + 1
                async with asyncio.timeout(timeout):
                    result = await ch.notifier.send(row.payload)
            except ChannelGone as exc:
                self._failed(ch, str(exc))
                self._store.outbox_retry(row.id, name, attempts, row.next_attempt_at, str(exc))
                self._disable(name, ch, str(exc))
                return False
            except DeliveryError as exc:
                now = self._clock()
                self._failed(ch, str(exc))
                ch.breaker.failure(now)
                if not exc.retryable:
                    log.error("channel %s dropped notification %s: %s", name, row.id, exc)
                    self._store.outbox_dead(row, str(exc), now)
                    return False
                delay = self._backoff.delay(attempts, self._rng, exc.retry_after)
                log.warning(
                    "channel %s: attempt %d of %s failed, retry in %.1fs: %s",
                    name,
                    attempts,
                    row.id,
                    delay,
                    exc,
                )
                self._store.outbox_retry(row.id, name, attempts, now + delay, str(exc))
                return False
            except Exception as exc:
                # A notifier bug or a hang must neither lose the row nor stop the other
                # channels' tasks (they share a TaskGroup): retry it like a 5xx.
                now = self._clock()
                msg = f"{type(exc).__name__}: {exc}"
                self._failed(ch, msg)
                ch.breaker.failure(now)
                delay = self._backoff.delay(attempts, self._rng)
                log.exception("channel %s: unexpected failure sending %s", name, row.id)
                self._store.outbox_retry(row.id, name, attempts, now + delay, msg)
                return False
            now = self._clock()
            if result.skipped:
                # Nothing was shown or sent: the row is done, but it is not a delivery.
                reason = result.detail or "skipped"
                self._store.outbox_delivered(row.id, name, attempts, now, skipped=reason)
                log.info("channel %s skipped notification %s: %s", name, row.id, reason)
                return False
            self._store.outbox_delivered(row.id, name, attempts, now)
            ch.breaker.success()
            ch.last_success = now
            return True

    def _failed(self, ch: _Channel, error: str) -> None:
        ch.failed += 1
        ch.last_error = error

    def _disable(self, name: str, ch: _Channel, reason: str) -> None:
        ch.disabled_reason = reason
        log.error("channel %s disabled: %s (queued rows kept)", name, reason)
        if self._on_disabled is not None:
            try:
                self._on_disabled(name, reason)
            except Exception:
                log.exception("on_channel_disabled callback failed for %s", name)

    async def flush(self, timeout: float) -> int:  # noqa: ASYNC109 - the bound is the API
        """Try once to deliver every row due now, within ``timeout`` s. Returns deliveries.

        For shutdown: a row that fails, is not due, or whose breaker is open stays
        queued for the next run instead of being hammered.
        """
        delivered = 0

        async def one_channel(name: str, ch: _Channel) -> None:
            nonlocal delivered
            tried: set[str] = set()
            while ch.disabled_reason is None:
                row = self._store.outbox_head(name)
                now = self._clock()
                if row is None or row.id in tried or row.next_attempt_at > now:
                    return
                if ch.breaker.ready_at(now) > now:
                    return
                if ch.bucket is not None and ch.bucket.ready_at(now) > now:
                    await self._sleep(ch.bucket.ready_at(now) - now)
                tried.add(row.id)
                if not await self._attempt(name, ch, row):
                    return
                delivered += 1

        try:
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as tg:
                for name, ch in self._channels.items():
                    tg.create_task(one_channel(name, ch))
        except TimeoutError:
            log.warning("outbox flush stopped after %.1fs; undelivered rows stay queued", timeout)
        return delivered

    async def aclose(self) -> None:
        for ch in self._channels.values():
            await ch.notifier.aclose()
