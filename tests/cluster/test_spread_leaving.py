"""Spread and ``owned`` around a node that stops gracefully, on the in-memory engine: a
stopping follower must not count as a node owning nothing (a spread would move a key for
nothing, one more subscribe and unsubscribe at the exchange), and a key changing hands is
counted by one node only."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from wsgate.cluster import handover
from wsgate.cluster.data_plane import RouteShare
from wsgate.cluster.share_state import Followed, Owned
from wsgate.config.schema import ClusterConfig

CFG = ClusterConfig(engine="nats", name="m", lease_ttl=3.0)
BOOK, TRADES = "bitfinex:book:tBTCUSD", "bitfinex:trades:tBTCUSD"


async def share(server: MemoryServer, node_id: str) -> RouteShare:
    engine = MemoryEngine(server)
    assert await engine.connect(1.0)
    # The hub's part the spread and the state subject read: the route shares with the cluster.
    hub = SimpleNamespace(route=SimpleNamespace(cfg=SimpleNamespace(share="cluster")), registry={})
    return RouteShare(CFG, node_id, "bfx", engine, hub)


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
            publisher = tg.create_task(a._publisher())
            assert await a.hand_over(1.0) == 0  # a owns nothing: it only says it goes
            publisher.cancel()
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
