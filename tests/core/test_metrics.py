import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.core.metrics import (
    ConnectionMetrics,
    Ewma,
    HistoryPoint,
    PeakEwma,
    RateCounter,
    RingBuffer,
    quantiles,
)

# Fixed examples: the suite must be deterministic; no deadline, since CI boxes are shared.
DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=200)

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


# -- RingBuffer ---------------------------------------------------------------------------


@DETERMINISTIC
@given(capacity=st.integers(1, 50), xs=st.lists(finite, max_size=200))
def test_ring_buffer_matches_list_tail(capacity: int, xs: list[float]) -> None:
    ring = RingBuffer(capacity)
    for x in xs:
        ring.append(x)
    assert ring.values() == xs[-capacity:] if xs else ring.values() == []
    assert len(ring) == min(len(xs), capacity)
    assert ring.last == (xs[-1] if xs else None)
    assert ring.capacity == capacity


def test_ring_buffer_rejects_zero_capacity_and_reprs() -> None:
    with pytest.raises(ValueError):
        RingBuffer(0)
    ring = RingBuffer(3)
    ring.append(1.5)
    assert repr(ring) == "RingBuffer(len=1, capacity=3, last=1.5)"


# -- quantiles ----------------------------------------------------------------------------


def _reference_quantile(values: list[float], q: float) -> float:
    """numpy 'linear': interpolate at position q * (n - 1) of the sorted list."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@DETERMINISTIC
@given(
    values=st.lists(finite, min_size=1, max_size=300),
    qs=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
)
def test_quantiles_match_sorted_list_interpolation(values: list[float], qs: list[float]) -> None:
    got = quantiles(values, qs)
    for q, g in zip(qs, got, strict=True):
        assert g == pytest.approx(_reference_quantile(values, q), rel=1e-12, abs=1e-6)
        assert min(values) <= g <= max(values)


@DETERMINISTIC
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200))
def test_percentiles_match_statistics_inclusive(values: list[float]) -> None:
    # statistics.quantiles(method="inclusive") is the same estimator, written independently.
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    ours = quantiles(values, [k / 100 for k in range(1, 100)])
    assert ours == pytest.approx(cuts, rel=1e-9, abs=1e-6)


def test_quantiles_edges() -> None:
    assert quantiles([3.0]) == (3.0, 3.0, 3.0)
    assert quantiles([1.0, 2.0, 3.0, 4.0], (0.0, 0.5, 1.0)) == (1.0, 2.5, 4.0)
    with pytest.raises(ValueError):
        quantiles([])
    with pytest.raises(ValueError):
        quantiles([1.0], (1.5,))


# -- EWMA ---------------------------------------------------------------------------------


def test_ewma_half_life_semantics() -> None:
    e = Ewma(half_life=10.0)
    e.update(0.0, 0.0)
    assert e.update(10.0, 1.0) == pytest.approx(0.5)  # one half-life covers half the step
    e2 = Ewma(half_life=10.0)
    e2.update(0.0, 0.0)
    for t in range(1, 21):  # sampling density does not change the time constant
        e2.update(float(t), 1.0)
    assert e2.value == pytest.approx(0.75)  # two half-lives: 1 - 2**-2


def test_ewma_same_instant_samples_are_averaged() -> None:
    e = Ewma(half_life=10.0)
    e.update(0.0, 2.0)
    e.update(0.0, 4.0)
    assert e.value == pytest.approx(3.0)
    e.update(10.0, 0.0)
    e.update(10.0, 2.0)
    assert e.value == pytest.approx(3.0 * 0.5 + 1.0 * 0.5)
    assert e.last_update == 10.0


def test_peak_ewma_jumps_up_and_decays_down() -> None:
    p = PeakEwma(half_life=5.0)
    p.update(0.0, 0.010)
    assert p.update(1.0, 0.200) == 0.200  # a slow sample is believed at once
    assert p.update(6.0, 0.010) == pytest.approx(0.105)  # one half-life towards 10 ms
    assert p.update(6.5, 0.300) == 0.300
    with pytest.raises(ValueError):
        PeakEwma(0.0)


# -- RateCounter --------------------------------------------------------------------------


def _brute_rate(events: list[tuple[float, int]], now: float, window: float, n: int) -> float:
    width = window / n
    idx = math.floor(now / width)
    lo = idx - n + 1
    origin = math.floor(events[0][0] / width) * width
    inside = [e for e in events if lo <= math.floor(e[0] / width) <= idx]
    span = max(now - max(lo * width, origin), width)
    return len(inside) / span


@DETERMINISTIC
@given(
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=300),
    probe=st.floats(0.0, 30.0),
    buckets=st.integers(1, 12),
)
def test_rate_counter_matches_brute_force(gaps: list[float], probe: float, buckets: int) -> None:
    window = 10.0
    rc = RateCounter(window, buckets)
    t = 100.0
    events: list[tuple[float, int]] = []
    for g in gaps:
        t += g
        rc.add(t, 7)
        events.append((t, 7))
        if len(events) % 17 == 0:  # reads in the middle must not disturb the counts
            assert rc.rate(t) == pytest.approx(_brute_rate(events, t, window, buckets))
    now = t + probe
    expected = _brute_rate(events, now, window, buckets)
    assert rc.rate(now) == pytest.approx(expected)
    assert rc.bytes_rate(now) == pytest.approx(7 * expected)
    assert (rc.total, rc.total_bytes) == (len(events), 7 * len(events))


def test_rate_counter_steady_rate_and_expiry() -> None:
    rc = RateCounter(10.0, 10)
    for i in range(2000):  # 100 msg/s for 20 s
        rc.add(i * 0.01, 50)
    assert rc.rate(20.0) == pytest.approx(100.0, rel=0.02)
    assert rc.bytes_rate(20.0) == pytest.approx(5000.0, rel=0.02)
    assert rc.rate(40.0) == 0.0  # everything aged out
    assert rc.count(40.0) == 0.0


def test_rate_counter_mark_start_spreads_sparse_events() -> None:
    rc = RateCounter(10.0, 10)
    rc.mark_start(0.0)
    rc.add(6.0)
    assert rc.rate(10.0) == pytest.approx(1 / 9)  # buckets 1..10 cover 9 s of history
    young = RateCounter(10.0, 10)
    young.add(6.0)
    assert young.rate(10.0) == pytest.approx(1 / 4)


def test_rate_counter_late_event_within_window_counts() -> None:
    rc = RateCounter(10.0, 10)
    rc.add(5.0)
    rc.add(8.0)
    rc.add(6.5)  # clock stepped back, bucket 6 was never opened
    rc.add(-50.0)  # far older than the window: dropped
    assert rc.count(8.5) == 3
    assert rc.total == 4  # all-time totals keep even the event the window dropped


# -- ConnectionMetrics ---------------------------------------------------------------------


def test_connection_metrics_counts_rates_and_latency() -> None:
    m = ConnectionMetrics(history_points=5, rate_window=10.0)
    m.on_state(0.0, "open", True)
    for i in range(1000):
        m.on_message_in(i * 0.01, 100)
    m.on_message_out(5.0, 40)
    for i, rtt in enumerate([0.010, 0.020, 0.030, 0.040, 0.050]):
        m.on_latency(float(i), rtt, "ws")
    m.on_latency(5.0, 0.5, "app")
    s = m.snapshot(10.0)
    assert (s.messages_in, s.bytes_in, s.messages_out, s.bytes_out) == (1000, 100_000, 1, 40)
    assert s.msg_rate_in == pytest.approx(100.0)
    assert s.bytes_rate_in == pytest.approx(10_000.0)
    assert s.latency_p50 == pytest.approx(0.030)
    assert s.latency_p99 == pytest.approx(0.0496)
    assert s.latency_app_ewma == 0.5
    assert s.latency_ewma is not None and 0.010 < s.latency_ewma < 0.050
    assert s.latency_peak is not None and s.latency_peak >= s.latency_ewma
    assert s.last_message_age == pytest.approx(0.01)
    with pytest.raises(ValueError):
        m.on_latency(6.0, 0.1, "icmp")  # type: ignore[arg-type]


def test_connection_metrics_app_latency_only_feeds_quantiles_and_peak() -> None:
    m = ConnectionMetrics()
    m.on_latency(1.0, 0.2, "app")
    s = m.snapshot(2.0)
    assert (s.latency_ewma, s.latency_app_ewma, s.latency_p50, s.latency_peak) == (
        None,
        0.2,
        0.2,
        0.2,
    )


def test_connection_metrics_errors_and_reconnects() -> None:
    m = ConnectionMetrics(rate_window=10.0)
    m.on_state(0.0, "open", True)
    for i in range(100):
        m.on_message_in(i * 0.05, 10)
    for t in (1.0, 2.0, 3.0):
        m.on_error(t, "decode")
    m.on_error(4.0, "close_1006")
    for t in (10.0, 400.0, 700.0):
        m.on_reconnect(t)
    s = m.snapshot(5.0)
    assert s.errors_total == 4
    assert s.errors_by_kind == (("close_1006", 1), ("decode", 3))
    assert s.error_rate == pytest.approx(4 / 5.0)
    assert s.error_ratio == pytest.approx(4 / 100)
    assert m.snapshot(800.0).reconnects_recent == 2  # the one at t=10 is older than 10 min
    assert m.snapshot(800.0).reconnects_total == 3


def test_connection_metrics_error_kinds_are_bounded() -> None:
    m = ConnectionMetrics()
    for i in range(100):
        m.on_error(float(i), f"kind{i}")
    kinds = dict(m.snapshot(100.0).errors_by_kind)
    assert len(kinds) == 33
    assert kinds["other"] == 68


def test_connection_metrics_uptime_downtime_availability() -> None:
    m = ConnectionMetrics()
    assert m.snapshot(0.0).availability is None
    m.on_state(0.0, "connecting", False)
    m.on_state(10.0, "open", True)
    m.on_state(40.0, "reconnecting", False)
    m.on_state(50.0, "open", True)
    s = m.snapshot(100.0)
    assert (s.uptime, s.downtime) == (80.0, 20.0)
    assert s.availability == pytest.approx(0.8)
    assert s.state == "open"


def test_roll_up_history_is_bounded_and_ordered() -> None:
    m = ConnectionMetrics(history_points=3, rate_window=10.0)
    m.on_state(0.0, "open", True)
    points = []
    for k in range(5):
        t0 = k * 60.0
        for i in range(100):
            m.on_message_in(t0 + 50.0 + i * 0.1, 20)
        if k == 2:
            m.on_error(t0 + 55.0, "x")
            m.on_error(t0 + 56.0, "x")
        if k >= 1:
            m.on_latency(t0 + 59.0, 0.01 * k)
        points.append(m.roll_up(t0 + 60.0, queue_depth=k))
    hist = m.history()
    assert hist == points[-3:]
    assert [p.errors for p in hist] == [2, 0, 0]
    assert [p.queue_depth for p in hist] == [2, 3, 4]
    assert points[0].latency is None
    assert isinstance(hist[0], HistoryPoint) and hist[0].msg_rate == pytest.approx(10.0)


def test_memory_estimate_is_bounded_and_repr_informative() -> None:
    m = ConnectionMetrics(history_points=1000)
    for k in range(1500):
        m.roll_up(float(k))
    assert len(m.history()) == 1000
    assert 48_000 < m.memory_bytes() < 64 * 1024
    assert repr(m).startswith("ConnectionMetrics(state=None, up=False, in=0")
    assert "history=1000/1000" in repr(m)


class _Counts:
    """Totals kept elsewhere (a relay's C pipe)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0


def test_lazily_counted_frames_are_in_every_read_and_booked_at_the_fold() -> None:
    m = ConnectionMetrics(rate_window=10.0)
    m.on_state(0.0, "open", True)
    inbound, outbound = _Counts(), _Counts()
    m.count_lazily(inbound, inbound=True)
    m.count_lazily(outbound, inbound=False)
    m.on_message_in(1.0, 10)
    inbound.frames, inbound.bytes = 5, 50
    outbound.frames, outbound.bytes = 3, 30
    # Totals include what was not folded yet, without a clock.
    assert (m.messages_in, m.bytes_in, m.messages_out, m.bytes_out) == (6, 60, 3, 30)
    assert m.last_message_at == 1.0
    assert m.fold(2.0) is True and m.fold(2.5) is False
    assert m.last_message_at == 2.0  # the fold books them as of its now
    assert (m.messages_in, m.bytes_in, m.messages_out, m.bytes_out) == (6, 60, 3, 30)
    inbound.frames, inbound.bytes = 9, 90
    s = m.snapshot(3.0)  # a snapshot folds first
    assert (s.messages_in, s.bytes_in, s.messages_out) == (10, 100, 3)
    assert s.msg_rate_in == pytest.approx(10 / 3.0)  # 10 messages in the 3 s since the start
    # Settled (the socket closed): booked once more, then no longer read.
    inbound.frames, outbound.frames = 11, 4
    m.settle(4.0)
    inbound.frames, outbound.frames = 100, 100
    assert (m.messages_in, m.messages_out) == (12, 4)
