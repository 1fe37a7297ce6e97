"""ClusterBudgets on the in-memory engine (a hand-written fake of the seam, with a yield
before every KV call so that nodes' reads and writes interleave): many connects on
several nodes at once never take more than the budget, a node's waiting connects share
one slice, a record that is not a ledger is started again, and the host budgets route
only share = "cluster" hosts to the cluster."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from wsgate.cluster import budgets as budgets_mod
from wsgate.cluster.budgets import ClusterBudgets
from wsgate.config.schema import ClusterConfig
from wsgate.core.budget_ledger import Ledger
from wsgate.runtime.upstream.budgets import HostBudgets

CFG = ClusterConfig(engine="nats", name="t")


class Yielding:
    """A bucket that lets other tasks run before every call, as a network round trip does."""

    def __init__(self, inner: Any, rng: random.Random) -> None:
        self._inner = inner
        self._rng = rng
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)

        async def call(*args: Any, **kwargs: Any) -> Any:
            for _ in range(self._rng.randrange(3)):
                await asyncio.sleep(0)
            return await target(*args, **kwargs)

        return call


class YieldingEngine(MemoryEngine):
    def __init__(self, server: MemoryServer, rng: random.Random) -> None:
        super().__init__(server)
        self._rng = rng

    async def bucket(self, name: str, *, ttl: float | None, history: int = 1) -> Any:
        return Yielding(await super().bucket(name, ttl=ttl, history=history), self._rng)


async def nodes(n: int, seed: int = 1) -> tuple[MemoryServer, list[ClusterBudgets]]:
    server = MemoryServer()
    out = []
    for i in range(n):
        engine = YieldingEngine(server, random.Random(seed * 100 + i))
        assert await engine.connect(1.0)
        out.append(ClusterBudgets(CFG, f"n{i}", engine, live_nodes=lambda: n, rng=random.Random(i)))
    return server, out


def test_concurrent_connects_on_three_nodes_never_exceed_the_budget() -> None:
    async def scenario() -> None:
        server, budgets = await nodes(3)
        results = await asyncio.gather(
            *(b.take_connect("h:1", 60, 60.0) for b in budgets for _ in range(30))
        )
        granted = sum(1 for w in results if w == 0.0)
        assert granted == 60, results
        docs = [b.snapshot()[0] for b in budgets]
        assert sum(d["granted"] for d in docs) == 60
        (st,) = budgets[0].statistics()
        assert (st.budget, st.limit, st.window) == ("connect.h_1", 60, 60.0)
        assert st.used <= 60 and st.granted == docs[0]["granted"]  # as it last saw the ledger
        # A node's waiting connects share slices (of at most 60 / 3 / 4 = 5 tokens).
        assert sum(d["slices"] for d in docs) <= 60 / 2
        entry = server.buckets["t-budgets"].last["connect.h_1"]
        ledger = Ledger.from_bytes(entry.value)
        assert ledger.used(0.0, 60.0) == 60 and max(g.count for g in ledger.grants) <= 5
        assert sum(d["conflicts"] for d in docs) > 0  # the writes really raced
        # Everybody else waits for the window: about its length plus hold and margin.
        assert all(w > 50.0 for w in results if w > 0.0)

    asyncio.run(scenario())


def test_a_record_that_is_not_a_ledger_is_started_again() -> None:
    async def scenario() -> None:
        server, (b,) = await nodes(1)
        kv = await b.engine.bucket("t-budgets", ttl=None)
        await kv.put("connect.h_1", b"garbage")
        assert await b.take_connect("h:1", 2, 60.0) == 0.0
        entry = server.buckets["t-budgets"].last["connect.h_1"]
        assert len(Ledger.from_bytes(entry.value).grants) == 1

    asyncio.run(scenario())


class FakeShared:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int, float]] = []
        self.answers = [3.0, 0.0]

    async def take_connect(self, host: str, count: int, per: float) -> float:
        self.asked.append((host, count, per))
        return self.answers.pop(0)

    def connect_snapshot(self, host: str) -> dict[str, Any] | None:
        return {"limit": 4, "used": 3, "granted": 2, "waits": 1}


def test_host_budgets_ask_the_cluster_only_for_hosts_of_cluster_routes() -> None:
    async def scenario() -> None:
        hb = HostBudgets(clock=lambda: 0.0)
        hb.shared = shared = FakeShared()
        hb.configure("a:1", 4, 10.0, route="r1", cluster=True)
        hb.configure("b:1", 4, 10.0, route="r2")
        assert await hb.acquire("b:1") == (0.0, True)  # this node's bucket
        assert await hb.acquire("a:1") == (3.0, False)  # wait, then ask again
        assert await hb.acquire("a:1") == (0.0, True)
        assert shared.asked == [("a:1", 4, 10.0)] * 2
        snap = hb.snapshot()
        assert snap["a:1"]["cluster"] == {"limit": 4, "used": 3, "granted": 2, "waits": 1}
        assert snap["a:1"]["used_fraction"] == 0.75 and snap["a:1"]["available"] == 1
        assert (snap["a:1"]["granted"], snap["a:1"]["delayed"]) == (2, 1)
        assert "cluster" not in snap["b:1"]
        hb.forget_route("r1")  # a reload made r1 share = "node"
        hb.configure("a:1", 4, 10.0, route="r1")
        assert await hb.acquire("a:1") == (0.0, True) and len(shared.asked) == 2

    asyncio.run(scenario())


def test_a_stalled_server_costs_one_timeout_then_the_local_share_answers_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budgets_mod, "TAKE_TIMEOUT", 0.2)

    async def scenario() -> None:
        server, (b,) = await nodes(1)
        assert await b.take_connect("h:1", 9, 60.0) == 0.0
        server.stall()  # the link looks up; nothing it is asked answers
        waits = await asyncio.gather(*(b.take_connect("h:1", 9, 60.0) for _ in range(4)))
        assert waits == [0.0] * 4  # a share of 9 // 1 against 1 used
        (doc,) = b.snapshot()
        # One take waited for the timeout; the others did not try the stalled link again.
        assert doc["mode"] == "local share" and doc["errors"] == 1
        server.resume()

    asyncio.run(scenario())


def test_route_use_is_the_used_fraction_of_each_cluster_routes_host_budget() -> None:
    async def scenario() -> None:
        _server, (cb,) = await nodes(1)
        hb = HostBudgets()
        assert hb.route_use() == {}  # no cluster: nothing to report
        hb.shared = cb
        hb.configure("a:1", 4, 60.0, route="r1", cluster=True)
        hb.configure("a:1", 4, 60.0, route="r3", cluster=True)
        hb.configure("b:1", 4, 60.0, route="r2")  # share = "node": not the cluster's
        assert hb.route_use() == {}  # nothing taken yet: no ledger seen
        for _ in range(3):
            assert await hb.acquire("a:1") == (0.0, True)
        assert hb.route_use() == {"r1": 0.75, "r3": 0.75}  # what the heartbeat carries

    asyncio.run(asyncio.wait_for(scenario(), 10))
