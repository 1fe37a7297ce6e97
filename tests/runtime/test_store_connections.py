"""ConnectionStore: the interface, thread safety, and the daemon's transition wiring."""

from __future__ import annotations

import threading

import pytest

from tests.runtime.drill import rig, route_toml, run, wait_for
from tests.runtime.fake_exchange import FakeBitfinex
from wsgate.core.states import ConnState
from wsgate.core.types import ConnectionType
from wsgate.errors import CapacityError
from wsgate.runtime.persistence.store_connections import (
    ConnectionRecord,
    ConnectionStore,
    InMemoryConnectionStore,
)


def _rec(
    i: int, route: str = "a", ctype: ConnectionType = ConnectionType.MARKET_DATA
) -> ConnectionRecord:
    return ConnectionRecord(f"{route}-c{i}", route, "ep", "ws://x", ctype, ConnState.IDLE, 0.0)


def test_in_memory_store_implements_the_interface() -> None:
    store = InMemoryConnectionStore("node-1")
    assert isinstance(store, ConnectionStore)
    store.add(_rec(1))
    store.add(_rec(2, "b", ConnectionType.TRADING))
    store.update("a-c1", ConnState.OPEN, 5.0, "handshake ok")
    got = store.get("a-c1")
    assert got is not None and got.state is ConnState.OPEN and got.transitions == 1
    assert [r.id for r in store.list(route="b")] == ["b-c2"]
    assert [r.id for r in store.list(type=ConnectionType.MARKET_DATA)] == ["a-c1"]
    stats = store.statistics()
    assert stats.by_type == {"market_data": 1, "trading": 1}
    assert stats.by_state == {"open": 1, "idle": 1}
    assert store.remove("a-c1") is not None and store.remove("a-c1") is None
    assert store.statistics().removed == 1
    with pytest.raises(KeyError, match="a-c1"):
        store.update("a-c1", ConnState.OPEN, 6.0)
    assert "connections=1" in repr(store)


def test_store_is_consistent_under_concurrent_writers() -> None:
    store = InMemoryConnectionStore()
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(500):
            store.add(_rec(t * 1000 + i))
            store.update(f"a-c{t * 1000 + i}", ConnState.OPEN, float(i))
            if i % 2:
                store.remove(f"a-c{t * 1000 + i}")
            store.list(route="a")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    stats = store.statistics()
    assert stats.added == 8 * 500 and stats.removed == 8 * 250
    assert stats.connections == 8 * 250 == stats.by_state["open"]


def test_routes_register_connections_with_their_type_and_limits_hold() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex:
            body = route_toml("md", ex.url, min_connections=2, max_connections=2) + route_toml(
                "sys", ex.url, type="system", min_connections=2, max_connections=2
            )
            store = InMemoryConnectionStore("n1")
            async with rig(body, max_connections=4) as r:
                r.env.on_transition.append(store.observe)
                await wait_for(lambda: store.statistics().by_state.get("open", 0) == 4, 5.0)
                assert store.statistics().by_type == {"market_data": 2, "system": 2}
                assert {r.type for r in store.list(route="sys")} == {ConnectionType.SYSTEM}
                # The global cap: a fifth connection is refused with the config key named.
                with pytest.raises(CapacityError, match=r"daemon\.max_connections = 4"):
                    r.routes["md"]._check_capacity()
                # The per-route cap, when the global one leaves room.
                r.env.max_connections = 100
                with pytest.raises(CapacityError, match=r"routes\.md\.max_connections = 2"):
                    r.routes["md"].grow(force=True)
            assert store.statistics().connections == 0  # CLOSED connections leave the store

    run(go())
