"""Cluster data plane (``share = "cluster"``): what following costs, and failover gaps.

Two daemons on one real nats-server and the simulator (in this process) on a Bitfinex
trades channel at ``RATE`` trades a second. One bot on the owner, one on the follower,
both in this process on the same clock: for every trade id both receive, the follower's
arrival minus the owner's is the delay a non-owner adds (goal: p50 <= 500 µs). The
exchange's subscribe requests for the channel are counted (goal: 1 for the cluster).

Failover: the owner is killed (SIGKILL) and the time until the simulator receives the
new owner's subscribe is measured, over ``runs`` fresh clusters (goal: every one
<= lease_ttl + 1 s).
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from typing import Any

import websockets

from tests.cluster.rig import NatsServer, Nodes
from tests.e2e.alert_rig import LoopThread
from tests.e2e.harness import wait_until
from wsgate.sim import Simulator

__all__ = ["run"]

LEASE_TTL = 3.0
ADDED_P50_GOAL_US = 500.0


def _body(nats_url: str, sim: Simulator) -> str:
    return f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "bench"
lease_ttl = {LEASE_TTL}
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
min_connections = 0
share = "cluster"
[[routes.bfx.endpoints]]
url = "{sim.bitfinex_url}"
"""


class _Bot:
    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{self.port}/bfx") as ws:
            await ws.send(
                json.dumps({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"})
            )
            async for raw in ws:
                now = time.perf_counter()
                msg = json.loads(raw)
                if isinstance(msg, list) and len(msg) == 3 and msg[1] == "te":
                    self.arrivals.setdefault(int(msg[2][0]), now)


def _sim(lt: LoopThread, rate: float) -> Simulator:
    sim = lt.start_sim(bitfinex_trades_rate=rate)
    original = sim.bitfinex._subscribe
    sim.bitfinex.subscribe_requests = 0  # type: ignore[attr-defined]

    def counting(conn: Any, msg: dict[str, Any]) -> None:
        if msg.get("channel") == "trades":
            sim.bitfinex.subscribe_requests += 1  # type: ignore[attr-defined]
        original(conn, msg)

    sim.bitfinex._subscribe = counting  # type: ignore[method-assign]
    return sim


def _subs(lt: LoopThread, sim: Simulator) -> int:
    return int(lt.call(lambda: getattr(sim.bitfinex, "subscribe_requests", 0)))


def _start(lt: LoopThread, bot: _Bot) -> None:
    async def go() -> None:
        bot.task = asyncio.get_running_loop().create_task(bot.run())

    lt.run(go())


def _stop(lt: LoopThread, sim: Simulator, bots: list[_Bot]) -> None:
    async def end() -> None:
        for b in bots:
            if b.task is not None:
                b.task.cancel()
        await asyncio.gather(*(b.task for b in bots if b.task), return_exceptions=True)
        await sim.close()

    lt.run(end())


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _delay(rate: float, window: float) -> dict[str, Any]:
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = _sim(lt, rate)
        a = nodes.start("a", _body(nats.url, sim))
        b = nodes.start("b", _body(nats.url, sim))
        owner, follower = _Bot(a.port), _Bot(b.port)
        _start(lt, owner)
        wait_until(lambda: len(owner.arrivals) > 5, 15, "trades on the owner")
        _start(lt, follower)
        wait_until(lambda: len(follower.arrivals) > 5, 15, "trades on the follower")
        time.sleep(window)
        common = lt.call(lambda: sorted(set(owner.arrivals) & set(follower.arrivals)))
        added = lt.call(lambda: [(follower.arrivals[i] - owner.arrivals[i]) * 1e6 for i in common])
        subscribes = _subs(lt, sim)
        _stop(lt, sim, [owner, follower])
    return {
        "rate": rate,
        "trades": len(added),
        "added_us_p50": statistics.median(added) if added else None,
        "added_us_p99": _pct(added, 0.99) if added else None,
        "exchange_subscriptions": subscribes,
    }


def _failover_once() -> float:
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = _sim(lt, 20.0)
        a = nodes.start("a", _body(nats.url, sim))
        b = nodes.start("b", _body(nats.url, sim))
        owner, follower = _Bot(a.port), _Bot(b.port)
        _start(lt, owner)
        wait_until(lambda: len(owner.arrivals) > 3, 15, "trades on the owner")
        _start(lt, follower)
        wait_until(lambda: len(follower.arrivals) > 3, 15, "trades on the follower")
        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        wait_until(lambda: _subs(lt, sim) >= 2, LEASE_TTL + 10, "a new owner")
        took = time.monotonic() - killed
        _stop(lt, sim, [owner, follower])
    return took


def run(quick: bool = False) -> dict[str, Any]:
    window = 5.0 if quick else 15.0
    runs = 3 if quick else 10
    delays = [_delay(rate, window) for rate in (100.0, 1000.0)]
    gaps = [_failover_once() for _ in range(runs)]
    return {
        "name": "cluster_share",
        "lease_ttl": LEASE_TTL,
        "delay": delays,
        "added_p50_goal_us": ADDED_P50_GOAL_US,
        "failover_s": gaps,
        "failover_goal_s": LEASE_TTL + 1.0,
        "failover_goal_met": all(g <= LEASE_TTL + 1.0 for g in gaps),
        "one_subscription": all(d["exchange_subscriptions"] == 1 for d in delays),
    }
