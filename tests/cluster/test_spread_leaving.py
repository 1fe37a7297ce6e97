"""Spread and ``owned`` around a node that stops gracefully or is killed, on the in-memory
engine: a stopping follower must not count as a node owning nothing (a spread would move a
key for nothing, one more subscribe and unsubscribe at the exchange), nor must a follower
the membership says is down, and a key changing hands is counted by one node only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from wsgate.cli.cluster import _shared
from wsgate.cluster import handover
from wsgate.cluster.data_plane import RouteShare
from wsgate.cluster.share_state import Followed, Owned
from wsgate.config.schema import ClusterConfig
from wsgate.core.cluster import Membership, NodeState

CFG = ClusterConfig(engine="nats", name="m", lease_ttl=3.0)
BOOK, TRADES = "bitfinex:book:tBTCUSD", "bitfinex:trades:tBTCUSD"


async def share(
    server: MemoryServer,
    node_id: str,
    peer_states: Callable[[], Mapping[str, NodeState]] | None = None,
    peer_summaries: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
) -> RouteShare:
    engine = MemoryEngine(server)
    assert await engine.connect(1.0)
    # The hub's part the spread and the state subject read: the route shares with the cluster.
    hub = SimpleNamespace(route=SimpleNamespace(cfg=SimpleNamespace(share="cluster")), registry={})
    return RouteShare(
        CFG, node_id, "bfx", engine, hub, peer_states=peer_states, peer_summaries=peer_summaries
    )


def test_a_follower_that_stops_gracefully_is_no_spread_target_and_lowers_no_mean() -> None:
    async def scenario() -> None:
        server = MemoryServer()
        a, b = await share(server, "a"), await share(server, "b")
        now = time.monotonic()
        # b owns both keys (it took them from a stopped owner); c follows both, a the book.
        b.owned[BOOK] = Owned(1, now, followers={"a": now, "c": now})
        b.owned[TRADES] = Owned(2, now, followers={"c": now})
        for key, own in b.owned.items():
            await b.serve_state(key, own)
            b._owners[b._token(key)] = ("b", b.epoch, now)
        a.followed[BOOK] = Followed("b", b.epoch, ready=True)
        async with asyncio.TaskGroup() as tg:
            b._tg = tg
            assert await a.hand_over(1.0) == 0  # a owns nothing: it only says it goes
            for _ in range(100):  # the notice arrives in a later turn, as over NATS
                if "a" not in b.owned[BOOK].followers:
                    break
                await asyncio.sleep(0.01)
            assert b.owned[BOOK].followers.keys() == {"c"}
            # Two live nodes, two keys, 2/0: within the mean + 1, nothing moves.
            handover.spread(b, time.monotonic())
            assert b._handing == {} and b.moves_out == 0
            b._tg = None

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_key_changing_hands_is_counted_owned_by_its_publisher_only() -> None:
    async def scenario() -> None:
        server = MemoryServer()
        old, new = await share(server, "a"), await share(server, "b")
        now = time.monotonic()
        old.owned[BOOK] = Owned(1, now)
        old.owned[TRADES] = Owned(2, now, cut=40)  # cut: flushing its last frames
        new.owned[BOOK] = Owned(3, now, publishing=False)  # subscribed, not linked yet
        assert (old.statistics().owned, new.statistics().owned) == (1, 0)
        new.owned[BOOK].publishing = True  # linked; the old owner dropped it at the cut
        del old.owned[BOOK]
        assert (old.statistics().owned, new.statistics().owned) == (0, 1)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_follower_the_membership_says_is_down_is_no_spread_target_and_lowers_no_mean() -> None:
    async def scenario() -> None:
        # b's membership: c and d heartbeat; d is killed (kill -9) and says nothing more.
        members = Membership("b", node_down_after=3.0, stall_after=10.0)
        members.set_link(True, 0.0)
        for node in ("c", "d"):
            members.observe(node, 1, {"state": "up"}, 0.0, 0.0)
        members.observe("c", 2, {"state": "up"}, 4.0, 4.0)
        assert [(c.node_id, c.new) for c in members.tick(4.0)] == [("d", NodeState.DOWN)]

        def states() -> dict[str, NodeState]:
            return {n: s for n, s, _age in members.peers(4.0)}

        server = MemoryServer()
        b = await share(server, "b", states)
        c = MemoryEngine(server)
        assert await c.connect(1.0)
        offers: list[bytes] = []

        async def take(payload: bytes) -> bytes:
            offers.append(payload)
            return b'{"ok": true}'

        await c.serve("m.mdt.bfx.c", take)  # c answers spread offers; d is gone
        now = time.monotonic()
        keys = [f"bitfinex:book:t{s}USD" for s in ("BTC", "ETH", "SOL", "XRP")]
        for key in keys:  # b owns four keys, c and d follow each
            b.owned[key] = Owned(1, now, followers={"c": now, "d": now})
            b._owners[b._token(key)] = ("b", b.epoch, now)
        b._owners["c-token"] = ("c", "epoch-c", now)  # c owns one key, d none
        async with asyncio.TaskGroup() as tg:
            b._tg = tg
            handover.spread(b, now)  # the offer's task ends with the group
        b._tg = None
        # Counted: b 4, c 1 (mean 2.5; with d it would be 1.7, and d the target).
        assert b.last_move is not None and b.last_move["to"] == "c"
        assert "cluster mean 2.5" in b.last_move["why"] and len(offers) == 1
        assert all("d" not in own.followers for own in b.owned.values())

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_an_offer_nobody_answers_drops_that_node_from_every_follower_list() -> None:
    async def scenario() -> None:
        server = MemoryServer()
        b = await share(server, "b")  # no membership word: the offer finds out
        now = time.monotonic()
        for key in (BOOK, TRADES, "bitfinex:book:tETHUSD"):
            b.owned[key] = Owned(1, now, followers={"d": now})
            b._owners[b._token(key)] = ("b", b.epoch, now)
        async with asyncio.TaskGroup() as tg:
            b._tg = tg
            handover.spread(b, now)
            assert b._handing  # offered to d, which is gone: no responders
        b._tg = None
        assert (
            not b._handing
            and b.moves_out == 0
            and all(not own.followers for own in b.owned.values())
        )

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_follower_whose_heartbeat_reports_bad_upstream_health_is_no_spread_target() -> None:
    async def scenario() -> None:
        # Heartbeat summaries as b's membership last saw them: c's connections on the
        # route are failing, d is fine; b itself is the owner.
        summaries: dict[str, dict[str, Any]] = {
            "b": {"state": "up", "route_health": {"bfx": 95.0}},
            "c": {"state": "up", "route_health": {"bfx": 20.0}},
            "d": {"state": "up", "route_health": {"bfx": 90.0}},
        }
        server = MemoryServer()
        b = await share(server, "b", peer_summaries=lambda: summaries)
        offers: dict[str, int] = {"c": 0, "d": 0}
        for node in offers:
            engine = MemoryEngine(server)
            assert await engine.connect(1.0)

            async def take(payload: bytes, node: str = node) -> bytes:
                offers[node] += 1
                return b'{"ok": true}'

            await engine.serve(f"m.mdt.bfx.{node}", take)
        now = time.monotonic()
        for key in (f"bitfinex:book:t{s}USD" for s in ("BTC", "ETH", "SOL", "XRP")):
            b.owned[key] = Owned(1, now, followers={"c": now, "d": now})
            b._owners[b._token(key)] = ("b", b.epoch, now)
        b._owners["d-token"] = ("d", "epoch-d", now)  # d owns one key, c none
        async with asyncio.TaskGroup() as tg:
            b._tg = tg
            handover.spread(b, now)
        b._tg = None
        # Least loaded is c (0 keys), but its upstream health is 20: d gets the key.
        assert offers == {"c": 0, "d": 1} and b.last_move is not None
        assert b.statistics().unfit == {"c": "upstream health 20 on bfx (below 50)"}
        # c recovers; it stays out for the recovery time (30 s), then is a target again.
        summaries["c"]["route_health"] = {"bfx": 97.0}
        b.spread_round = b.spread_checked = None
        assert b.unfit == {"c": "upstream health 20 on bfx (below 50)"}
        handover._fitness(b, {"b": 3, "c": 0, "d": 2}, now + 10)
        assert "c" in b.unfit
        handover._fitness(b, {"b": 3, "c": 0, "d": 2}, now + 31)
        assert b.unfit == {}

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_status_cluster_names_the_nodes_a_spread_leaves_out() -> None:
    doc = {"owned": 3, "followed": 1, "local": 0, "gaps": 0, "moves_out": 2, "moves_in": 0}
    assert _shared([{"cluster_share": doc}]) == "3/1/0 (moved 2 out, 0 in)"
    why = {"c": "upstream health 20 on bfx (below 50)", "d": "connect budget 85% used"}
    routes = [{"cluster_share": {**doc, "unfit": why}}, {"cluster_share": None}]
    assert _shared(routes) == "3/1/0 (moved 2 out, 0 in) (spread skips c, d)"
