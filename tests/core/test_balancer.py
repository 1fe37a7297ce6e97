from __future__ import annotations

import dataclasses
import random
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.core.balancer import (
    MIN_WEIGHT_FRACTION,
    Balancer,
    Candidate,
    ErrorPenalty,
    effective_weight,
    is_healthy,
    is_usable,
)
from wsgate.core.types import StrategyName
from wsgate.errors import NoCandidateError

ALL = list(StrategyName)


def _candidate(i: int, draw: st.DrawFn) -> Candidate:
    capacity = draw(st.sampled_from([0, 0, 1, 3, 10]))
    return Candidate(
        id=f"c{i}",
        weight=draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 5.0])),
        sessions=draw(st.integers(0, 5)),
        subscriptions=draw(st.integers(0, 12)),
        capacity=capacity,
        message_rate=draw(st.floats(0, 500, allow_nan=False)),
        latency=draw(st.none() | st.floats(0, 2, allow_nan=False)),
        health=draw(st.floats(0, 100, allow_nan=False)),
        eligible=draw(st.booleans() | st.just(True)),
        connected_at=draw(st.none() | st.floats(0, 100, allow_nan=False)),
        error_penalty=draw(st.floats(0, 10, allow_nan=False)),
    )


@st.composite
def pools(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(0, 8))
    return [_candidate(i, draw) for i in range(n)]


def _bump(cands: list[Candidate], cid: str) -> list[Candidate]:
    return [
        dataclasses.replace(c, subscriptions=c.subscriptions + 1) if c.id == cid else c
        for c in cands
    ]


# -- exclusions and fail-open -------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    cands=pools(),
    strategy=st.sampled_from(ALL),
    fail_open=st.booleans(),
    now=st.floats(0, 200, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_strategy_picks_an_excluded_candidate(
    cands: list[Candidate], strategy: StrategyName, fail_open: bool, now: float, seed: int
) -> None:
    b = Balancer(strategy, random.Random(seed), fail_open=fail_open)
    for _ in range(5):  # several picks so per-id state (WRR, peak EWMA, rotation) is exercised
        # The oracle is written out here, independent of the module's own helpers.
        usable = [
            c
            for c in cands
            if c.eligible and c.weight > 0 and not (c.capacity and c.subscriptions >= c.capacity)
        ]
        healthy = [c for c in usable if c.health >= 50.0]
        if not healthy and not (usable and fail_open):
            with pytest.raises(NoCandidateError):
                b.pick(cands, now)
            assert b.statistics().no_candidate >= 1
            return
        d = b.pick(cands, now)
        assert d.strategy is strategy
        if healthy:
            assert d.candidate_id in {c.id for c in healthy}
            assert not d.fail_open
        else:
            assert d.fail_open
            chosen = next(c for c in usable if c.id == d.candidate_id)
            assert chosen.health == max(c.health for c in usable)
        cands = _bump(cands, d.candidate_id)


def test_fail_open_for_market_data_and_no_candidate_for_trading() -> None:
    sick = [Candidate("a", health=20.0, subscriptions=3), Candidate("b", health=30.0)]
    md = Balancer(StrategyName.LEAST_CONNECTIONS, random.Random(1), fail_open=True)
    d = md.pick(sick, 0.0)
    assert (d.candidate_id, d.fail_open) == ("b", True)
    assert "fail open" in d.reason
    assert md.statistics().fail_open_picks == 1

    trading = Balancer(StrategyName.LEAST_CONNECTIONS, random.Random(1), fail_open=False)
    with pytest.raises(NoCandidateError, match=r"2 unhealthy \(health < 50.0\).*fail-open"):
        trading.pick(sick, 0.0)
    assert trading.statistics().no_candidate == 1


def test_no_candidate_message_counts_reasons() -> None:
    b = Balancer(StrategyName.ROUND_ROBIN, random.Random(1))
    with pytest.raises(NoCandidateError, match="pool is empty"):
        b.pick([], 0.0)
    cands = [
        Candidate("off", eligible=False),
        Candidate("full", capacity=2, subscriptions=2),
        Candidate("zero", weight=0.0),
    ]
    with pytest.raises(NoCandidateError, match="among 3: 1 not eligible, 1 with weight 0, 1 full"):
        b.pick(cands, 0.0)


def test_full_candidate_is_skipped_and_healthy_preferred_over_unhealthy() -> None:
    cands = [
        Candidate("full", capacity=25, subscriptions=25),
        Candidate("sick", health=10.0),
        Candidate("ok", subscriptions=24, capacity=25),
    ]
    for s in ALL:
        d = Balancer(s, random.Random(7)).pick(cands, 0.0)
        assert (d.candidate_id, d.fail_open) == ("ok", False), s


# -- round robin, least connections, least load, health -----------------------------------


def test_round_robin_cycles_and_skips_excluded() -> None:
    b = Balancer(StrategyName.ROUND_ROBIN, random.Random(1))
    cands = [Candidate("a"), Candidate("b", eligible=False), Candidate("c"), Candidate("d")]
    got = [b.pick(cands, 0.0).candidate_id for _ in range(6)]
    assert got == ["a", "c", "d", "a", "c", "d"]


def test_least_connections_counts_sessions_and_subscriptions() -> None:
    b = Balancer(StrategyName.LEAST_CONNECTIONS, random.Random(1))
    cands = [
        Candidate("a", sessions=3),
        Candidate("b", subscriptions=2),
        Candidate("c", sessions=4),
    ]
    assert b.pick(cands, 0.0).candidate_id == "b"


def test_least_connections_breaks_ties_by_rotation_not_list_order() -> None:
    b = Balancer(StrategyName.LEAST_CONNECTIONS, random.Random(1))
    cands = [Candidate(x) for x in "abcd"]
    got = Counter(b.pick(cands, 0.0).candidate_id for _ in range(40))
    assert got == Counter(dict.fromkeys("abcd", 10))


def test_least_connections_spreads_a_burst_evenly() -> None:
    b = Balancer(StrategyName.LEAST_CONNECTIONS, random.Random(1))
    cands = [Candidate(f"c{i}") for i in range(7)]
    for _ in range(70):
        cands = _bump(cands, b.pick(cands, 0.0).candidate_id)
    assert {c.subscriptions for c in cands} == {10}


def test_least_load_normalises_rate_by_weight_and_breaks_ties_by_count() -> None:
    b = Balancer(StrategyName.LEAST_LOAD, random.Random(1))
    cands = [
        Candidate("a", message_rate=100.0),
        Candidate("b", message_rate=150.0, weight=2.0),  # 75 per unit of weight
        Candidate("c", message_rate=90.0, health=10.0),  # excluded
    ]
    assert b.pick(cands, 0.0).candidate_id == "b"
    tied = [Candidate("a", message_rate=5.0, subscriptions=4), Candidate("b", message_rate=5.0)]
    assert b.pick(tied, 0.0).candidate_id == "b"


def test_health_based_prefers_health_then_load() -> None:
    b = Balancer(StrategyName.HEALTH_BASED, random.Random(1))
    cands = [
        Candidate("a", health=90.0),
        Candidate("b", health=99.0, subscriptions=8),
        Candidate("c", health=99.0, subscriptions=2),
    ]
    assert b.pick(cands, 0.0).candidate_id == "c"


# -- weighted round robin -----------------------------------------------------------------


def test_smooth_wrr_sequence_matches_nginx() -> None:
    b = Balancer(StrategyName.WEIGHTED_ROUND_ROBIN, random.Random(1))
    cands = [Candidate("a", weight=5.0), Candidate("b"), Candidate("c")]
    seq = "".join(b.pick(cands, 0.0).candidate_id for _ in range(14))
    assert seq == "aabacaa" * 2


@settings(max_examples=150, deadline=None)
@given(
    weights=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    cycles=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_wrr_matches_weights_exactly_over_each_cycle(
    weights: list[int], cycles: int, seed: int
) -> None:
    b = Balancer(StrategyName.WEIGHTED_ROUND_ROBIN, random.Random(seed))
    cands = [Candidate(f"c{i}", weight=float(w)) for i, w in enumerate(weights)]
    shuffle = random.Random(seed)
    total = sum(weights)
    for _ in range(cycles):
        got: Counter[str] = Counter()
        for _ in range(total):
            shuffle.shuffle(cands)  # state is keyed by id: list order must not matter
            got[b.pick(cands, 0.0).candidate_id] += 1
        assert got == Counter({f"c{i}": w for i, w in enumerate(weights)})


def test_wrr_has_no_bursts_for_equal_weights_and_survives_list_changes() -> None:
    b = Balancer(StrategyName.WEIGHTED_ROUND_ROBIN, random.Random(1))
    cands = [Candidate("a", weight=2.0), Candidate("b", weight=2.0), Candidate("c", weight=2.0)]
    first = [b.pick(cands, 0.0).candidate_id for _ in range(3)]
    assert sorted(first) == ["a", "b", "c"]
    # "b" leaves and comes back: the others keep their positions, b resumes its share.
    without_b = [c for c in cands if c.id != "b"]
    mid = Counter(b.pick(without_b, 0.0).candidate_id for _ in range(4))
    assert mid == Counter({"a": 2, "c": 2})
    after = Counter(b.pick(cands, 0.0).candidate_id for _ in range(6))
    assert after == Counter({"a": 2, "b": 2, "c": 2})


# -- least latency ------------------------------------------------------------------------


def test_least_latency_p2c_spreads_a_burst_across_near_equal_connections() -> None:
    rng = random.Random(42)
    cands = [Candidate(f"c{i}", latency=0.010 + rng.uniform(-5e-4, 5e-4)) for i in range(10)]
    b = Balancer(StrategyName.LEAST_LATENCY, random.Random(7))
    for k in range(1000):
        cands = _bump(cands, b.pick(cands, k / 1000).candidate_id)
    counts = [c.subscriptions for c in cands]
    assert sum(counts) == 1000
    assert max(counts) <= 2 * 100
    assert min(counts) >= 50


def test_least_latency_prefers_fast_and_treats_unsampled_as_median() -> None:
    cands = [
        Candidate("fast", latency=0.005),
        Candidate("mid", latency=0.010),
        Candidate("slow", latency=0.050),
        Candidate("new", latency=None),
    ]
    b = Balancer(StrategyName.LEAST_LATENCY, random.Random(3))
    for k in range(400):
        cands = _bump(cands, b.pick(cands, float(k)).candidate_id)
    got = {c.id: c.subscriptions for c in cands}
    assert got["fast"] > got["mid"] > got["slow"]
    assert got["new"] > got["slow"]  # a connection without a sample still gets traffic
    assert got["new"] >= got["mid"] // 2


# -- peak ewma ----------------------------------------------------------------------------


def _simulate_peak_ewma(seconds: int, slow_from: int, slow_until: int) -> list[dict[str, int]]:
    """Feedback loop in fake time: 20 arrivals and (at steady state) 20 departures per second.

    Each connection's RTT = base * (1 + subscriptions / 200): more load, a bit slower.
    Connection "a" has its base RTT tripled between slow_from and slow_until.
    Returns the subscription counts at the end of every simulated second.
    """
    ids = ["a", "b", "c", "d"]
    subs: dict[str, list[int]] = {i: [] for i in ids}
    b = Balancer(StrategyName.PEAK_EWMA, random.Random(11))
    churn = random.Random(5)
    history: list[dict[str, int]] = []
    serial = 0
    for t in range(seconds):
        for k in range(20):
            now = t + k / 20
            base = {i: 0.010 for i in ids}
            if slow_from <= t < slow_until:
                base["a"] = 0.030
            cands = [
                Candidate(i, subscriptions=len(subs[i]), latency=base[i] * (1 + len(subs[i]) / 200))
                for i in ids
            ]
            serial += 1
            subs[b.pick(cands, now).candidate_id].append(serial)
        total = sum(len(v) for v in subs.values())
        for _ in range(max(0, total - 400)):
            pool = [i for i in ids if subs[i]]
            victim = churn.choice(pool)
            subs[victim].pop(churn.randrange(len(subs[victim])))
        history.append({i: len(v) for i, v in subs.items()})
    return history


def test_peak_ewma_moves_load_away_from_slow_connection_and_back_without_flapping() -> None:
    hist = _simulate_peak_ewma(seconds=420, slow_from=120, slow_until=240)

    def share(h: dict[str, int]) -> float:
        return h["a"] / sum(h.values())

    # Healthy and equal: roughly a quarter each.
    assert 0.18 <= share(hist[119]) <= 0.32
    # Latency tripled: load drains away and stays away while a is slow (no flapping back).
    assert share(hist[239]) < 0.15
    assert all(share(h) < share(hist[119]) for h in hist[150:240])
    # Recovered: traffic returns, without overshooting onto the now-fast connection.
    assert 0.18 <= share(hist[419]) <= 0.32
    assert all(share(h) <= 0.35 for h in hist[240:])
    # Return is gradual: once back in the band it stays there (no oscillation).
    back = next(t for t in range(240, 420) if share(hist[t]) >= 0.18)
    assert all(share(h) >= 0.15 for h in hist[back:])


def test_peak_ewma_idle_pool_prefers_latency_busy_pool_prefers_load_degraded_prefers_health() -> (
    None
):
    b = Balancer(StrategyName.PEAK_EWMA, random.Random(1))
    # Only two candidates: P2C compares both, so the outcome is the cost order.
    idle = [Candidate("fast", latency=0.010), Candidate("slow", latency=0.012)]
    assert b.pick(idle, 0.0).candidate_id == "fast"
    busy = [
        Candidate("fast", latency=0.010, subscriptions=40),
        Candidate("slow", latency=0.012, subscriptions=10),
    ]
    assert b.pick(busy, 100.0).candidate_id == "slow"
    degraded = [
        Candidate("fast", latency=0.010, error_penalty=3.0),
        Candidate("slow", latency=0.012),
    ]
    assert b.pick(degraded, 200.0).candidate_id == "slow"
    weak = [Candidate("fast", latency=0.010, health=60.0), Candidate("slow", latency=0.012)]
    assert b.pick(weak, 300.0).candidate_id == "slow"


def test_peak_ewma_peak_ewma_jumps_up_and_decays_down() -> None:
    b = Balancer(StrategyName.PEAK_EWMA, random.Random(1), decay=10.0)
    ref = Candidate("ref", latency=0.020)
    b.pick([Candidate("x", latency=0.010), ref], 0.0)
    b.pick([Candidate("x", latency=0.100), ref], 1.0)  # spike: peak follows at once
    # RTT back to 10 ms, but the peak only decays: 1 s later x still looks slower than ref.
    assert b.pick([Candidate("x", latency=0.010), ref], 2.0).candidate_id == "ref"
    # 60 s later (6 decay times) the peak has come down and x wins again.
    assert b.pick([Candidate("x", latency=0.010), ref], 62.0).candidate_id == "x"


# -- slow start, penalty, bookkeeping -----------------------------------------------------


@given(
    t0=st.floats(-1e6, 1e6, allow_nan=False),
    window=st.floats(0, 600, allow_nan=False),
    weight=st.floats(0.1, 100, allow_nan=False),
    times=st.lists(st.floats(-1e6, 2e6, allow_nan=False), min_size=2, max_size=20),
    aggression=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_slow_start_ramps_monotonically_from_floor_to_full(
    t0: float, window: float, weight: float, times: list[float], aggression: float
) -> None:
    c = Candidate("x", weight=weight, connected_at=t0)
    ws = [effective_weight(c, now, window, aggression=aggression) for now in sorted(times)]
    assert all(a <= b for a, b in pairwise(ws))
    assert all(weight * MIN_WEIGHT_FRACTION - 1e-9 <= w <= weight for w in ws)
    assert effective_weight(c, t0 + window + 1.0, window) == weight


def test_slow_start_values_and_effect_on_placement() -> None:
    c = Candidate("new", connected_at=100.0, weight=2.0)
    assert effective_weight(c, 100.0, 30.0) == pytest.approx(0.2)
    assert effective_weight(c, 115.0, 30.0) == pytest.approx(1.0)
    assert effective_weight(c, 200.0, 30.0) == 2.0
    assert effective_weight(Candidate("old"), 0.0, 30.0) == 1.0
    # A fresh connection next to a loaded one takes far less than half of a burst at first.
    b = Balancer(StrategyName.LEAST_CONNECTIONS, random.Random(1), slow_start=30.0)
    cands = [Candidate("old", subscriptions=5), Candidate("new", connected_at=100.0)]
    for _ in range(20):
        cands = _bump(cands, b.pick(cands, 101.0).candidate_id)
    got = {c.id: c.subscriptions for c in cands}
    assert got["new"] < 5 < got["old"]


def test_error_penalty_halves_every_half_life_and_accumulates() -> None:
    p = ErrorPenalty(half_life=10.0)
    assert p.value(0.0) == 0.0
    p.add(0.0, 4.0)
    assert p.value(10.0) == pytest.approx(2.0)
    assert p.value(20.0) == pytest.approx(1.0)
    p.add(20.0)
    assert p.value(20.0) == pytest.approx(2.0)
    assert p.value(5.0) == pytest.approx(2.0)  # time going backwards: no growth, no decay
    assert "half_life=10.0" in repr(p)
    with pytest.raises(ValueError):
        p.add(0.0, -1.0)


def test_statistics_forget_strategy_override_and_repr() -> None:
    b = Balancer(StrategyName.WEIGHTED_ROUND_ROBIN, random.Random(1))
    cands = [Candidate("a", latency=0.01), Candidate("b", latency=0.02), Candidate("c")]
    b.pick(cands, 0.0)
    b.pick(cands, 0.0, strategy=StrategyName.PEAK_EWMA)
    b.strategy = StrategyName.ROUND_ROBIN
    b.pick(cands, 0.0)
    s = b.statistics()
    assert s.strategy is StrategyName.ROUND_ROBIN
    assert s.total_picks == 3
    assert s.picks[StrategyName.WEIGHTED_ROUND_ROBIN] == 1
    assert s.picks[StrategyName.PEAK_EWMA] == 1
    assert s.tracked_ids == 3
    for cid in "abc":
        b.forget(cid)
    assert b.statistics().tracked_ids == 0
    assert "<Balancer round_robin picks=3" in repr(b)


def test_decisions_are_deterministic_for_a_seed() -> None:
    cands = [Candidate(f"c{i}", latency=0.01 * (1 + i % 3), subscriptions=i) for i in range(20)]

    def run(seed: int) -> list[str]:
        b = Balancer(StrategyName.PEAK_EWMA, random.Random(seed))
        return [b.pick(cands, float(k)).candidate_id for k in range(50)]

    assert run(9) == run(9)


def test_state_survives_a_rebuilt_balancer() -> None:
    cands = [Candidate("a", weight=5.0), Candidate("b"), Candidate("c")]
    old = Balancer(StrategyName.WEIGHTED_ROUND_ROBIN, random.Random(1))
    head = [old.pick(cands, 0.0).candidate_id for _ in range(3)]
    state = old.export_state()
    new = Balancer(StrategyName.WEIGHTED_ROUND_ROBIN, random.Random(1))
    new.restore_state(state)
    tail = [new.pick(cands, 0.0).candidate_id for _ in range(4)]
    assert "".join(head + tail) == "aabacaa"  # the cycle continues, it does not restart
    assert state.strategy is StrategyName.WEIGHTED_ROUND_ROBIN
    # Peak RTT history carries over too: a spike seen before the rebuild still counts.
    a = Balancer(StrategyName.PEAK_EWMA, random.Random(1))
    ref = Candidate("ref", latency=0.020)
    a.pick([Candidate("x", latency=0.100), ref], 0.0)
    b = Balancer(StrategyName.PEAK_EWMA, random.Random(1))
    b.restore_state(a.export_state())
    assert b.pick([Candidate("x", latency=0.010), ref], 1.0).candidate_id == "ref"


def test_strategy_may_be_given_as_its_config_string() -> None:
    b = Balancer(StrategyName.ROUND_ROBIN, random.Random(1))
    d = b.pick([Candidate("a")], 0.0, strategy="health_based")  # type: ignore[arg-type]
    assert d.strategy is StrategyName.HEALTH_BASED
    assert b.statistics().picks[StrategyName.HEALTH_BASED] == 1


def test_exclusion_helpers() -> None:
    assert is_usable(Candidate("a"))
    assert not is_usable(Candidate("a", capacity=2, subscriptions=2))
    assert not is_usable(Candidate("a", weight=0.0))
    assert not is_usable(Candidate("a", eligible=False))
    assert not is_healthy(Candidate("a", health=49.9), 50.0)
    assert is_healthy(Candidate("a", health=50.0), 50.0)
