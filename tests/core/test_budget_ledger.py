"""The shared budget ledger: grants, waits, pruning, the record, and CAS contention between
nodes (a seeded interleaving and hypothesis) never exceeding the budget in any window."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsgate.core.budget_ledger import (
    Ledger,
    Slice,
    decide_take,
    local_share,
    slice_size,
    window_margin,
)


def test_grants_until_the_limit_then_says_when_the_oldest_slice_frees() -> None:
    led = Ledger()
    for i in range(3):
        d = decide_take(led, node="a", want=1, limit=3, per=10.0, hold=1.0, now=float(i))
        assert d.ok and d.granted == 1 and d.ledger is not None
        led = d.ledger
    d = decide_take(led, node="b", want=1, limit=3, per=10.0, hold=1.0, now=3.0)
    assert not d.ok and d.used == 3
    # The first slice (start 0, end 1) occupies until 1 + 10 + margin 1 = 12.
    assert d.wait == pytest.approx(9.0)
    d = decide_take(led, node="b", want=1, limit=3, per=10.0, hold=1.0, now=12.0)
    assert d.ok and d.used == 3


def test_a_slice_takes_what_is_left_when_at_least_allows_it() -> None:
    led = Ledger((Slice("a", 0.0, 1.0, 7),))
    d = decide_take(led, node="b", want=5, limit=10, per=10.0, hold=1.0, now=2.0, at_least=1)
    assert d.granted == 3
    d = decide_take(led, node="b", want=5, limit=10, per=10.0, hold=1.0, now=2.0)
    assert d.granted == 0 and d.wait == pytest.approx(10.0)


def test_expired_slices_are_pruned_and_a_refusal_still_writes_the_pruned_record() -> None:
    led = Ledger((Slice("a", 0.0, 1.0, 2), Slice("b", 5.0, 6.0, 1)))
    d = decide_take(led, node="c", want=2, limit=2, per=10.0, hold=1.0, now=13.0)
    assert not d.ok
    assert d.ledger is not None and d.ledger.grants == (Slice("b", 5.0, 6.0, 1),)
    assert d.wait == pytest.approx(6.0 + 10.0 + 1.0 - 13.0)


def test_the_record_round_trips_and_rejects_what_is_not_one() -> None:
    led = Ledger((Slice("a", 1.5, 2.5, 1), Slice("node-2", 3.0, 4.0, 5)))
    assert Ledger.from_bytes(led.to_bytes()) == led
    for bad in (b"nope", b"[]", b'{"grants": [[1, 2, 3, 4]]}', b'{"grants": [["a", 1]]}'):
        with pytest.raises(ValueError):
            Ledger.from_bytes(bad)


def test_offline_grants_are_merged_once() -> None:
    mine = (Slice("a", 1.0, 2.0, 1),)
    led = Ledger(mine).with_grants((*mine, Slice("a", 3.0, 4.0, 1)))
    assert len(led.grants) == 2


def test_local_share_and_slice_size() -> None:
    assert local_share(20, 3) == 6
    assert local_share(2, 3) == 1
    assert local_share(300, 0) == 300
    assert slice_size(300, 3) == 25
    assert slice_size(5, 3) == 1
    assert window_margin(300.0) == 1.0 and window_margin(1.0) == 0.1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        decide_take(Ledger(), node="a", want=0, limit=1, per=1.0, hold=0.0, now=0.0)


# ---------------------------------------------------------------- contention between nodes


@dataclass
class FakeKv:
    """One key with a revision: what compare-and-set needs."""

    value: bytes | None = None
    revision: int = 0
    conflicts: int = 0

    def get(self) -> tuple[bytes | None, int]:
        return self.value, self.revision

    def update(self, value: bytes, last: int) -> bool:
        if last != self.revision:
            self.conflicts += 1
            return False
        self.value, self.revision = value, self.revision + 1
        return True


def max_in_window(uses: list[float], per: float) -> int:
    uses = sorted(uses)
    best, j = 0, 0
    for i, t in enumerate(uses):
        while t - uses[j] > per:  # closed window [uses[j], t]
            j += 1
        best = max(best, i - j + 1)
    return best


def run_cluster(
    seed: int, nodes: int, limit: int, per: float, steps: int, want: int, skew: float = 0.0
) -> FakeKv:
    """Nodes read, decide and write in a random interleaving (a read may be stale by the
    time its write lands); a granted slice's tokens are used at random times before its
    end. Each node's clock is off by up to ``skew / 2`` either way. No window of ``per``
    (in true time) ever holds more than ``limit`` uses."""
    rng = random.Random(seed)
    offset = [rng.uniform(-skew / 2, skew / 2) for _ in range(nodes)]
    kv = FakeKv()
    now = 0.0
    pending: dict[int, tuple[Ledger, int, float]] = {}  # node -> (read ledger, revision, at)
    uses: list[float] = []
    for _ in range(steps):
        now += rng.expovariate(1.0) * per / limit / 2
        n = rng.randrange(nodes)
        if n not in pending:
            raw, rev = kv.get()
            pending[n] = (Ledger.from_bytes(raw) if raw else Ledger(), rev, now)
            continue
        led, rev, _ = pending.pop(n)
        d = decide_take(
            led,
            node=f"n{n}",
            want=want,
            limit=limit,
            per=per,
            hold=0.5,
            now=now + offset[n],
            at_least=1,
        )
        if d.ledger is not None and kv.update(d.ledger.to_bytes(), rev) and d.ok:
            uses.extend(now + rng.uniform(0, 0.5) for _ in range(d.granted))
    assert max_in_window(uses, per) <= limit
    return kv


def test_seeded_interleavings_of_three_nodes_never_exceed_the_budget() -> None:
    total_conflicts = 0
    for seed in range(40):
        kv = run_cluster(seed, nodes=3, limit=6, per=5.0, steps=400, want=1)
        total_conflicts += kv.conflicts
    assert total_conflicts > 0  # the interleaving really made writes race


@given(
    seed=st.integers(0, 2**32 - 1),
    nodes=st.integers(1, 5),
    limit=st.integers(1, 30),
    want=st.integers(1, 8),
)
def test_any_interleaving_and_slice_size_stays_within_the_budget(
    seed: int, nodes: int, limit: int, want: int
) -> None:
    run_cluster(seed, nodes=nodes, limit=limit, per=3.0, steps=200, want=want)


@given(
    seed=st.integers(0, 2**32 - 1),
    limit=st.integers(1, 20),
    skew=st.floats(0.0, 1.0),
)
def test_clocks_apart_by_up_to_the_margin_still_stay_within_the_budget(
    seed: int, limit: int, skew: float
) -> None:
    run_cluster(seed, nodes=3, limit=limit, per=3.0, steps=200, want=2, skew=skew)
