import random

from hypothesis import given
from hypothesis import strategies as st

from wsgate.core.backoff import Backoff, CloseKind, TokenBucket, classify_status


def test_quick_drop_never_spins() -> None:
    b = Backoff(random.Random(1), initial=0.5, maximum=30.0, min_uptime=5.0)
    delays = [b.after_close(uptime=0.01).delay for _ in range(50)]
    assert min(delays) >= 0.5
    assert max(delays) <= 30.0
    # Capped exponential growth: late delays are drawn from a far wider range than early ones.
    assert sum(delays[-10:]) > sum(delays[:3])


def test_healthy_connection_resets_failures() -> None:
    b = Backoff(random.Random(2), initial=0.5, maximum=30.0, min_uptime=5.0)
    for _ in range(6):
        b.after_close(uptime=None)
    assert b.failures == 6
    d = b.after_close(uptime=120.0)
    assert d.retry and d.delay <= 0.5
    assert b.failures == 0


def test_rate_limited_honours_retry_after() -> None:
    b = Backoff(random.Random(3), initial=0.5, maximum=30.0, rate_limit_floor=10.0)
    d = b.after_close(None, CloseKind.RATE_LIMITED, retry_after=42.0)
    assert d.retry and d.delay >= 42.0
    d = b.after_close(None, CloseKind.RATE_LIMITED)
    assert d.delay >= 10.0


def test_auth_rejected_is_not_retried() -> None:
    b = Backoff(random.Random(4))
    d = b.after_close(None, CloseKind.AUTH_REJECTED)
    assert not d.retry and "401/403" in d.reason


def test_classify_status() -> None:
    assert classify_status(429) is CloseKind.RATE_LIMITED
    assert classify_status(403) is CloseKind.AUTH_REJECTED
    assert classify_status(503) is CloseKind.SERVER_ERROR
    assert classify_status(404) is CloseKind.REJECTED


@given(st.integers(min_value=0, max_value=2**31), st.lists(st.booleans(), max_size=200))
def test_backoff_bounds(seed: int, quick: list[bool]) -> None:
    b = Backoff(random.Random(seed), initial=0.25, maximum=8.0, min_uptime=5.0)
    for q in quick:
        d = b.after_close(uptime=0.1 if q else 60.0)
        assert d.retry
        assert 0.0 <= d.delay <= 8.0
        if q:
            assert d.delay >= 0.25


def test_token_bucket_reserve_staggers() -> None:
    tb = TokenBucket(count=20, per=60.0, now=0.0)
    waits = [tb.reserve(0.0) for _ in range(50)]
    assert waits[:20] == [0.0] * 20
    # Slots 21..50 are spaced 3 s apart (20 per minute).
    assert waits[20] == 3.0 and waits[49] == 90.0
    assert tb.delayed == 30


def test_reconnect_storm_of_50_stays_inside_budget() -> None:
    """50 connections reconnecting at once: grants per sliding 60 s window never exceed 20."""
    tb = TokenBucket(count=20, per=60.0, now=0.0)
    starts = sorted(tb.reserve(0.0) for _ in range(50))
    for i, t in enumerate(starts):
        in_window = [s for s in starts[: i + 1] if s > t - 60.0]
        # burst 20 plus refill during the window
        assert len(in_window) <= 20 + 20


def test_token_bucket_try_acquire_and_refill() -> None:
    tb = TokenBucket(count=5, per=1.0, now=0.0)
    assert all(tb.try_acquire(0.0) for _ in range(5))
    assert not tb.try_acquire(0.0)
    assert tb.used_fraction(0.0) == 1.0
    assert tb.try_acquire(0.2)  # one token refilled after 0.2 s at 5/s
    assert not tb.try_acquire(0.2)
