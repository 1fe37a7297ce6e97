import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.core.health import (
    ConnectionSummary,
    HealthInputs,
    aggregate_health,
    health_score,
    overview,
)
from wsgate.core.types import ConnectionType

# Fixed examples: the suite must be deterministic; no deadline, since CI boxes are shared.
DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=300)

latency = st.one_of(st.none(), st.floats(0.0, 100.0))
rate = st.floats(0.0, 1e6)

inputs_st = st.builds(
    HealthInputs,
    state_up=st.booleans(),
    degraded=st.booleans(),
    latency=latency,
    baseline_latency=st.one_of(st.none(), st.floats(0.0, 10.0)),
    stale_fraction=st.floats(0.0, 1.0),
    error_rate=st.floats(0.0, 1e4),
    reconnects_recent=st.integers(0, 10_000),
    message_rate=rate,
    expected_rate=st.one_of(st.none(), rate),
)

HEALTHY = HealthInputs(
    state_up=True,
    degraded=False,
    latency=0.05,
    baseline_latency=0.05,
    stale_fraction=0.0,
    error_rate=0.0,
    reconnects_recent=0,
    message_rate=100.0,
    expected_rate=100.0,
)


def score(inputs: HealthInputs, **changes: Any) -> float:
    return health_score(dataclasses.replace(inputs, **changes)).score


@DETERMINISTIC
@given(inputs=inputs_st)
def test_score_is_bounded(inputs: HealthInputs) -> None:
    b = health_score(inputs)
    assert 0.0 <= b.score <= 100.0
    for p in (b.latency_penalty, b.staleness_penalty, b.error_penalty, b.reconnect_penalty):
        assert 0.0 <= p < 1.0


def test_healthy_connection_scores_100_and_down_scores_0() -> None:
    assert health_score(HEALTHY).score == 100.0
    assert health_score(HEALTHY).worst_component() == "none"
    down = health_score(dataclasses.replace(HEALTHY, state_up=False))
    assert down.score == 0.0 and down.worst_component() == "down"
    degraded = health_score(dataclasses.replace(HEALTHY, degraded=True))
    assert degraded.score == pytest.approx(60.0) and degraded.worst_component() == "degraded"


@DETERMINISTIC
@given(inputs=inputs_st, a=st.floats(0.0, 100.0), b=st.floats(0.0, 100.0))
def test_monotonic_in_latency(inputs: HealthInputs, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert score(inputs, latency=hi) <= score(inputs, latency=lo)


@DETERMINISTIC
@given(inputs=inputs_st, a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_monotonic_in_staleness(inputs: HealthInputs, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert score(inputs, stale_fraction=hi) <= score(inputs, stale_fraction=lo)


@DETERMINISTIC
@given(inputs=inputs_st, a=st.floats(0.0, 1e4), b=st.floats(0.0, 1e4))
def test_monotonic_in_errors(inputs: HealthInputs, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert score(inputs, error_rate=hi) <= score(inputs, error_rate=lo)


@DETERMINISTIC
@given(inputs=inputs_st, a=st.integers(0, 10_000), b=st.integers(0, 10_000))
def test_monotonic_in_reconnects(inputs: HealthInputs, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert score(inputs, reconnects_recent=hi) <= score(inputs, reconnects_recent=lo)


@DETERMINISTIC
@given(inputs=inputs_st, a=rate, b=rate)
def test_monotonic_in_message_rate(inputs: HealthInputs, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert score(inputs, message_rate=lo) <= score(inputs, message_rate=hi)


@DETERMINISTIC
@given(inputs=inputs_st)
def test_down_and_degraded_never_help(inputs: HealthInputs) -> None:
    assert score(inputs, state_up=False) == 0.0
    assert score(inputs, degraded=True) <= score(inputs, degraded=False)
    assert score(inputs, state_up=False) <= score(inputs, state_up=True)


def test_components_are_attributed() -> None:
    slow = health_score(dataclasses.replace(HEALTHY, latency=0.5))  # 10x baseline
    assert slow.latency_penalty == 0.5 and slow.worst_component() == "latency"
    stale = health_score(dataclasses.replace(HEALTHY, stale_fraction=0.5))
    assert stale.score == pytest.approx(60.0) and stale.worst_component() == "staleness"
    errs = health_score(dataclasses.replace(HEALTHY, error_rate=0.05))
    assert errs.error_penalty == pytest.approx(0.3) and errs.worst_component() == "errors"
    flap = health_score(dataclasses.replace(HEALTHY, reconnects_recent=3))
    assert flap.reconnect_penalty == pytest.approx(0.3)
    starved = health_score(dataclasses.replace(HEALTHY, message_rate=0.0))
    assert starved.rate_penalty == 0.5 and starved.worst_component() == "rate"
    # A 1 ms baseline does not turn 4 ms of jitter into a latency penalty.
    assert score(HEALTHY, baseline_latency=0.001, latency=0.005) == 100.0


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="stale_fraction"):
        dataclasses.replace(HEALTHY, stale_fraction=1.5)
    with pytest.raises(ValueError, match="latency"):
        dataclasses.replace(HEALTHY, latency=float("nan"))
    with pytest.raises(ValueError, match="reconnects_recent"):
        dataclasses.replace(HEALTHY, reconnects_recent=-1)


pairs = st.lists(st.tuples(st.floats(0.0, 100.0), st.floats(0.01, 1e3)), min_size=1, max_size=50)


@DETERMINISTIC
@given(scores=pairs)
def test_aggregate_bounds(scores: list[tuple[float, float]]) -> None:
    agg = aggregate_health(scores)
    worst = min(s for s, _ in scores)
    mean = sum(s * w for s, w in scores) / sum(w for _, w in scores)
    assert worst <= agg <= mean + 1e-9
    assert agg <= max(s for s, _ in scores)


@DETERMINISTIC
@given(scores=pairs, i=st.integers(0, 49), drop=st.floats(0.0, 100.0))
def test_aggregate_never_rises_when_a_score_falls(
    scores: list[tuple[float, float]], i: int, drop: float
) -> None:
    i %= len(scores)
    s, w = scores[i]
    worse = list(scores)
    worse[i] = (max(s - drop, 0.0), w)
    assert aggregate_health(worse) <= aggregate_health(scores)


def test_aggregate_worst_drags_and_edge_cases() -> None:
    assert aggregate_health([(100.0, 1.0)] * 9 + [(0.0, 1.0)]) == pytest.approx(67.5)
    assert aggregate_health([(80.0, 1.0), (80.0, 3.0)]) == pytest.approx(80.0)
    assert aggregate_health([(50.0, 1.0), (0.0, 0.0)]) == 50.0  # weight 0 is ignored
    with pytest.raises(ValueError):
        aggregate_health([])
    with pytest.raises(ValueError):
        aggregate_health([(50.0, -1.0)])


def _conn(
    cid: str, route: str, ctype: ConnectionType, up: bool, health: float, latency: float | None
) -> ConnectionSummary:
    return ConnectionSummary(
        id=cid,
        route=route,
        type=ctype,
        state_up=up,
        health=health,
        latency=latency,
        msg_rate=10.0,
        errors=1,
        reconnects=2,
    )


def test_overview_totals_types_and_routes() -> None:
    md = ConnectionType.MARKET_DATA
    conns = [
        _conn("bfx-1", "bitfinex", md, True, 100.0, 0.02),
        _conn("bfx-2", "bitfinex", md, False, 0.0, None),
        _conn("bin-1", "binance", md, True, 90.0, 0.04),
        _conn("bin-t", "binance-trade", ConnectionType.TRADING, True, 80.0, 0.06),
    ]
    ov = overview(conns)
    assert (ov.connections, ov.up, ov.down, ov.errors, ov.reconnects) == (4, 3, 1, 4, 8)
    assert ov.msg_rate == 40.0
    assert ov.avg_latency == pytest.approx(0.04)
    assert ov.health == pytest.approx(aggregate_health([(c.health, 1.0) for c in conns]))
    assert [t.type for t in ov.by_type] == list(ConnectionType)
    by_type = {t.type: t for t in ov.by_type}
    assert by_type[md].connections == 3 and by_type[md].down == 1
    assert by_type[ConnectionType.USER_DATA].connections == 0
    assert by_type[ConnectionType.USER_DATA].health is None
    assert [r.route for r in ov.by_route] == ["binance", "binance-trade", "bitfinex"]
    bfx = ov.by_route[2]
    assert bfx.health == pytest.approx(37.5)  # mean 50 pulled a quarter of the way to 0
    doc = ov.as_dict()
    assert json.loads(json.dumps(doc))["by_type"][0]["type"] == "market_data"


def test_overview_of_nothing() -> None:
    ov = overview([])
    assert ov.connections == 0 and ov.health is None and ov.by_route == ()
    assert len(ov.by_type) == 4
