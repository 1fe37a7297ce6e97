"""What idle keys cost a node, on the in-memory engine: a node watches a route's leases
only while it has keys of that route (and ``lease_ttl`` after its last one), so a node
without bots on a route receives none of the renewals of its keys; spread offers reach
it all the same."""

from __future__ import annotations

import asyncio
import time

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from tests.cluster.share_hub import ShareHub
from tests.cluster.test_alone_redecide import until
from wsgate.cluster.data_plane import RouteShare
from wsgate.config.schema import ClusterConfig

CFG = ClusterConfig(engine="nats", name="m", lease_ttl=0.6)  # renewals every 0.2 s
KEYS = [f"bitfinex:trades:t{c * 3}USD" for c in "ABC"]


async def node(server: MemoryServer, node_id: str, keys: list[str]) -> RouteShare:
    engine = MemoryEngine(server)
    assert await engine.connect(1.0)
    return RouteShare(CFG, node_id, "bfx", engine, ShareHub(keys))


def test_a_node_watches_a_routes_leases_only_while_it_has_keys_of_it() -> None:
    async def scenario() -> None:
        server = MemoryServer()
        a, b = await node(server, "a", KEYS), await node(server, "b", KEYS)
        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(x.run()) for x in (a, b)]
            await until(lambda: a._tg is not None and b._tg is not None)
            for key in KEYS:
                a.gate(a.hub.registry[key])
            await until(lambda: len(a.owned) == 3 and a._caught_up)
            # b has bots on none of the keys yet: a renews, b hears nothing.
            started = time.monotonic()
            await until(lambda: a.lease_events >= 6)  # two rounds of a's renewals
            assert b._lease_task is None and b.lease_events == 0
            # Offers reach b all the same: an owner that counts b as a follower the moment
            # it asked for a key's state may offer it that key before b's watch starts.
            await until(lambda: "m.mdt.bfx.b" in server.subjects)
            # b's bots come: it follows a, and from then on hears every renewal.
            for key in KEYS:
                b.gate(b.hub.registry[key])
            await until(lambda: len(b.followed) == 3 and b._caught_up)
            seen = b.lease_events
            await until(lambda: b.lease_events >= seen + 6)
            # b's bots leave (the hub drops the keys after its linger): lease_ttl later b
            # stops watching; a's renewals go on without reaching it.
            for key in KEYS:
                b.dropped(b.hub.registry.pop(key))
            await until(lambda: b._lease_task is None)
            seen = b.lease_events
            renewed = a.lease_events
            await until(lambda: a.lease_events >= renewed + 6)
            assert b.lease_events == seen and time.monotonic() - started < 20
            assert "m.mdt.bfx.b" in server.subjects
            for task in runs:
                task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 30))
