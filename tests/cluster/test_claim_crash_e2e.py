"""A cluster page survives a node dying between its claim and its delivery: one page.

Real parts: a nats-server, two ClusterNodes on it ("a" and "b", the survivors of peer
"c"), each with its own SQLite store, outbox and webhook channel to one real HTTP
receiver. Both raise the same ``cluster_node_down`` fact. Node a dies at a chosen point
of its claim: an exception thrown from inside the claim call ends its settling there,
and the node is then dropped without any cleanup (its NATS link closed, no goodbye, the
store closed as is), which leaves exactly what a kill -9 at that point leaves: the held
row in SQLite and, or not, the claim record in NATS. Node a then starts again on the
same state file and node id. Every request the receiver gets is counted, duplicates
included: the fact is paged exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.rig import NatsServer, Nodes, cluster_body
from tests.e2e.alert_rig import LoopThread
from tests.e2e.harness import wait_until
from tests.runtime.receivers import FakeChannel, WebhookReceiver
from wsgate.cluster.base import ClaimKey
from wsgate.cluster.nats_engine import NatsEngine
from wsgate.cluster.node import CLAIMS_TTL, ClusterNode
from wsgate.config.schema import ClusterConfig
from wsgate.core.alerts import AlertState, AlertView, Notification
from wsgate.core.types import Severity
from wsgate.runtime.ops.alerting import notification_payload
from wsgate.runtime.ops.claims import ClaimSettler
from wsgate.runtime.ops.notifiers import WebhookNotifier
from wsgate.runtime.ops.outbox import Outbox
from wsgate.runtime.persistence.store import Store


class Crash(BaseException):
    """The process ends here (like SystemExit: nothing below it runs)."""


def _notice(nid: str) -> Notification:
    labels = {"alertname": "cluster_node_down", "node": "c", "peer": "c", "severity": "critical"}
    view = AlertView(
        "fp-c", "cluster_node_down", AlertState.FIRING, Severity.CRITICAL, labels, "", 1.0, 0, 0, 0
    )
    return Notification(nid, "hook", '{}:{alertname="cluster_node_down"}', "firing", (view,))


class Node:
    """One survivor: its cluster node, store, outbox and claim settler (a daemon's parts)."""

    def __init__(self, node_id: str, cfg: ClusterConfig, db: Path, hook: str) -> None:
        self.cluster = ClusterNode(
            cfg,
            node_id,
            NatsEngine(cfg, node_id),
            summary=lambda: {"version": "t"},
            status=lambda: {},
            rng=random.Random(1),
        )
        self.store = Store(db)
        notifier = WebhookNotifier(FakeChannel(name="hook", url=hook))
        self.outbox = Outbox(self.store, {"hook": notifier}, rng=random.Random(2))
        self.tasks: list[asyncio.Task[None]] = []
        self.settler = ClaimSettler(
            self.store, self.outbox, notification_payload, _now, self._spawn
        )
        self._stop = asyncio.Event()
        self._group: asyncio.Task[None] | None = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(coro))

    async def start(self) -> Node:
        await self.cluster.join()
        assert self.cluster.identity == "held", self.cluster.identity
        self._group = asyncio.create_task(self._run())
        await _until(lambda: self.cluster.link_up)
        return self

    async def _run(self) -> None:
        """The node's own tasks (cluster loops, outbox), as the daemon's TaskGroup runs them."""
        async with asyncio.TaskGroup() as tg:
            self.cluster.start(tg)
            tg.create_task(self.outbox.run(self._stop))

    async def settled(self) -> None:
        """Every settling task this node started has ended (crashed ones re-raise)."""
        await asyncio.gather(*self.tasks)

    async def kill(self) -> None:
        """Gone as by kill -9: tasks dropped, link cut without a goodbye, store as it is."""
        assert self._group is not None
        for t in [*self.tasks, self._group]:
            t.cancel()
        await asyncio.gather(*self.tasks, self._group, return_exceptions=True)
        await self.cluster.engine.close()
        await self.outbox.aclose()
        self.store.close()

    async def stop(self) -> None:
        self._stop.set()
        await self.cluster.close()
        assert self._group is not None
        await asyncio.gather(self._group, return_exceptions=True)
        await self.outbox.aclose()
        self.store.close()


class CrashingClaims:
    """Node a's cluster as its settler sees it, dying just before or just after the
    compare-and-set of the claim (``when``)."""

    def __init__(self, node: ClusterNode, when: str) -> None:
        self.node = node
        self.when = when
        self.outcome: bool | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)

    async def claim(self, key: ClaimKey) -> bool | None:
        if self.when == "before":
            raise Crash
        self.outcome = await self.node.claim(key)
        raise Crash


def _now() -> float:
    return time.time()


async def _until(cond: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the state belongs to the nodes under test
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("when", "b_asks"),
    [
        ("after", True),  # a won the claim and died before settling: b lost it
        ("before", True),  # a died before asking: b wins, a's restart must not page again
        ("before", False),  # a died before asking and nobody else asked: a's restart pages
    ],
)
def test_a_node_dying_around_its_claim_pages_exactly_once(
    tmp_path: Path, when: str, b_asks: bool
) -> None:
    with NatsServer() as nats:

        async def scenario() -> None:
            cfg = ClusterConfig(
                engine="nats",
                servers=(nats.url,),
                name="crash",
                heartbeat_interval=0.2,
                node_down_after=1.0,
            )
            async with WebhookReceiver(secret=None) as rx:
                a = await Node("a", cfg, tmp_path / "a.db", rx.url).start()
                b = await Node("b", cfg, tmp_path / "b.db", rx.url).start()
                crashing = CrashingClaims(a.cluster, when)
                assert a.settler.hold(crashing, _notice("a-1")) is True  # type: ignore[arg-type]
                with pytest.raises(Crash):
                    await a.settled()
                assert [r.id for r in a.store.outbox_claims()] == ["a-1"]  # held, on disk
                if when == "after":
                    assert crashing.outcome is True  # the record in NATS names a
                await a.kill()
                if b_asks:
                    assert b.settler.hold(b.cluster, _notice("b-1")) is True
                    await b.settled()
                    assert b.settler.won + b.settler.lost == 1

                # a runs again on the same state file and node id, and asks again.
                a2 = await Node("a", cfg, tmp_path / "a.db", rx.url).start()
                a2.settler.retry(a2.cluster)
                await a2.settled()
                assert a2.store.outbox_claims() == []  # settled: sent or dropped
                await _until(lambda: not a2.store.outbox_rows() and not b.store.outbox_rows())
                await rx.wait_for_requests(1)
                assert len(rx.requests) == 1 and rx.duplicates == 0
                sender = "a" if when == "after" or not b_asks else "b"
                (page,) = rx.unique.values()
                assert page["id"] == f"{sender}-1"
                assert page["alerts"][0]["labels"]["peer"] == "c"
                loser = b if sender == "a" else a2
                if b_asks:
                    kinds = [e.kind for e in loser.store.events()]
                    assert "notification_sent_elsewhere" in kinds
                await a2.stop()
                await b.stop()
                assert len(rx.requests) == 1  # nothing more went out while stopping

        asyncio.run(asyncio.wait_for(scenario(), 90))


def test_a_daemon_settles_the_claims_its_previous_run_left_held(tmp_path: Path) -> None:
    """The daemon's own loop: a node whose state file holds two notifications a previous
    run queued and never settled (a kill -9 between queueing and claiming) asks for both
    once NATS is there; the fact nobody claimed is paged, the one another node claimed is
    not, and neither is sent twice."""
    with (
        NatsServer() as nats,
        Nodes() as nodes,
        LoopThread() as lt,
    ):
        rx = lt.run(WebhookReceiver().start())
        try:
            directory = Path(tempfile.mkdtemp(prefix="wsc-", dir="/tmp"))
            store = Store(directory / "state" / "wsgate.db")
            for nid, fingerprint, episode in (("a-1", "fp-c", "c.7"), ("a-2", "fp-d", "d.3")):
                n = _notice(nid)
                view = dataclasses.replace(n.alerts[0], fingerprint=fingerprint)
                n = dataclasses.replace(n, alerts=(view,))
                key = ClaimKey(fingerprint, "cluster_node_down", "firing", episode)
                assert store.outbox_put(
                    nid, "hook", notification_payload(n), time.time(), claim=[key.as_dict()]
                )
            store.close()

            async def claimed_by_z() -> None:  # node z already sent fp-d's firing notice
                cfg = ClusterConfig(engine="nats", servers=(nats.url,), name="t")
                engine = NatsEngine(cfg, "z")
                assert await engine.connect(5.0)
                claims = await engine.bucket("t-claims", ttl=CLAIMS_TTL)
                await claims.create("fp-d", b'{"state":"firing","episode":"d.3","node":"z"}')
                await engine.close()

            asyncio.run(claimed_by_z())
            a = nodes.start_in(directory, "a", cluster_body("a", nats.url, hook_url=rx.url))

            def settled() -> bool:
                r = a.cli("cluster", "nodes", "--json", "--socket", a.socket)
                claims = json.loads(r.stdout)["claims"] if r.returncode == 0 else {}
                return claims.get("won", 0) + claims.get("lost", 0) >= 2

            wait_until(settled, 30, "both held claims to be settled")
            wait_until(lambda: len(rx.requests) >= 1, 15, "the unclaimed fact's page")
            r = a.cli("alerts", "history", "--json", "--socket", a.socket)
            assert "notification_sent_elsewhere" in r.stdout, r.stdout
            nodes.stop(a)  # a graceful stop flushes the outbox: nothing more may go out
            assert len(rx.requests) == 1 and rx.duplicates == 0
            (page,) = rx.unique.values()
            assert page["id"] == "a-1" and page["alerts"][0]["fingerprint"] == "fp-c"
        finally:
            lt.run(rx.stop())
