"""The chaos drill on a cluster (see tests/chaos/cluster_drill.py): real nats-server, three
wsgate nodes with ``share = "cluster"``, the simulator, and bots on every node checking
per-session sequence numbers (+1), no trade twice and no gap without a fresh snapshot.

The short drill (one kill -9, one NATS restart, one upstream fault, in a seeded order)
runs in `make test`; the ``slow`` one (many steps) in `make chaos`.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.chaos.cluster_drill import SIM, ClusterDrill
from tests.chaos.simthread import SimThread
from tests.cluster.rig import NatsServer, Nodes


async def _drill(d: ClusterDrill, kinds: list[str]) -> None:
    for i in range(d.n_nodes):
        d.add_bots(i, d.bots_per_node)
    await d.settle("start")
    await d.run(kinds)
    d.add_bots(d.rng.randrange(d.n_nodes), 1)  # a late joiner after the last step
    await d.settle("late joiner")
    await d.stop_bots()


def _run(seed: int, kinds: list[str], *, breaking_faults: bool = False) -> ClusterDrill:
    with SimThread(seed=seed, **SIM) as sim, NatsServer() as nats, Nodes() as nodes:
        d = ClusterDrill(sim, nats, nodes, random.Random(seed), breaking_faults=breaking_faults)
        d.start_nodes()
        asyncio.run(_drill(d, kinds))
        for i, p in enumerate(d.daemons):
            assert p.proc.poll() is None, f"n{i} died:\n{p.logs()[-3000:]}"
    counters = [b.counter for b in d.bots]
    violations = [v for c in counters for v in c.violations]
    if violations:  # the whole story, untruncated: which step, which bots
        for s in d.steps:
            print(f"step {s.kind} {s.detail}: {len(s.violations)} violation(s) {s.violations[:4]}")
    assert not violations, violations[:20]
    errors = [e for c in counters for e in c.errors]
    assert not errors, errors[:5]
    # Sessions on nodes that were not killed under them survived every step.
    closed = [
        (b.counter.name, b.counter.closed) for b in d.bots if not b.doomed and b.counter.closed
    ]
    assert not closed, closed
    assert all(c.trades_seen() > 0 for c in counters if not c.closed)
    print(
        f"{sum(c.frames for c in counters)} frames, {sum(c.trades_seen() for c in counters)} "
        "trades checked; steps:",
        [(s.kind, s.detail, round(s.settled_after, 2)) for s in d.steps],
        "snapshots per surviving bot:",
        sorted(b.counter.snapshots_seen() for b in d.bots if not b.doomed),
    )
    return d


@pytest.mark.timeout(150)  # about 20 s; a loaded CI machine gets room, not a flake
def test_short_cluster_chaos_drill() -> None:
    seed = 11
    kinds = ["kill", "nats", "fault"]
    random.Random(seed).shuffle(kinds)
    d = _run(seed, kinds, breaking_faults=True)
    assert sorted(s.kind for s in d.steps) == ["fault", "kill", "nats"]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2])
def test_long_cluster_chaos_drill(seed: int) -> None:
    rng = random.Random(seed)
    kinds = rng.choices(["kill", "nats", "fault"], weights=[3, 2, 4], k=30)
    _run(seed, kinds)
