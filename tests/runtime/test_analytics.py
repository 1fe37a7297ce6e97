"""Analytics jobs and the event bus: scores reach the balancer, history, cleanup, bounds."""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from wsgate.config import parse_config
from wsgate.core.metrics import ConnectionMetrics
from wsgate.core.states import ConnState
from wsgate.core.types import ConnectionType
from wsgate.runtime.ops.analytics import Analytics
from wsgate.runtime.ops.events import EventBus, follow
from wsgate.runtime.persistence.store import Store
from wsgate.runtime.routing.routes import RouteEnv, RouteRuntime
from wsgate.runtime.upstream.connection import HostBudgets, UpstreamConnection

CONFIG = """
[metrics]
listen = ""
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
strategy = "health_based"
min_connections = 2
[[routes.bfx.endpoints]]
url = "ws://127.0.0.1:9/ws/2"
"""


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _route(clock: FakeClock) -> RouteRuntime:
    cfg = parse_config(CONFIG, "<test>")
    env = RouteEnv(budgets=HostBudgets(clock), rng=random.Random(1), clock=clock)
    return RouteRuntime(cfg.route("bfx"), env)


def _open(rt: RouteRuntime) -> UpstreamConnection:
    """A pooled connection moved to OPEN without a socket (the state machine is pure)."""
    assert rt.hub is not None
    conn = rt._new_connection(rt.hub, dedicated=False)
    rt.pool[conn.id] = conn
    rt.hub.attach(conn)
    conn._move(ConnState.CONNECTING, "test")
    conn._move(ConnState.OPEN, "test")
    return conn


def test_health_job_writes_scores_the_balancer_reads() -> None:
    clock = FakeClock()
    rt = _route(clock)
    good, bad = _open(rt), _open(rt)
    for m in (good.metrics, bad.metrics):
        m.on_latency(clock(), 0.010, "app")
    for _ in range(30):
        bad.metrics.on_error(clock(), "test")
    bad.metrics.on_reconnect(clock())
    bad.metrics.on_reconnect(clock())
    a = Analytics({"bfx": rt}, clock=clock)
    ov = a.run_health()

    assert rt.health[good.id] == 100.0
    assert rt.health[bad.id] < 50.0
    assert rt.health_of(bad) == rt.health[bad.id]
    assert rt.hub is not None
    seen = {c.id: c.health for c in rt.hub.candidates()}
    assert seen == {good.id: rt.health[good.id], bad.id: rt.health[bad.id]}
    ch = a.connection_health(bad.id)
    assert ch is not None and ch.worst == "errors"
    assert ov.connections == 2 and ov.up == 2
    route_agg = ov.by_route[0]
    assert route_agg.route == "bfx" and route_agg.health is not None
    assert rt.health[bad.id] < route_agg.health < 100.0
    doc = a.health_doc()
    assert doc["by_type"]["market_data"] == round(route_agg.health, 2)
    assert doc["by_route"] == {"bfx": round(route_agg.health, 2)}
    assert a.route_score("bfx") == route_agg.health


def test_down_and_degraded_connections_score_lower() -> None:
    clock = FakeClock()
    rt = _route(clock)
    up, degraded = _open(rt), _open(rt)
    degraded.set_degraded(True, "maintenance")
    down = rt._new_connection(rt.hub, dedicated=False)
    rt.pool[down.id] = down
    a = Analytics({"bfx": rt}, clock=clock)
    a.run_health()
    assert rt.health[up.id] == 100.0
    assert rt.health[degraded.id] == 60.0
    assert rt.health[down.id] == 0.0
    ch = a.connection_health(down.id)
    assert ch is not None and ch.worst == "down"


def test_stale_fraction_from_the_hub_registry() -> None:
    clock = FakeClock()
    rt = _route(clock)
    conn = _open(rt)
    assert rt.hub is not None
    reg = rt.hub.registry
    fresh, _ = reg.acquire(("ticker", "tBTCUSD"), 1, clock(), cadence=5.0)
    silent, _ = reg.acquire(("ticker", "tETHUSD"), 1, clock(), cadence=5.0)
    for i, sub in enumerate((fresh, silent)):
        reg.assign(sub, conn.id, clock())
        reg.confirm(sub, 100 + i, clock())
    clock.t += 10.0
    reg.on_data(fresh, clock())
    a = Analytics({"bfx": rt}, clock=clock)
    a.run_health()
    ch = a.connection_health(conn.id)
    assert ch is not None
    assert ch.stale_fraction == 0.5
    assert ch.breakdown.staleness_penalty == 0.4
    assert rt.health[conn.id] == 60.0


def test_latency_against_the_route_baseline() -> None:
    clock = FakeClock()
    rt = _route(clock)
    a_conn, b_conn = _open(rt), _open(rt)
    a = Analytics({"bfx": rt}, clock=clock, baseline_half_life=600.0)
    for _ in range(5):
        a_conn.metrics.on_latency(clock(), 0.020, "app")
        b_conn.metrics.on_latency(clock(), 0.020, "app")
        a.run_health()
        clock.t += 30.0
    assert a.statistics().baselines["bfx"] == 0.020
    # One connection slows down 10x; the baseline barely moves, so only it is penalised.
    for _ in range(50):
        b_conn.metrics.on_latency(clock(), 0.200, "app")
    a.run_health()
    baseline = a.statistics().baselines["bfx"]
    assert baseline is not None and baseline < 0.03
    assert rt.health[a_conn.id] == 100.0
    ch = a.connection_health(b_conn.id)
    assert ch is not None and ch.worst == "latency"
    assert rt.health[b_conn.id] < 70.0


def test_band_crossings_are_published_once() -> None:
    clock = FakeClock()
    rt = _route(clock)
    conn = _open(rt)
    bus = EventBus()
    a = Analytics({"bfx": rt}, clock=clock, bus=bus)
    with bus.subscribe(["health"]) as sub:
        a.run_health()  # first observation: no event
        a.run_health()
        assert sub.get_nowait() is None
        for _ in range(30):
            conn.metrics.on_error(clock(), "test")
        a.run_health()
        events = []
        while (ev := sub.get_nowait()) is not None:
            events.append(ev.data)
        a.run_health()
        assert sub.get_nowait() is None  # same band again: quiet
    scopes = {(e["scope"], e["name"]) for e in events}
    assert ("connection", conn.id) in scopes and ("system", "overall") in scopes
    conn_ev = next(e for e in events if e["scope"] == "connection")
    assert conn_ev["direction"] == "down" and conn_ev["previous_band"] == 90
    assert conn_ev["score"] == round(rt.health[conn.id], 2)
    assert a.health_events == len(events)


class FakeAlerting:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def expire_silences(self, now: float) -> list[str]:
        self.calls.append(now)
        return ["s1"]


def test_analytics_history_and_cleanup(tmp_path: Any) -> None:
    clock, wall = FakeClock(), FakeClock(1_700_000_000.0)
    rt = _route(clock)
    conn, relay = _open(rt), _open(rt)
    store = Store(tmp_path / "wsgate.db")
    alerting = FakeAlerting()
    a = Analytics(
        {"bfx": rt},
        clock=clock,
        wall=wall,
        store=store,
        retention=lambda: 3600.0,
        alerting=lambda: alerting,
    )
    conn.metrics.on_latency(clock(), 0.005, "app")
    for _round in range(3):
        for _ in range(10):
            conn.metrics.on_message_in(clock(), 100)
        clock.t += 1.0
        wall.t += 1800.0
        assert a.run_analytics() == 2
    hist = conn.metrics.history()
    assert len(hist) == 3 and hist[0].latency == 0.005
    rows = store.events(kind="analytics", route="bfx")
    assert len(rows) == 3
    assert rows[0].data["connections"] == 2 and rows[0].data["up"] == 2
    assert rows[0].data["latency_avg"] == 0.005
    a.run_health()
    del rt.pool[relay.id]  # the connection went away; its score must not linger
    wall.t += 1.0  # rows at +1800, +3600, +5400 s; retention 3600 s: the first is over
    result = a.run_cleanup()
    assert relay.id not in rt.health and conn.id in rt.health
    assert result == {"scores": 1, "history_rows": 1, "silences": 1}
    assert len(store.events(kind="analytics")) == 2
    assert alerting.calls == [wall()]
    store.close()


class _Conn:
    def __init__(self, cid: str, rng: random.Random) -> None:
        self.id = cid
        self.state = ConnState.OPEN
        self.metrics = ConnectionMetrics(history_points=1000)
        self.metrics.on_state(0.0, "open", True)
        self.metrics.on_latency(1.0, rng.uniform(0.001, 0.05), "app")
        for _ in range(20):
            self.metrics.on_message_in(1.0, 200)


class _Cfg:
    type = ConnectionType.MARKET_DATA


class _Route:
    def __init__(self, name: str, conns: list[_Conn]) -> None:
        self.name = name
        self.cfg = _Cfg()
        self.hub = None
        self.health: dict[str, float] = {}
        self.sessions: set[int] = set()
        self._conns = conns

    def connections(self) -> list[_Conn]:
        return self._conns


def test_cost_1000_connections() -> None:
    """Measured numbers for the module docstring; asserts only on what was computed."""
    rng = random.Random(7)
    routes = {
        f"r{i}": _Route(f"r{i}", [_Conn(f"r{i}-c{j}", rng) for j in range(100)]) for i in range(10)
    }
    clock = FakeClock(10.0)
    a = Analytics(routes, clock=clock, store=Store(":memory:"))
    t0 = time.perf_counter()
    ov = a.run_health()
    health_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    points = a.run_analytics()
    analytics_s = time.perf_counter() - t0
    print(f"\nhealth job, 1000 connections: {health_s * 1000:.1f} ms")
    print(f"analytics job, 1000 connections: {analytics_s * 1000:.1f} ms")
    assert ov.connections == 1000 and points == 1000
    assert all(len(r.health) == 100 for r in routes.values())


def test_memory_per_connection_with_full_history() -> None:
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    m = ConnectionMetrics(history_points=1000)
    for i in range(1000):
        m.on_latency(float(i), 0.01, "ws")
        m.on_reconnect(float(i))
        m.roll_up(float(i), 3)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"\nConnectionMetrics with 1000 history points: {used} bytes (tracemalloc)")
    assert len(m.history()) == 1000
    assert used < 64 * 1024


# ---------------------------------------------------------------- event bus
def test_bus_drops_oldest_and_counts() -> None:
    bus = EventBus(queue_size=3, clock=lambda: 5.0)
    with bus.subscribe() as slow, bus.subscribe(["alert"]) as alerts:
        for i in range(5):
            bus.publish("transition", {"i": i})
        bus.publish("alert", {"x": 1})
        got = [slow.get_nowait() for _ in range(3)]
        assert [e.data for e in got if e is not None] == [{"i": 3}, {"i": 4}, {"x": 1}]
        assert slow.dropped == 3 and bus.dropped == 3
        ev = alerts.get_nowait()
        assert ev is not None and ev.kind == "alert" and alerts.get_nowait() is None
        assert bus.statistics().subscribers == 2
        assert "dropped=3" in repr(slow)
    st = bus.statistics()
    assert st.subscribers == 0 and st.published == 6
    assert st.by_kind == {"transition": 5, "alert": 1}
    assert [e.seq for e in bus.recent(2)] == [5, 6]


async def _followed(bus: EventBus, n: int, publish: Callable[[], object]) -> list[tuple[str, Any]]:
    """The first ``n`` items :func:`follow` yields when ``publish`` runs once it subscribed."""
    stop = asyncio.Event()
    out: list[tuple[str, Any]] = []

    async def consume() -> None:
        async for item in follow(bus, stop):
            out.append(item)
            if len(out) == n:
                stop.set()

    task = asyncio.create_task(consume())
    while bus.statistics().subscribers == 0:  # noqa: ASYNC110 - the consumer subscribes
        await asyncio.sleep(0)
    publish()
    await asyncio.wait_for(task, 5)
    assert bus.statistics().subscribers == 0
    return out


def test_follow_yields_until_stopped() -> None:
    bus = EventBus()

    def publish() -> None:
        bus.publish("transition", {"n": 1})
        bus.publish("health", {"n": 2})

    out = asyncio.run(_followed(bus, 2, publish))
    assert [k for k, _ in out] == ["transition", "health"]
    assert out[1][1]["data"] == {"n": 2}


def test_follow_says_how_many_were_dropped_before_the_next_event() -> None:
    bus = EventBus(queue_size=1)

    def publish() -> None:
        for n in range(3):  # one fits the queue: the first two are dropped
            bus.publish("transition", {"n": n})

    out = asyncio.run(_followed(bus, 2, publish))
    assert out[0] == ("dropped", {"count": 2})
    assert out[1][0] == "transition" and out[1][1]["data"] == {"n": 2}
