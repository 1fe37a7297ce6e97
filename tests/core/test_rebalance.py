from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.core.balancer import Candidate
from wsgate.core.rebalance import Move, Rebalancer, RebalanceState


def _loads(**counts: int) -> dict[str, list[str]]:
    return {cid: [f"{cid}:{k:03d}" for k in range(n)] for cid, n in counts.items()}


def _apply(loads: Mapping[str, Sequence[str]], moves: list[Move]) -> dict[str, list[str]]:
    out = {k: list(v) for k, v in loads.items()}
    for m in moves:
        out[m.source].remove(m.subscription)
        out.setdefault(m.target, []).append(m.subscription)
    return out


POOL = [Candidate("a"), Candidate("b"), Candidate("c")]


def test_no_plan_before_sustain_then_bounded_plan_after() -> None:
    r = Rebalancer(imbalance_ratio=1.5, sustain=60.0, max_moves_per_run=5, min_interval=30.0)
    loads = _loads(a=30, b=0, c=0)  # ratio 3.0: a recovered/new b and c sit idle
    assert r.plan(loads, POOL, 0.0) == []
    assert r.statistics().state is RebalanceState.PENDING
    assert r.plan(loads, POOL, 59.9) == []
    moves = r.plan(loads, POOL, 60.0)
    assert r.statistics().state is RebalanceState.ACTIVE
    assert len(moves) == 5
    assert all(m.source == "a" and m.target in {"b", "c"} for m in moves)
    assert len({m.subscription for m in moves}) == 5
    # Greedy alternates targets: the least loaded one always receives the next move.
    assert [m.target for m in moves] == ["b", "c", "b", "c", "b"]


def test_min_interval_between_runs_and_convergence() -> None:
    r = Rebalancer(sustain=10.0, max_moves_per_run=4, min_interval=30.0)
    loads = _loads(a=30, b=0, c=0)
    r.plan(loads, POOL, 0.0)
    now = 10.0
    moves = r.plan(loads, POOL, now)
    assert len(moves) == 4
    loads = _apply(loads, moves)
    assert r.plan(loads, POOL, now + 29.0) == []  # rate limited
    assert r.statistics().deferred == 1
    moved: set[str] = set()
    for _ in range(20):
        now += 30.0
        moves = r.plan(loads, POOL, now)
        assert len(moves) <= 4
        assert not moved & {m.subscription for m in moves}  # nothing moved twice: no flapping
        moved |= {m.subscription for m in moves}
        loads = _apply(loads, moves)
        if r.state is RebalanceState.BALANCED:
            break
    assert r.state is RebalanceState.BALANCED
    counts = sorted(len(v) for v in loads.values())
    assert counts[-1] / (sum(counts) / 3) < r.reset_ratio
    assert r.plan(loads, POOL, now + 1000.0) == []


def test_hysteresis_band_neither_resets_the_clock_nor_triggers_on_its_own() -> None:
    r = Rebalancer(imbalance_ratio=1.5, sustain=60.0, min_interval=0.0)
    assert r.reset_ratio == 1.25
    high = _loads(a=16, b=8, c=6)  # 16 / 10 = 1.6
    band = _loads(a=14, b=8, c=8)  # 14 / 10 = 1.4: between 1.25 and 1.5
    low = _loads(a=12, b=9, c=9)  # 1.2
    # In the band from the start: never pending.
    for step in range(0, 200, 10):
        assert r.plan(band, POOL, float(step)) == []
    assert r.state is RebalanceState.BALANCED
    # Wobbling between high and band keeps the original start time.
    r.plan(high, POOL, 200.0)
    for t, loads in ((210.0, band), (220.0, high), (230.0, band), (250.0, band)):
        assert r.plan(loads, POOL, t) == []
    assert r.statistics().imbalanced_since == 200.0
    assert r.plan(band, POOL, 260.0) != []  # sustained since 200 although now only in the band
    # Dropping below the lower ratio resets; crossing again restarts the clock.
    assert r.plan(low, POOL, 270.0) == []
    assert r.state is RebalanceState.BALANCED
    assert r.plan(high, POOL, 280.0) == []
    assert r.plan(high, POOL, 330.0) == []
    assert r.plan(high, POOL, 340.0) != []


def test_balanced_pool_never_moves() -> None:
    r = Rebalancer(sustain=0.0, min_interval=0.0)
    for t in range(10):
        assert r.plan(_loads(a=10, b=9, c=11), POOL, float(t)) == []
    assert r.statistics().runs == 0


def test_never_moves_to_ineligible_full_or_unhealthy_targets() -> None:
    cands = [
        Candidate("hot"),
        Candidate("off", eligible=False),
        Candidate("full", capacity=3),
        Candidate("sick", health=10.0),
        Candidate("ok", capacity=4),
    ]
    r = Rebalancer(sustain=0.0, min_interval=0.0, max_moves_per_run=50)
    loads = _loads(hot=20, off=0, full=2, sick=0, ok=0)
    moves = r.plan(loads, cands, 0.0)
    targets = Counter(m.target for m in moves)
    assert targets == {"full": 1, "ok": 4}  # filled up to capacity, nothing more


def test_plans_are_deterministic_and_weighted() -> None:
    cands = [Candidate("a", weight=1.0), Candidate("b", weight=3.0)]
    loads = {"a": ["x3", "x1", "x2", "x4"], "b": []}

    def run() -> list[Move]:
        r = Rebalancer(sustain=0.0, min_interval=0.0, max_moves_per_run=10)
        return r.plan(loads, cands, 0.0)

    first = run()
    assert first == run()
    # b has three times the weight: it should end with 3 of the 4.
    assert first == [Move("x4", "a", "b"), Move("x3", "a", "b"), Move("x2", "a", "b")]


def test_statistics_and_repr() -> None:
    r = Rebalancer(sustain=0.0, min_interval=0.0, max_moves_per_run=2)
    r.plan(_loads(a=9, b=0, c=0), POOL, 5.0)
    s = r.statistics()
    assert (s.state, s.runs, s.moves_planned, s.last_run) == (RebalanceState.ACTIVE, 1, 2, 5.0)
    assert s.ratio == pytest.approx(3.0)
    assert "<Rebalancer active ratio=3.00" in repr(r)
    with pytest.raises(ValueError):
        Rebalancer(imbalance_ratio=1.0)


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    flags=st.lists(
        st.tuples(st.booleans(), st.sampled_from([0, 0, 5, 20]), st.floats(0, 100)),
        min_size=6,
        max_size=6,
    ),
    budget=st.integers(0, 8),
)
def test_property_moves_are_bounded_valid_and_narrow_the_gap(
    counts: list[int], flags: list[tuple[bool, int, float]], budget: int
) -> None:
    cands = [
        Candidate(f"c{i}", eligible=flags[i][0], capacity=flags[i][1], health=flags[i][2])
        for i in range(len(counts))
    ]
    loads = {f"c{i}": [f"c{i}:{k}" for k in range(n)] for i, n in enumerate(counts)}
    r = Rebalancer(sustain=0.0, min_interval=0.0, max_moves_per_run=budget)
    moves = r.plan(loads, cands, 0.0)
    assert len(moves) <= budget
    by_id = {c.id: c for c in cands}
    sim = {k: len(v) for k, v in loads.items()}
    seen: set[str] = set()
    for m in moves:
        t = by_id[m.target]
        assert t.eligible and t.health >= 50.0 and m.target != m.source
        assert m.subscription in loads[m.source] and m.subscription not in seen
        seen.add(m.subscription)
        assert sim[m.target] + 1 < sim[m.source]  # strictly narrows the gap
        sim[m.source] -= 1
        sim[m.target] += 1
        assert t.capacity == 0 or sim[m.target] <= t.capacity
