"""adaptive = automatic strategy selection: signals, precedence, hysteresis (fake time)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from wsgate.core.adaptive import AdaptiveSelector, AdaptiveSwitch, observe
from wsgate.core.balancer import Balancer, Candidate, PickCounts
from wsgate.core.types import StrategyName as S


def pool(**over: dict[str, object]) -> list[Candidate]:
    """Three equal candidates, with per-id overrides: pool(b={"latency": 0.05})."""
    base: dict[str, dict[str, object]] = {i: {"latency": 0.010} for i in "abc"}
    for cid, fields in over.items():
        base[cid] = {**base[cid], **fields}
    return [Candidate(cid, **fields) for cid, fields in base.items()]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cands", "expected", "words"),
    [
        (pool(), S.ROUND_ROBIN, "even pool"),
        (pool(a={"subscriptions": 5}), S.LEAST_CONNECTIONS, "uneven placements"),
        (pool(b={"weight": 3.0}), S.WEIGHTED_ROUND_ROBIN, "weights configured"),
        (pool(a={"message_rate": 90.0}, b={"message_rate": 5.0}), S.LEAST_LOAD, "uneven load"),
        (pool(c={"latency": 0.040}), S.LEAST_LATENCY, "latency spread 4.0x"),
        (pool(c={"health": 70.0}), S.HEALTH_BASED, "c scores 70"),
        # Precedence: health over latency over load over weights over counts.
        (pool(c={"health": 70.0, "latency": 0.040}), S.HEALTH_BASED, "unhealthy"),
        (pool(c={"latency": 0.040, "message_rate": 90.0}), S.LEAST_LATENCY, "latency"),
        (pool(a={"message_rate": 90.0, "weight": 2.0}), S.LEAST_LOAD, "load"),
        (pool(a={"weight": 2.0, "subscriptions": 9}), S.WEIGHTED_ROUND_ROBIN, "weights"),
    ],
)
def test_first_choice_follows_the_signal_with_precedence(
    cands: list[Candidate], expected: S, words: str
) -> None:
    sel = AdaptiveSelector()
    chosen, switch = sel.select(cands, 0.0)
    assert chosen is expected
    assert switch == AdaptiveSwitch(None, expected, switch.reason if switch else "", 0.0)
    choice = sel.choice()
    assert choice is not None and words in choice.reason


def test_noise_below_the_floors_is_not_a_signal() -> None:
    sel = AdaptiveSelector()
    # 0.1 ms vs 0.3 ms on loopback: 3x, but a 0.2 ms gap is not worth chasing.
    tiny = pool(a={"latency": 0.0001}, b={"latency": 0.0003}, c={"latency": 0.0002})
    assert sel.select(tiny, 0.0)[0] is S.ROUND_ROBIN
    # A near-idle pool with one message per ten seconds on one connection is not "uneven load".
    assert observe(pool(a={"message_rate": 0.1})).rate_total == pytest.approx(0.1)
    assert AdaptiveSelector().select(pool(a={"message_rate": 0.1}), 0.0)[0] is S.ROUND_ROBIN
    # Ineligible and weightless candidates do not count (a drained slow connection is no signal).
    drained = pool(c={"latency": 0.5, "eligible": False})
    assert AdaptiveSelector().select(drained, 0.0)[0] is S.ROUND_ROBIN


def test_switch_needs_a_sustained_signal_and_a_minimum_dwell() -> None:
    sel = AdaptiveSelector(interval=1.0, sustain=5.0, min_dwell=30.0)
    even, slow = pool(), pool(c={"latency": 0.040})
    assert sel.select(even, 0.0)[0] is S.ROUND_ROBIN
    # Spread appears at t=40 (past the dwell): wanted from then, switched 5 s later.
    for t in range(40, 45):
        chosen, switch = sel.select(slow, float(t))
        assert chosen is S.ROUND_ROBIN and switch is None
    choice = sel.choice()
    assert choice is not None and choice.pending is S.LEAST_LATENCY
    chosen, switch = sel.select(slow, 45.0)
    assert chosen is S.LEAST_LATENCY
    assert switch is not None and switch.old is S.ROUND_ROBIN and switch.at == 45.0
    # Spread gone at once: the dwell holds the choice for 30 s from the switch.
    for t in range(46, 75):
        assert sel.select(even, float(t))[0] is S.LEAST_LATENCY
    assert sel.select(even, 76.0)[0] is S.ROUND_ROBIN
    assert sel.choice().switches == 2  # type: ignore[union-attr]


def test_a_signal_that_blinks_shorter_than_sustain_never_switches() -> None:
    sel = AdaptiveSelector(interval=1.0, sustain=5.0, min_dwell=0.0)
    sel.select(pool(), 0.0)
    for t in range(1, 600):
        cands = pool(c={"latency": 0.040}) if t % 8 < 4 else pool()  # 4 s on, 4 s off
        assert sel.select(cands, float(t))[0] is S.ROUND_ROBIN
    assert sel.choice().switches == 0  # type: ignore[union-attr]


def test_exit_thresholds_hold_a_choice_that_hovers_around_the_entry() -> None:
    """Latency ratio wandering between 1.3x and 1.6x: one switch in, none back out."""
    sel = AdaptiveSelector(interval=1.0, sustain=5.0, min_dwell=10.0)
    rng = random.Random(3)
    sel.select(pool(), 0.0)
    chosen_over_time = []
    for t in range(1, 900):
        ratio = 1.6 if t < 20 else rng.uniform(1.3, 1.6)
        chosen_over_time.append(sel.select(pool(c={"latency": 0.010 * ratio}), float(t))[0])
    assert chosen_over_time[-1] is S.LEAST_LATENCY
    assert sel.choice().switches == 1  # type: ignore[union-attr]


def test_evaluation_is_cached_for_an_interval() -> None:
    sel = AdaptiveSelector(interval=1.0, sustain=0.0, min_dwell=0.0)
    sel.select(pool(), 0.0)
    assert sel.select(pool(a={"subscriptions": 9}), 0.5)[0] is S.ROUND_ROBIN  # cached
    assert sel.select(pool(a={"subscriptions": 9}), 1.0)[0] is S.LEAST_CONNECTIONS
    assert sel.last_signals is not None and sel.last_signals.count_spread == 9


def test_a_pool_of_one_or_none_makes_no_choice() -> None:
    sel = AdaptiveSelector()
    assert sel.select([], 0.0) == (S.ROUND_ROBIN, None)
    assert sel.select([Candidate("a", weight=3.0)], 0.0) == (S.ROUND_ROBIN, None)
    assert sel.choice() is None
    assert sel.select(pool(b={"weight": 2.0}), 0.1)[0] is S.WEIGHTED_ROUND_ROBIN


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveSelector(health_enter=90.0, health_exit=80.0)
    with pytest.raises(ValueError):
        AdaptiveSelector(count_enter=1.0, count_exit=2.0)


# -- through the balancer ------------------------------------------------------------------


def test_balancer_adaptive_picks_with_the_chosen_strategy_and_reports_it() -> None:
    b = Balancer(S.ADAPTIVE, random.Random(1))
    seen: list[AdaptiveSwitch] = []
    b.on_adaptive_switch = seen.append
    weighted = [Candidate("a", weight=5.0), Candidate("b"), Candidate("c")]
    picks = "".join(b.pick(weighted, 0.0).candidate_id for _ in range(7))
    assert picks == "aabacaa"  # smooth WRR, exactly
    d = b.pick(weighted, 0.0)
    assert d.strategy is S.ADAPTIVE and d.reason == "adaptive: weighted round robin"
    stats = b.statistics()
    assert stats.adaptive is not None and stats.adaptive.strategy is S.WEIGHTED_ROUND_ROBIN
    assert stats.adaptive.as_dict()["reason"] == "weights configured"
    assert [s.new for s in seen] == [S.WEIGHTED_ROUND_ROBIN]
    # A connection turns unhealthy; after sustain + dwell adaptive goes health-based and
    # the weakest member gets nothing while healthy ones remain.
    sick = [Candidate("a", weight=5.0, health=60.0), Candidate("b"), Candidate("c")]
    got = Counter(b.pick(sick, 40.0 + k / 10).candidate_id for k in range(200))
    assert b.statistics().adaptive.strategy is S.HEALTH_BASED  # type: ignore[union-attr]
    assert [s.new for s in seen] == [S.WEIGHTED_ROUND_ROBIN, S.HEALTH_BASED]
    assert got["a"] <= 60  # only during the 5 s of sustain, while WRR still applied
    late = Counter(b.pick(sick, 50.0 + k / 10).candidate_id for k in range(50))
    assert late["a"] == 0


def test_observe_keeps_the_choice_fresh_without_picking() -> None:
    b = Balancer(S.ADAPTIVE, random.Random(1))
    assert b.observe(pool(c={"latency": 0.05}), 0.0) is S.LEAST_LATENCY
    assert b.statistics().total_picks == 0


def test_decisions_are_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[str]:
        b = Balancer(S.ADAPTIVE, random.Random(seed))
        out = []
        for k in range(300):
            lat = 0.05 if 100 <= k < 200 else 0.01
            cands = [Candidate(f"c{i}", latency=lat if i == 0 else 0.01) for i in range(5)]
            out.append(b.pick(cands, k / 2).candidate_id)
        return out

    assert run(4) == run(4)


# -- picks that leave no trace are counted ---------------------------------------------------


@pytest.mark.parametrize("strategy", [S.LEAST_CONNECTIONS, S.LEAST_LOAD, S.ADAPTIVE])
def test_handed_out_picks_spread_instead_of_repeating(strategy: S) -> None:
    b = Balancer(strategy, random.Random(1))
    counts = PickCounts(half_life=30.0)
    ids = ["a", "b", "c"]
    got = []
    for k in range(6):
        now = k * 0.01
        cands = [Candidate(i, picked=counts.value(i, now)) for i in ids]
        cid = b.pick(cands, now).candidate_id
        counts.add(cid, now)
        got.append(cid)
    assert Counter(got) == {"a": 2, "b": 2, "c": 2}


def test_pick_counts_decay_and_stay_bounded() -> None:
    pc = PickCounts(half_life=10.0)
    pc.add("a", 0.0)
    pc.add("a", 0.0)
    assert pc.value("a", 0.0) == pytest.approx(2.0)
    assert pc.value("a", 10.0) == pytest.approx(1.0)  # released by decay
    assert pc.value("zzz", 5.0) == 0.0
    for i in range(200):
        pc.add(f"id{i}", i * 100.0)  # each one long gone by the next
    assert len(pc) <= 66
    with pytest.raises(ValueError):
        PickCounts(half_life=0)
