"""Cluster connect budgets against a real NATS server: three daemons (subprocesses) that
each want more upstream connections than the cluster budget allows in its window never
make the exchange (the simulator) see more than the budget; and one node's budget, in
process, falls back to its local share while NATS is down and writes what it granted
into the ledger when NATS is back, and sees the other nodes' slots through its watch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.cluster.rig import NatsServer, Nodes
from tests.e2e.alert_rig import LoopThread
from tests.e2e.harness import DaemonProc, until, wait_until
from wsgate.cluster.budgets import ClusterBudgets
from wsgate.cluster.metrics import budget_metrics
from wsgate.cluster.nats_engine import NatsEngine
from wsgate.config.schema import ClusterConfig
from wsgate.core.budget_ledger import Ledger

LIMIT = 5
WINDOW = 120.0  # longer than the test: every attempt falls in one window


def body(nats_url: str, sim_url: str) -> str:
    return f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "bud"
heartbeat_interval = 0.5
node_down_after = 2.0
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
min_connections = 3
share = "cluster"
connect_budget = {{ count = {LIMIT}, per = {WINDOW} }}
[[routes.bfx.endpoints]]
url = "{sim_url}"
"""


def connect_budget(d: DaemonProc) -> dict[str, Any]:
    r = d.cli("status", "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    (doc,) = json.loads(r.stdout)["budgets"].values()
    return dict(doc["cluster"])


def test_three_nodes_never_open_more_connections_than_the_cluster_budget() -> None:
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = lt.start_sim()
        srv = sim.bitfinex

        def seen() -> int:
            return int(lt.call(lambda: srv.handshakes_accepted + srv.handshakes_rejected))

        daemons = [nodes.start(n, body(nats.url, sim.bitfinex_url)) for n in ("a", "b", "c")]
        wait_until(lambda: seen() >= LIMIT, 30, "the budget to be used")
        # Every node wants 3 connections (9 in all): the other 4 wait for the window.
        wait_until(
            lambda: sum(connect_budget(d)["waits"] for d in daemons) > 0,
            20,
            "nodes waiting for connect slots",
        )
        docs = [connect_budget(d) for d in daemons]
        assert seen() == LIMIT, f"the exchange saw {seen()} connects, budget {LIMIT}"
        assert sum(doc["granted"] for doc in docs) == LIMIT
        for doc in docs:
            assert doc["limit"] == LIMIT and doc["window"] == WINDOW
            assert doc["mode"] == "cluster"
            assert doc["used"] == LIMIT, doc
            assert doc["share"] == LIMIT // 3
        assert sum(doc["used_here"] for doc in docs) == LIMIT
        # status --cluster shows each node's part of the budget.
        r = daemons[0].cli("status", "--cluster", "--socket", daemons[0].socket)
        assert r.returncode == 0, r.stderr
        assert "cluster budgets" in r.stdout and f"5/{LIMIT}" in r.stdout, r.stdout
        r = daemons[1].cli("status", "--socket", daemons[1].socket)
        assert r.returncode == 0, r.stderr
        assert f"(cluster): 5/{LIMIT} per 120s in the cluster" in r.stdout, r.stdout
        # NATS goes away and the exchange drops every connection: each node may use its
        # share alone (5 // 3 = 1), counted against the 5 slots it saw in the window, so
        # nobody reconnects before the window frees them.
        nats.stop()
        dropped = lt.call(lambda: srv.faults.drop())
        assert dropped == LIMIT
        wait_until(
            lambda: sum(connect_budget(d)["mode"] == "local share" for d in daemons) >= 2,
            30,
            "the nodes whose connections dropped to use their local share",
        )
        assert seen() == LIMIT, f"the exchange saw {seen()} connects without NATS"
        alone = next(d for d in daemons if connect_budget(d)["mode"] == "local share")
        r = alone.cli("status", "--socket", alone.socket)
        assert "(local share)" in r.stdout, r.stdout
        print(
            "granted per node:",
            [d["granted"] for d in docs],
            "conflicts:",
            [d["conflicts"] for d in docs],
        )
        lt.stop(sim)


def test_without_nats_a_node_grants_from_its_share_and_writes_it_back_later() -> None:
    with NatsServer() as nats:

        async def scenario() -> None:
            cfg = ClusterConfig(engine="nats", servers=(nats.url,), name="loc")
            engine = NatsEngine(cfg, "budget test")
            assert await engine.connect(5.0)
            budgets = ClusterBudgets(cfg, "a", engine, live_nodes=lambda: 3)
            other = NatsEngine(cfg, "peer")
            assert await other.connect(5.0)
            peer = ClusterBudgets(cfg, "b", other, live_nodes=lambda: 3)
            watching = asyncio.create_task(budgets.run())
            assert await peer.take_connect("x:1", 9, 60.0) == 0.0
            assert await budgets.take_connect("x:1", 9, 60.0) == 0.0
            (doc,) = budgets.snapshot()
            assert doc["used"] == 2 and doc["mode"] == "cluster"

            nats.stop()
            await until(lambda: not engine.connected, 10, "the link to go")
            # Share 9 // 3 = 3, against the 2 it knows are used: one more, then wait.
            assert await budgets.take_connect("x:1", 9, 60.0) == 0.0
            assert await budgets.take_connect("x:1", 9, 60.0) > 0
            (doc,) = budgets.snapshot()
            assert doc["mode"] == "local share" and doc["granted_local"] == 1
            assert doc["share"] == 3 and doc["used"] == 3
            fams = {m.name: m for m in budget_metrics(budgets)}
            value = {n: m.samples[0].value for n, m in fams.items()}
            assert value["wsgate_cluster_budget_local_mode"] == 1.0
            assert value["wsgate_cluster_budget_local_grants"] == 1.0
            assert value["wsgate_cluster_budget_grants"] == 2.0
            assert value["wsgate_cluster_budget_waits"] == 1.0
            assert value["wsgate_cluster_budget_limit"] == 9.0
            assert value["wsgate_cluster_budget_used"] == 3.0

            nats.start()
            await until(lambda: engine.connect(2.0), 15, "the link to return")
            assert await budgets.take_connect("x:1", 9, 60.0) == 0.0
            (doc,) = budgets.snapshot()
            assert doc["mode"] == "cluster"
            kv = await engine.bucket("loc-budgets", ttl=None)
            entry = await kv.get("connect.x_1")
            assert entry is not None
            ledger = Ledger.from_bytes(entry.value)
            # b's grant, a's first, the one a made offline, and this one.
            assert [g.node for g in ledger.grants] == ["b", "a", "a", "a"]
            # a watches the ledger again: b's next slot shows in a's status by itself.
            assert await other.connect(5.0)
            assert await peer.take_connect("x:1", 9, 60.0) == 0.0
            await until(lambda: budgets.snapshot()[0]["used"] == 5, 10, "a to see b's slot")
            watching.cancel()
            await engine.close()
            await other.close()

        asyncio.run(scenario())
