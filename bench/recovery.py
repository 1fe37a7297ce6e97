"""Recovery: each upstream fault injected into the simulator, seen from a subscribed bot.

The Bitfinex simulator (``wsgate.sim.Simulator``) runs in this process; a real daemon
(``wsgate run``) has a ``bitfinex`` route pointed at it with a 1 s ticker cadence; a
websockets client subscribes to ``ticker tBTCUSD`` through the daemon and timestamps
every data frame. Per fault, from the moment of injection:

* ``detected``: when wsgate acted, as the exchange sees it (a new handshake, or a
  client message such as a resubscribe, on the simulator) or, for maintenance, when
  the daemon's control socket reports the connection ``degraded``;
* ``data_again``: the first ticker data frame the bot receives after detection (for a
  stall, the simulator stops withholding data when wsgate acts, as a replaced or
  resubscribed channel would; for maintenance, 20061 is sent 1 s after 20060).

Goal: a stalled channel detected within cadence + 1 s, data flowing 1 s later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from bench.daemon import run_daemon
from wsgate.sim import Simulator

__all__ = ["run"]

CADENCE = 1.0
ROUTE = """
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
strategy = "round_robin"
min_connections = 1
stale_after = {cadence}
app_ping_interval = 3600
backoff_initial = 0.1
backoff_max = 2
min_uptime = 0
[routes.bfx.channel_cadence]
ticker = {cadence}
[[routes.bfx.endpoints]]
url = "{url}"
"""


async def control_call(sock: str, method: str) -> Any:
    """One control request over the Unix socket (the wire format of wsgate.control)."""
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        req = {"v": 1, "id": 1, "method": method, "params": {}}
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        return json.loads(line)["result"]
    finally:
        writer.close()


class _Bot:
    def __init__(self) -> None:
        self.data_at: list[float] = []

    async def run(self, url: str, subscribed: asyncio.Event) -> None:
        async with connect(url, compression=None) as ws:
            await ws.send('{"event":"subscribe","channel":"ticker","symbol":"tBTCUSD"}')
            async for msg in ws:
                text = str(msg)
                if '"subscribed"' in text:
                    subscribed.set()
                elif text.startswith("[") and '"hb"' not in text:
                    self.data_at.append(time.monotonic())

    def data_after(self, t: float) -> float | None:
        for x in reversed(self.data_at):
            if x <= t:
                break
            first = x
        else:
            return None
        return first if self.data_at and self.data_at[-1] > t else None


async def _wait(cond: Callable[..., Any], limit: float) -> float | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await cond() if asyncio.iscoroutinefunction(cond) else cond():
            return time.monotonic()
        await asyncio.sleep(0.01)
    return None


async def _scenario(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with Simulator(seed=1, binance=False, ticker_rate=20.0, heartbeat_interval=5.0) as sim:
        bfx = sim.bitfinex
        body = ROUTE.format(cadence=CADENCE, url=sim.bitfinex_url)
        with run_daemon(body, fast=False) as d:
            bot = _Bot()
            subscribed = asyncio.Event()
            task = asyncio.create_task(bot.run(f"ws://127.0.0.1:{d.port}/bfx", subscribed))
            try:
                await asyncio.wait_for(subscribed.wait(), 20)

                async def steady() -> None:
                    t = time.monotonic()
                    ok = await _wait(lambda: bot.data_at and bot.data_at[-1] > t, 10)
                    if ok is None:
                        raise RuntimeError("no ticker data through wsgate")

                def sim_counts() -> tuple[int, int]:
                    s = bfx.statistics()
                    return s.handshakes_accepted, s.messages_received

                async def degraded() -> bool:
                    st = await control_call(d.socket, "status")
                    return any(r["connections"]["states"].get("degraded") for r in st["routes"])

                faults: list[str] = ["drop", "stall", "info_20051", "maintenance"]
                for name in faults:
                    await steady()
                    await asyncio.sleep(0.3)
                    h0, m0 = sim_counts()
                    t0 = time.monotonic()
                    extra: dict[str, Any] = {}
                    if name == "drop":
                        bfx.faults.drop()
                        det = await _wait(lambda h0=h0: sim_counts()[0] > h0, 15)
                    elif name == "stall":
                        bfx.faults.stall()
                        det = await _wait(lambda h0=h0, m0=m0: sim_counts() != (h0, m0), 15)
                        bfx.faults.resume()
                        extra["action"] = "reconnect" if sim_counts()[0] > h0 else "resubscribe"
                    elif name == "info_20051":
                        bfx.faults.info(20051)
                        det = await _wait(lambda h0=h0: sim_counts()[0] > h0, 15)
                    else:
                        bfx.faults.info(20060)
                        det = await _wait(degraded, 10)
                        await asyncio.sleep(1.0)
                        extra["maintenance_end_after_s"] = time.monotonic() - t0
                        bfx.faults.info(20061)
                    mark = det if det is not None and name != "maintenance" else time.monotonic()
                    back = await _wait(lambda m=mark: bot.data_after(m) is not None, 15)
                    first = bot.data_after(mark)
                    results[name] = {
                        "detect_s": None if det is None else det - t0,
                        "data_again_after_detect_s": None if first is None else first - mark,
                        "data_again_after_fault_s": None if first is None else first - t0,
                        **extra,
                    }
                    if back is None:
                        results[name]["error"] = "no data within 15 s"
            finally:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    stall = results.get("stall", {})
    return {
        "name": "recovery",
        "quick": quick,
        "cadence_s": CADENCE,
        "faults": results,
        "goal_detect_s": CADENCE + 1.0,
        "goal_met": (
            stall.get("detect_s") is not None
            and stall["detect_s"] <= CADENCE + 1.0
            and stall.get("data_again_after_detect_s") is not None
            and stall["data_again_after_detect_s"] <= 1.0
        ),
    }


def run(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_scenario(quick))
