"""A key left subscribed here alone while the cluster link is up is decided again on its
next lease event, on the in-memory engine (the real-NATS version of the same story is in
test_rejoin_e2e.py).

How a node gets there: its decision gave up (``_decide`` tries six times, then subscribes
here) because the node holding the lease did not answer for its state yet (it had just
taken it). Both nodes are then subscribed upstream; without a second look the exchange
keeps seeing two subscriptions for good. The owner's next renewal (or its release) is
that second look: the lone node follows the owner (or takes the released lease)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from tests.cluster.share_hub import ShareHub
from wsgate.cluster import renewal
from wsgate.cluster.data_plane import RouteShare
from wsgate.config.schema import ClusterConfig

CFG = ClusterConfig(engine="nats", name="m", lease_ttl=3.0)
KEY = "bitfinex:trades:tBTCUSD"


async def node(server: MemoryServer, node_id: str) -> tuple[RouteShare, ShareHub]:
    engine = MemoryEngine(server)
    assert await engine.connect(1.0)
    hub = ShareHub([KEY])
    return RouteShare(CFG, node_id, "bfx", engine, hub), hub


async def until(cond: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the state belongs to the shares under test
            await asyncio.sleep(0.01)


async def alone_next_to_an_owner(tg: asyncio.TaskGroup) -> tuple[RouteShare, ShareHub, RouteShare]:
    """a subscribed alone (its decision gave up), b holding the lease and serving now."""
    server = MemoryServer()
    (a, hub_a), (b, hub_b) = await node(server, "a"), await node(server, "b")
    a._tg = b._tg = tg
    bucket_a, bucket_b = await a._link(), await b._link()
    assert bucket_a is not None and bucket_b is not None
    # b has just taken the lease and does not serve its state yet: every look a takes
    # finds an owner that does not answer, and a gives up after its six tries.
    rev = await bucket_b.create(b._lease_key(KEY), b._lease_doc())
    await a._start_lease_watch(bucket_a)
    await until(lambda: a._caught_up)
    assert a.gate(a.hub.registry[KEY])
    await until(lambda: KEY in a.local and KEY not in a._deciding)
    assert hub_a.upstream == {KEY} and not a.followed
    # b's state is served from now on; it is subscribed upstream too.
    await b._own(KEY, rev)
    assert hub_b.upstream == {KEY}
    return a, hub_a, b


def test_a_key_alone_here_follows_the_owner_on_its_next_renewal() -> None:
    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            a, hub_a, b = await alone_next_to_an_owner(tg)
            bucket_b = await b._link()
            assert bucket_b is not None
            await renewal.renew(b, bucket_b, KEY, b.owned[KEY], time.monotonic())
            await until(lambda: a.followed.get(KEY) is not None and a.followed[KEY].ready)
            # One upstream subscription in the cluster: b's; a feeds its bots from b.
            assert hub_a.upstream == set() and hub_a.follows == {KEY: "b"}
            assert KEY not in a.local and a.statistics().local == 0
            await a._stop_lease_watch()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_key_alone_here_takes_the_lease_its_owner_releases() -> None:
    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            a, hub_a, b = await alone_next_to_an_owner(tg)
            # b's bots left: it releases the lease (nobody followed it, no hand-over).
            own = b.owned.pop(KEY)
            await b._release(KEY, own)
            await until(lambda: KEY in a.owned)
            bucket_a = await a._link()
            assert bucket_a is not None
            entry = await bucket_a.get(a._lease_key(KEY))
            assert entry is not None and b'"node":"a"' in entry.value
            assert hub_a.upstream == {KEY} and a.statistics().owned == 1
            await a._stop_lease_watch()

    asyncio.run(asyncio.wait_for(scenario(), 30))
