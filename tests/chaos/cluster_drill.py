"""The chaos drill on a cluster: a real nats-server, wsgate nodes as subprocesses with
``share = "cluster"`` and the Bitfinex simulator in a thread, under a seeded schedule of
kill -9 of nodes (restarted), NATS restarts and upstream faults.

:class:`ClusterDrill` owns the parts and the bots; every step waits for the cluster to
settle (every node up, exactly one exchange subscription per key, trades flowing at every
live bot) before the next one, with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.bfxclient import SEQ_ALL, BfxCounter
from tests.chaos.drill import FaultSchedule
from tests.chaos.simthread import SimThread
from tests.cluster.rig import NatsServer, Nodes
from tests.e2e.harness import DaemonProc

__all__ = ["SIM", "SUBS", "ClusterDrill", "Step", "node_body"]

SUBS = (("trades", "tBTCUSD"), ("trades", "tETHUSD"), ("ticker", "tBTCUSD"))
SIM = {
    "binance": False,
    "bitfinex_trades_rate": 20.0,
    "bitfinex_ticker_rate": 5.0,
    "bitfinex_heartbeat_interval": 2.0,
}
LEASE_TTL = 3.0
# Failover takes up to lease_ttl + 1 s; a restart, a fallback and a return to sharing
# take a few seconds more on a loaded machine. Generous: a timeout is a finding.
SETTLE_TIMEOUT = LEASE_TTL + 30.0
# Faults that close the owner's upstream connection or make it reconnect.
BREAKING = ("drop_all", "drop_one", "20051", "reject")


def node_body(nats_url: str, sim_url: str) -> str:
    """One node: a shared Bitfinex route tuned to recover fast (as the one-node drill's)."""
    return f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "drill"
heartbeat_interval = 0.5
node_down_after = 2.0
lease_ttl = {LEASE_TTL}
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
min_connections = 0
share = "cluster"
linger = 1
stale_after = 4
backoff_initial = 0.1
backoff_max = 1.0
min_uptime = 0.5
app_ping_interval = 2
connect_budget = {{ count = 1000, per = 1 }}
[[routes.bfx.endpoints]]
url = "{sim_url}"
"""


@dataclass
class Step:
    kind: str
    detail: str
    settled_after: float = 0.0
    violations: list[str] = field(default_factory=list)  # found during this step


@dataclass
class _Bot:
    counter: BfxCounter
    node: int
    task: asyncio.Task[None]
    doomed: bool = False  # its node was killed under it: a closed session is expected


async def until(cond: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class ClusterDrill:
    """``async with``-free by design: the caller's ``with`` blocks own the processes."""

    sim: SimThread
    nats: NatsServer
    nodes: Nodes
    rng: random.Random
    n_nodes: int = 3
    bots_per_node: int = 2
    daemons: list[DaemonProc] = field(default_factory=list)
    bots: list[_Bot] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    faults: FaultSchedule | None = None
    breaking_faults: bool = False
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    # ---------------------------------------------------------------- parts

    def body(self) -> str:
        return node_body(self.nats.url, self.sim.bitfinex_url)

    def start_nodes(self) -> None:
        procs = [
            self.nodes.start(f"n{i}", self.body(), wait_ready=False) for i in range(self.n_nodes)
        ]
        for i, d in enumerate(procs):
            _wait_ready(d, f"n{i}")
        self.daemons = procs

    def restart(self, i: int) -> None:
        """Start node ``i`` again in its directory, under its own node id."""
        self.daemons[i] = self.nodes.start_in(self.daemons[i].dir, f"n{i}", self.body())

    def live_subscriptions(self) -> dict[str, int]:
        """Per channel key, the subscriptions the exchange holds (all connections)."""

        def count(sim: Any) -> dict[str, int]:
            return {k: len(f.subs) for k, f in sim.bitfinex.feeds.items() if f.subs}

        return self.sim.call(count)

    def owners(self) -> list[int]:
        """Nodes that own at least one key now (``status --json``)."""
        out = []
        for i, d in enumerate(self.daemons):
            share = _share(d)
            if share.get("owned", 0) > 0:
                out.append(i)
        return out

    # ---------------------------------------------------------------- bots

    def add_bots(self, i: int, n: int) -> None:
        url = f"ws://127.0.0.1:{self.daemons[i].port}/bfx"
        for j in range(n):
            counter = BfxCounter(
                url, SUBS, flags=SEQ_ALL if j % 2 == 0 else 0, name=f"n{i}.{len(self.bots)}"
            )
            task = asyncio.get_running_loop().create_task(counter.run(self._stop))
            self.bots.append(_Bot(counter, i, task))

    def live(self) -> list[_Bot]:
        return [b for b in self.bots if not b.doomed]

    async def stop_bots(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*(b.task for b in self.bots)), 15)

    # ---------------------------------------------------------------- steps

    async def settle(self, what: str) -> float:
        """Every node up, one exchange subscription per key, trades at every live bot."""
        started = time.monotonic()
        bots = self.live()
        await until(
            lambda: all(b.counter.subscribed.is_set() for b in bots),
            SETTLE_TIMEOUT,
            f"every bot subscribed ({what})",
        )
        seen = {id(b): _per_channel(b.counter) for b in bots}

        def flowing() -> bool:
            for b in bots:
                now = _per_channel(b.counter)
                if any(now[ch] < seen[id(b)].get(ch, 0) + 3 for ch in now):
                    return False
            return True

        await until(flowing, SETTLE_TIMEOUT, f"trades again at every live bot ({what})")
        subs: dict[str, int] = {}

        def one_each() -> bool:
            subs.clear()
            subs.update(self.live_subscriptions())
            return len(subs) == len(SUBS) and all(v == 1 for v in subs.values())

        try:
            await until(one_each, SETTLE_TIMEOUT, f"one exchange subscription per key ({what})")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {subs}") from None
        return time.monotonic() - started

    async def kill(self) -> str:
        """kill -9 of an owner (usually) or any node; restart it; bots join it again."""
        owners = await asyncio.to_thread(self.owners)
        pick = self.rng.random()
        i = self.rng.choice(owners) if owners and pick < 0.7 else self.rng.randrange(self.n_nodes)
        d = self.daemons[i]
        for b in self.bots:
            if b.node == i:
                b.doomed = True
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        killed = time.monotonic()
        # Half of the time the node comes back at once (its lease may not have lapsed yet).
        how = "restarted at once"
        if self.rng.random() < 0.5:
            await self.settle(f"after kill -9 of n{i}, before its restart")
            how = f"settled {time.monotonic() - killed:.1f} s after, then restarted"
        await asyncio.to_thread(self.restart, i)
        self.add_bots(i, self.bots_per_node)
        return f"n{i}{' (owner)' if i in owners else ''} {how}"

    async def restart_nats(self) -> str:
        down = self.rng.uniform(0.2, LEASE_TTL + 1.0)
        await asyncio.to_thread(self.nats.stop)
        await asyncio.sleep(down)  # the outage itself: how long NATS stays down
        await asyncio.to_thread(self.nats.start)
        return f"down {down:.1f} s"

    async def upstream_fault(self) -> str:
        """One simulator fault; ``breaking_faults`` keeps to those that end subscriptions."""
        assert self.faults is not None
        while True:
            name, fault, undo, hold = self.faults.pick()
            if not self.breaking_faults or name in BREAKING:
                break
        await asyncio.to_thread(self.sim.call, fault)
        await asyncio.sleep(hold)  # the fault's duration is part of the fault
        if undo is not None:
            await asyncio.to_thread(self.sim.call, undo)
        await asyncio.to_thread(self.sim.call, lambda s: s.bitfinex.faults.clear())
        return name

    async def run(self, kinds: list[str]) -> None:
        self.faults = FaultSchedule(random.Random(self.rng.random()))
        for kind in kinds:
            act = {"kill": self.kill, "nats": self.restart_nats, "fault": self.upstream_fault}
            before = {id(b): len(b.counter.violations) for b in self.bots}
            detail = await act[kind]()
            step = Step(kind, detail)
            self.steps.append(step)
            step.settled_after = await self.settle(f"{kind} {detail}")
            for b in self.bots:
                step.violations += b.counter.violations[before.get(id(b), 0) :]


def _wait_ready(d: DaemonProc, name: str) -> None:
    from tests.e2e.harness import wait_until

    def ready() -> bool:
        return "ready:" in d.logs() or d.proc.poll() is not None

    wait_until(ready, 60, f"node {name} to be ready")
    assert d.proc.poll() is None, d.logs()[-3000:]


def _share(d: DaemonProc) -> dict[str, Any]:
    if d.proc.poll() is not None:
        return {}
    r = d.cli("status", "--json", "--socket", d.socket)
    if r.returncode != 0:
        return {}
    (route,) = json.loads(r.stdout)["routes"]
    return dict(route.get("cluster_share") or {})


def _per_channel(counter: BfxCounter) -> dict[int, int]:
    return {cid: t.trades for cid, t in counter.channels.items() if t.channel == "trades"}
