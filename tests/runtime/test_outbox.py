"""The outbox: crash safety, exactly-once with an idempotent receiver, retries, breaker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from receivers import (
    FakeChannel,
    FakeTime,
    HttpReceiver,
    Rate,
    Reply,
    WebhookReceiver,
    alert_payload,
)

from wsgate.errors import DeliveryError
from wsgate.runtime.ops.notifiers import (
    DeliveryResult,
    DiscordNotifier,
    NotificationPayload,
    Notifier,
    WebhookNotifier,
)
from wsgate.runtime.ops.outbox import Backoff, BreakerState, CircuitBreaker, Outbox, TokenBucket
from wsgate.runtime.persistence.store import Store

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def until(pred: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition on the loop (each round yields to the tasks under test)."""

    async def poll() -> None:
        while not pred():  # noqa: ASYNC110 - the state belongs to the code under test
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), within)


class Running:
    """Runs ``outbox.run`` in the background; leaving the block stops it (or re-raises)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.outbox.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


class ScriptedNotifier(Notifier):
    """Raises the scripted errors in turn, then accepts; records the fake time of each call."""

    kind = "fake"

    def __init__(self, name: str, errors: list[Exception], clock: Callable[[], float]) -> None:
        super().__init__(FakeChannel(name=name, kind="log"))
        self.errors = list(errors)
        self.clock = clock
        self.calls: list[float] = []
        self.accepted: list[str] = []

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        self.calls.append(self.clock())
        if self.errors:
            raise self.errors.pop(0)
        self.accepted.append(payload["id"])
        return self._result(payload)


# -- pure policy -------------------------------------------------------------------------------


def test_backoff_full_jitter_is_bounded_and_capped() -> None:
    backoff = Backoff(base=1.0, cap=300.0)
    rng = random.Random(7)
    for attempt in range(1, 30):
        delay = backoff.delay(attempt, rng)
        assert 0.0 <= delay <= min(300.0, 2.0 ** (attempt - 1))
    assert backoff.ceiling(1) == 1.0 and backoff.ceiling(4) == 8.0 and backoff.ceiling(50) == 300
    assert backoff.delay(3, rng, retry_after=42.0) == 42.0


def test_token_bucket() -> None:
    bucket = TokenBucket(count=2, per=1.0, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.ready_at(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5)
    assert "TokenBucket" in repr(bucket)


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not narrow the attribute between steps


def test_breaker_opens_after_five_and_half_opens_after_sixty() -> None:
    breaker = CircuitBreaker(threshold=5, reset_after=60.0)
    for i in range(4):
        breaker.failure(float(i))
    assert state(breaker) is BreakerState.CLOSED
    breaker.failure(4.0)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.ready_at(10.0) == 64.0
    assert breaker.ready_at(64.0) == 64.0 and state(breaker) is BreakerState.HALF_OPEN
    breaker.failure(64.0)  # the one trial failed: open again
    assert breaker.ready_at(65.0) == 124.0
    breaker.ready_at(124.0)
    breaker.success()
    assert state(breaker) is BreakerState.CLOSED and breaker.failures == 0


# -- crash safety ------------------------------------------------------------------------------


def test_crash_before_delivery_replays_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "wsgate.db"

    async def main() -> None:
        # 1. The receiver is down: enqueue commits, attempts fail, the process "crashes".
        down = await HttpReceiver().start()
        dead_url = down.url
        await down.stop()
        store = Store(db)
        notifier = WebhookNotifier(FakeChannel(name="hook", url=dead_url))
        outbox = Outbox(store, {"hook": notifier}, rng=random.Random(1))
        for i in range(3):
            assert outbox.enqueue("hook", alert_payload(f"n-{i}"))
        assert not outbox.enqueue("hook", alert_payload("n-0"))  # same id: not queued twice
        async with Running(outbox):
            await until(lambda: outbox.statistics().channel("hook").failed >= 1)
        await outbox.aclose()
        store.close()  # no flush: whatever was not accepted must still be on disk

        # 2. Restart with the receiver up: the rows from the previous run are replayed.
        async with WebhookReceiver(secret=None) as rx:
            store = Store(db)
            assert store.outbox_count("hook") == 3
            outbox = Outbox(
                store,
                {"hook": WebhookNotifier(FakeChannel(name="hook", url=rx.url))},
                rng=random.Random(2),
                backoff=Backoff(base=0.01, cap=0.05),
            )
            async with Running(outbox):
                await rx.wait_for_unique(3)
                await until(lambda: outbox.statistics().channel("hook").queued == 0)
            stats = outbox.statistics().channel("hook")
            await outbox.aclose()
            assert sorted(rx.unique) == ["n-0", "n-1", "n-2"]
            assert rx.duplicates == 0
            # Oldest first.
            assert [r.headers["x-wsgate-delivery"] for r in rx.requests] == ["n-0", "n-1", "n-2"]
            assert (stats.delivered, stats.queued, stats.disabled) == (3, 0, False)
            assert not outbox.enqueue("hook", alert_payload("n-1"))  # delivered: ignored
            store.close()

    run(main())


class Crash(Exception):
    """Stands for the process dying between the receiver's 2xx and our commit."""


class CrashingStore(Store):
    def outbox_delivered(self, *args: Any, **kw: Any) -> None:
        raise Crash("killed before commit")


def test_crash_after_acceptance_redelivers_with_same_id(tmp_path: Path) -> None:
    db = tmp_path / "wsgate.db"

    async def main() -> None:
        async with WebhookReceiver(secret=None) as rx:
            crashing = CrashingStore(db)
            outbox = Outbox(
                crashing,
                {"hook": WebhookNotifier(FakeChannel(name="hook", url=rx.url))},
                rng=random.Random(1),
            )
            outbox.enqueue("hook", alert_payload("n-1"))
            with pytest.raises(ExceptionGroup) as err:
                await outbox.run(asyncio.Event())
            assert err.group_contains(Crash)
            await outbox.aclose()
            crashing.close()

            store = Store(db)
            outbox = Outbox(
                store,
                {"hook": WebhookNotifier(FakeChannel(name="hook", url=rx.url))},
                rng=random.Random(1),
            )
            async with Running(outbox):
                await rx.wait_for_requests(2)
                await until(lambda: store.outbox_count("hook") == 0)
            await outbox.aclose()
            store.close()
        # At least once on the wire, exactly once for an idempotent receiver.
        assert len(rx.requests) == 2
        assert list(rx.unique) == ["n-1"] and rx.duplicates == 1

    run(main())


# -- retries, rate limits, breaker -------------------------------------------------------------


def test_discord_429_retry_after_is_honoured(tmp_path: Path) -> None:
    async def main() -> None:
        fake = FakeTime()
        script = [Reply(429, json={"retry_after": 1.5, "global": False}), Reply(204)]
        async with HttpReceiver(script) as rx:
            store = Store(tmp_path / "db")
            notifier = DiscordNotifier(FakeChannel(name="dc", kind="discord", url=rx.url))
            outbox = Outbox(
                store, {"dc": notifier}, rng=random.Random(3), clock=fake.clock, sleep=fake.sleep
            )
            outbox.enqueue("dc", alert_payload())
            async with Running(outbox):
                await rx.wait_for_requests(2)
                await until(lambda: store.outbox_count("dc") == 0)
            stats = outbox.statistics().channel("dc")
            await outbox.aclose()
            store.close()
        assert fake.sleeps == [1.5]  # exactly the server's hint, not our jittered backoff
        assert stats.failed == 1 and stats.delivered == 1

    run(main())


def test_discord_404_disables_channel_and_calls_back(tmp_path: Path) -> None:
    async def main() -> None:
        disabled: list[tuple[str, str]] = []
        async with HttpReceiver([Reply(404, json={"message": "Unknown Webhook"})]) as rx:
            store = Store(tmp_path / "db")
            notifier = DiscordNotifier(FakeChannel(name="dc", kind="discord", url=rx.url))
            outbox = Outbox(
                store,
                {"dc": notifier},
                rng=random.Random(3),
                on_channel_disabled=lambda name, why: disabled.append((name, why)),
            )
            outbox.enqueue("dc", alert_payload("n-1"))
            async with Running(outbox):
                await until(lambda: bool(disabled))
                outbox.enqueue("dc", alert_payload("n-2"))  # still queued, never sent
            await outbox.aclose()
            stats = outbox.statistics().channel("dc")
            assert len(rx.requests) == 1
            assert stats.disabled and stats.queued == 2
            assert [r.id for r in store.outbox_rows("dc")] == ["n-1", "n-2"]
            store.close()
        assert disabled[0][0] == "dc" and "HTTP 404" in disabled[0][1]

    run(main())


def test_breaker_opens_after_five_failures_and_waits_sixty_seconds(tmp_path: Path) -> None:
    async def main() -> None:
        fake = FakeTime()
        errors: list[Exception] = [DeliveryError("HTTP 502") for _ in range(5)]
        notifier = ScriptedNotifier("x", errors, fake.clock)
        store = Store(tmp_path / "db")
        outbox = Outbox(
            store, {"x": notifier}, rng=random.Random(5), clock=fake.clock, sleep=fake.sleep
        )
        outbox.enqueue("x", alert_payload("n-1", receiver="x"))
        async with Running(outbox):
            await until(lambda: notifier.accepted == ["n-1"])
        stats = outbox.statistics().channel("x")
        store.close()
        gaps = [b - a for a, b in zip(notifier.calls, notifier.calls[1:], strict=False)]
        assert len(notifier.calls) == 6
        assert all(g <= 16.0 for g in gaps[:4])  # jittered backoff: 1, 2, 4, 8, 16 ceilings
        assert gaps[4] == pytest.approx(60.0)  # breaker open: the half-open trial after 60 s
        assert stats.breaker is BreakerState.CLOSED and stats.failed == 5
        assert stats.last_error == "HTTP 502"

    run(main())


def test_permanent_failure_drops_to_history(tmp_path: Path) -> None:
    async def main() -> None:
        notifier = ScriptedNotifier("x", [DeliveryError("HTTP 400", retryable=False)], lambda: 0)
        store = Store(tmp_path / "db")
        outbox = Outbox(store, {"x": notifier}, rng=random.Random(1))
        outbox.enqueue("x", alert_payload("bad"))
        outbox.enqueue("x", alert_payload("good"))
        async with Running(outbox):
            await until(lambda: notifier.accepted == ["good"])
        (event,) = store.events(kind="notification_dropped")
        assert event.data["id"] == "bad" and event.data["error"] == "HTTP 400"
        assert store.outbox_count("x") == 0
        store.close()

    run(main())


def test_token_bucket_spaces_sends(tmp_path: Path) -> None:
    async def main() -> None:
        fake = FakeTime()
        notifier = ScriptedNotifier("x", [], fake.clock)
        notifier.config = FakeChannel(name="x", kind="log", rate=Rate(count=2, per=10.0))
        store = Store(tmp_path / "db")
        outbox = Outbox(
            store, {"x": notifier}, rng=random.Random(1), clock=fake.clock, sleep=fake.sleep
        )
        for i in range(4):
            outbox.enqueue("x", alert_payload(f"n-{i}", receiver="x"))
        async with Running(outbox):
            await until(lambda: len(notifier.accepted) == 4)
        store.close()
        start = notifier.calls[0]
        assert [round(t - start, 6) for t in notifier.calls] == [0.0, 0.0, 5.0, 10.0]

    run(main())


def test_enqueue_filters_and_unknown_channel(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    notifier = ScriptedNotifier("x", [], lambda: 0)
    notifier.config = FakeChannel(name="x", kind="log", min_severity="critical")
    outbox = Outbox(store, {"x": notifier}, rng=random.Random(1))
    assert not outbox.enqueue("x", alert_payload("w", severity="warning"))
    assert outbox.enqueue("x", alert_payload("c", severity="critical"))
    with pytest.raises(KeyError):
        outbox.enqueue("nope", alert_payload())
    assert "queued=1" in repr(outbox)
    store.close()


def test_flush_delivers_due_rows_within_bound(tmp_path: Path) -> None:
    async def main() -> None:
        async with WebhookReceiver(secret=None) as rx:
            store = Store(tmp_path / "db")
            outbox = Outbox(
                store,
                {"hook": WebhookNotifier(FakeChannel(name="hook", url=rx.url))},
                rng=random.Random(1),
            )
            for i in range(5):
                outbox.enqueue("hook", alert_payload(f"n-{i}"))
            assert await outbox.flush(timeout=5.0) == 5
            await outbox.aclose()
            assert len(rx.unique) == 5 and store.outbox_count("hook") == 0
            store.close()

    run(main())


def test_flush_leaves_failures_queued(tmp_path: Path) -> None:
    async def main() -> None:
        notifier = ScriptedNotifier("x", [DeliveryError("HTTP 503")], lambda: 0)
        store = Store(tmp_path / "db")
        outbox = Outbox(store, {"x": notifier}, rng=random.Random(1), clock=lambda: 0.0)
        outbox.enqueue("x", alert_payload("n-1"))
        assert await outbox.flush(timeout=5.0) == 0
        assert len(notifier.calls) == 1  # one try, no hammering during shutdown
        assert store.outbox_count("x") == 1
        store.close()

    run(main())


def test_send_test_goes_straight_to_the_channel(tmp_path: Path) -> None:
    async def main() -> None:
        async with WebhookReceiver(secret=None) as rx:
            store = Store(tmp_path / "db")
            outbox = Outbox(
                store,
                {"hook": WebhookNotifier(FakeChannel(name="hook", url=rx.url))},
                rng=random.Random(1),
            )
            result = await outbox.send_test("hook")
            await outbox.aclose()
            (req,) = await rx.wait_for_requests(1)
            assert result.status == 204 and result.notification_id.startswith("test-")
            body = req.json()
            assert body["kind"] == "test" and body["receiver"] == "hook"
            assert store.outbox_count("hook") == 0
            store.close()

    run(main())


def test_notifier_bug_is_retried_not_fatal(tmp_path: Path) -> None:
    async def main() -> None:
        fake = FakeTime()
        notifier = ScriptedNotifier("x", [RuntimeError("bug in a notifier")], fake.clock)
        store = Store(tmp_path / "db")
        outbox = Outbox(
            store, {"x": notifier}, rng=random.Random(1), clock=fake.clock, sleep=fake.sleep
        )
        outbox.enqueue("x", alert_payload("n-1"))
        async with Running(outbox):
            await until(lambda: notifier.accepted == ["n-1"])
        assert outbox.statistics().channel("x").last_error == "RuntimeError: bug in a notifier"
        store.close()

    run(main())


def test_console_without_terminal_is_skipped_never_delivered(tmp_path: Path) -> None:
    from wsgate.runtime.ops.notifiers import ConsoleNotifier

    async def main() -> None:
        store = Store(tmp_path / "wsgate.db")
        # pytest captures stderr, so the console channel has no terminal here.
        console = ConsoleNotifier(FakeChannel(name="console", kind="console"))
        outbox = Outbox(store, {"console": console}, rng=random.Random(1))
        assert outbox.enqueue("console", alert_payload("n-1"))
        async with Running(outbox):
            await until(lambda: outbox.statistics().channel("console").queued == 0)
        stats = outbox.statistics().channel("console")
        assert stats.delivered == 0 and stats.last_success is None
        assert stats.skipped == 1 and stats.skip_reason == "no terminal"
        assert stats.unavailable == "no terminal"
        assert not outbox.enqueue("console", alert_payload("n-1"))  # done: not queued again
        await outbox.aclose()
        store.close()

    run(main())
