"""ClusterNode on the in-memory engine: identity, membership, claims, link loss, status,
shared silences. The same node code runs on NATS in test_cluster_e2e.py."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from wsgate.cluster.node import ClusterNode
from wsgate.config.schema import ClusterConfig
from wsgate.core.alerts import AlertState, AlertView
from wsgate.core.types import Severity
from wsgate.errors import NodeIdTaken

CFG = ClusterConfig(engine="nats", name="m", heartbeat_interval=0.05, node_down_after=0.3)


def aio(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh loop, bounded in time."""

    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30))

    return run


def make(
    server: MemoryServer, node_id: str, events: list[dict[str, Any]] | None = None
) -> ClusterNode:
    return ClusterNode(
        CFG,
        node_id,
        MemoryEngine(server),
        summary=lambda: {"sessions": 1, "version": "t", "started_at": 1.0, "gateway": "g:1"},
        status=lambda: {"node_id": node_id},
        rng=random.Random(1),
        on_change=None if events is None else events.append,
    )


async def until(cond: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the state belongs to the nodes under test
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running(*nodes: ClusterNode) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        for n in nodes:
            await n.join()
            n.start(tg)
        try:
            yield
        finally:
            for n in nodes:
                await n.close()


def view(state: AlertState, peer: str = "c") -> AlertView:
    labels = {"alertname": "cluster_node_down", "node": peer, "peer": peer}
    return AlertView("fp1", "cluster_node_down", state, Severity.CRITICAL, labels, "", 1.0, 0, 0, 0)


def seen(n: ClusterNode, peer: str) -> str | None:
    state = n.membership.state(peer)
    return state.value if state is not None else None


@aio
async def test_join_see_each_other_and_leave() -> None:
    server = MemoryServer()
    events: list[dict[str, Any]] = []
    a, b = make(server, "a", events), make(server, "b")
    async with running(a, b):
        await until(lambda: seen(a, "b") == "up" and seen(b, "a") == "up")
        rows = {r["node_id"]: r for r in a.nodes()}
        assert rows["a"]["self"] and rows["b"]["sessions"] == 1
        status = {r["node_id"]: r for r in await a.status_all(0.5)}
        assert status["b"]["answered"] and status["b"]["status"] == {"node_id": "b"}
        await b.close()
        await until(lambda: seen(a, "b") == "left")
        assert a.alert_fields(0.0)["peers"][0][1] == "left"
        moves = [(e["node_id"], e["from"], e["to"]) for e in events]
        assert moves == [("b", "new", "up"), ("b", "up", "left")]


@aio
async def test_one_winner_per_transition_across_nodes() -> None:
    server = MemoryServer()
    a, b = make(server, "a"), make(server, "b")
    async with running(a, b):
        await until(lambda: a.link_up and b.link_up)

        def key(node: Any, state: AlertState) -> Any:
            return node.claim_key(view(state))

        won = await asyncio.gather(
            a.claim(key(a, AlertState.FIRING)), b.claim(key(b, AlertState.FIRING))
        )
        assert sorted(won) == [False, True]
        winner, loser = (a, b) if won[0] else (b, a)
        assert await winner.claim(key(winner, AlertState.FIRING))  # its second channel
        assert await loser.claim(key(loser, AlertState.FIRING)) is False
        won = await asyncio.gather(
            a.claim(key(a, AlertState.RESOLVED)), b.claim(key(b, AlertState.RESOLVED))
        )
        assert sorted(won) == [False, True]
        assert a.claims_won + b.claims_won == 2 and a.claims_lost + b.claims_lost == 2


@aio
async def test_node_id_clash_names_the_holder() -> None:
    server = MemoryServer()
    a = make(server, "a")
    async with running(a):
        twin = make(server, "a")
        with pytest.raises(NodeIdTaken, match=r"held by a live node: pid \d+ .* gateway g:1"):
            await twin.join()


@aio
async def test_a_dead_holder_is_taken_over() -> None:
    server = MemoryServer()
    a = make(server, "a")
    await a.join()  # claims the id, then dies without a word (no close, no heartbeats)
    await a.engine.close()
    heir = make(server, "a")
    await heir.join()
    assert heir.identity == "held"


@aio
async def test_no_judgement_without_the_link_and_grace_after() -> None:
    server = MemoryServer()
    a, b = make(server, "a"), make(server, "b")
    async with running(a, b):
        await until(lambda: seen(a, "b") == "up")
        server.down()
        await until(lambda: not a.link_up and not b.link_up)
        await asyncio.sleep(CFG.node_down_after * 3)
        assert seen(a, "b") == "up"  # blind, not judging
        assert a.alert_fields(0.0)["cluster_link_up"] is False
        # and paging nothing about peers: the claim cannot be settled (None), not lost
        assert await a.claim(a.claim_key(view(AlertState.FIRING))) is None
        server.up()
        await until(lambda: a.link_up and b.link_up, 10)
        await asyncio.sleep(CFG.node_down_after * 2)
        assert seen(a, "b") == "up" and seen(b, "a") == "up"


class _Alerting:
    """The part of Alerting the shared state calls (a hand-written fake)."""

    def __init__(self) -> None:
        self.silenced: dict[str, dict[str, Any]] = {}
        self.acked: dict[str, dict[str, Any]] = {}
        self.engine = self

    def silences(self) -> list[Any]:
        return []

    def acks(self) -> list[Any]:
        return []

    def apply_shared_silence(self, doc: dict[str, Any]) -> bool:
        self.silenced[doc["id"]] = doc
        return True

    def apply_shared_unsilence(self, silence_id: str) -> bool:
        return self.silenced.pop(silence_id, None) is not None

    def apply_shared_ack(self, doc: dict[str, Any]) -> bool:
        self.acked[doc["fingerprint"]] = doc
        return True


@aio
async def test_silences_and_acks_travel_and_wait_for_the_link() -> None:
    server = MemoryServer()
    a, b = make(server, "a"), make(server, "b")
    fa, fb = _Alerting(), _Alerting()
    a.attach(fa)
    b.attach(fb)
    async with running(a, b):
        await until(lambda: a.link_up and b.link_up)
        assert a.shared is not None
        a.shared.silence_made({"id": "s1", "matchers": [], "ends_at": 9e9})
        a.shared.ack_made({"fingerprint": "fp1", "by": "ops", "at": 1.0})
        await until(lambda: "s1" in fb.silenced and "fp1" in fb.acked)
        server.down()
        await until(lambda: not a.link_up)
        a.shared.silence_removed("s1")  # made while cut off: never waits, pushed later
        assert a.shared.statistics().pending == 1
        server.up()
        await until(lambda: "s1" not in fb.silenced, 10)


@aio
async def test_metrics_read_live_state() -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    from wsgate.cluster import LocalCluster
    from wsgate.cluster.metrics import cluster_metrics

    def scrape(cluster: Any) -> str:
        class C(Collector):
            def collect(self) -> Any:
                return cluster_metrics(SimpleNamespace(cluster=cluster))

        reg = CollectorRegistry()
        reg.register(C())
        return generate_latest(reg).decode()

    lone = scrape(LocalCluster("n", summary=dict, status=dict))
    assert 'wsgate_cluster_nodes{state="up"} 1.0' in lone
    assert "wsgate_cluster_engine_connected 1.0" in lone
    server = MemoryServer()
    a, b = make(server, "a"), make(server, "b")
    async with running(a, b):
        await until(lambda: seen(a, "b") == "up")
        text = scrape(a)
        assert 'wsgate_cluster_nodes{state="up"} 2.0' in text
        assert 'wsgate_cluster_heartbeat_age_seconds{peer="b"}' in text
        server.down()
        await until(lambda: not a.link_up)
        assert "wsgate_cluster_engine_connected 0.0" in scrape(a)


@aio
async def test_a_stalled_server_is_not_a_dead_cluster() -> None:
    """The link stays up but nothing moves (a frozen or partitioned server): our own
    heartbeat goes unacknowledged, so we stop judging peers before they could look down."""
    server = MemoryServer()
    a, b = make(server, "a"), make(server, "b")
    async with running(a, b):
        await until(lambda: seen(a, "b") == "up" and seen(b, "a") == "up")
        server.stall()
        await until(lambda: not a.alert_fields(0.0)["cluster_link_up"])
        await asyncio.sleep(CFG.node_down_after * 3)
        assert seen(a, "b") == "up" and seen(b, "a") == "up"
        server.resume()
        await until(lambda: a.alert_fields(0.0)["cluster_link_up"], 5)
        await asyncio.sleep(CFG.node_down_after * 2)
        assert seen(a, "b") == "up" and seen(b, "a") == "up"
