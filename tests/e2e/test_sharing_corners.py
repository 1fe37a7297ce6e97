"""The hard corners of shared subscriptions, end to end against the simulator (issue 4, 5-6).

Binance depth continuity across re-homing, Bitfinex checksum mismatch, per-session conf
flags through the hub, Bitfinex re-homing on upstream loss.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_sharing import recv_json, run, stack, until
from wsgate.dialects.base import SubKey
from wsgate.dialects.binance import parse_stream
from wsgate.dialects.binance_depth import Phase
from wsgate.runtime.hub import Hub

DEPTH = "btcusdt@depth@100ms"


def _report(what: str, seconds: float) -> None:
    # Measured numbers for the record (visible with -s); not asserted beyond the budget.
    sys.stderr.write(f"\n[measured] {what}: {seconds * 1000:.0f} ms\n")


# ====================================================================== Binance depth
@dataclass
class BookClient:
    """A bot keeping a Binance book by the documented algorithm, watching every U/u."""

    ws: ClientConnection
    combined: bool
    http: str
    bids: dict[Decimal, str] = field(default_factory=dict)
    asks: dict[Decimal, str] = field(default_factory=dict)
    last_u: int | None = None
    violations: list[tuple[int, int]] = field(default_factory=list)  # (prev u, U)
    history: dict[int, tuple[dict[Decimal, str], dict[Decimal, str]]] = field(default_factory=dict)
    arrivals: list[tuple[float, int, int]] = field(default_factory=list)  # (time, U, u)
    close_code: int | None = None

    async def event(self) -> dict[str, Any]:
        msg = await recv_json(self.ws)
        if self.combined:
            assert msg["stream"] == DEPTH
            msg = msg["data"]
        assert msg["e"] == "depthUpdate"
        self.arrivals.append((asyncio.get_running_loop().time(), msg["U"], msg["u"]))
        return dict(msg)

    async def start(self) -> None:
        first = await self.event()
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{self.http}/api/v3/depth?symbol=BTCUSDT&limit=1000")
        assert r.status_code == 200, r.text
        snap = r.json()
        last = snap["lastUpdateId"]
        _apply(self.bids, snap["bids"])
        _apply(self.asks, snap["asks"])
        ev = first
        while ev["u"] <= last:
            ev = await self.event()
        assert ev["U"] <= last + 1 <= ev["u"]
        self._take(ev, check=False)

    def _take(self, ev: dict[str, Any], *, check: bool = True) -> None:
        if check and self.last_u is not None and ev["U"] != self.last_u + 1:
            self.violations.append((self.last_u, ev["U"]))
        _apply(self.bids, ev["b"])
        _apply(self.asks, ev["a"])
        self.last_u = ev["u"]
        self.history[ev["u"]] = (dict(self.bids), dict(self.asks))
        if len(self.history) > 400:
            self.history.pop(next(iter(self.history)))

    async def follow(self) -> None:
        try:
            while True:
                self._take(await self.event())
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None


def _apply(side: dict[Decimal, str], levels: list[list[str]]) -> None:
    for price, qty in levels:
        if Decimal(qty) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = qty


def _as_book(levels: list[list[str]]) -> dict[Decimal, str]:
    return {Decimal(p): q for p, q in levels}


def _depth_key() -> SubKey:
    key = parse_stream(DEPTH)
    assert key is not None
    return key


async def _wait_live(hub: Hub) -> None:
    assert hub.depth is not None
    depth = hub.depth
    key = _depth_key()
    await until(lambda: key in depth.tracks and depth.tracks[key].book.phase is Phase.LIVE)


def test_binance_depth_stays_contiguous_across_a_dropped_upstream() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            base = gw.url("binance")
            http = base.replace("ws://", "http://")
            hub = gw.daemon.routes["binance"].hub
            assert hub is not None and hub.depth is not None
            async with (
                connect(f"{base}/ws/{DEPTH}") as plain_ws,
                connect(f"{base}/stream?streams={DEPTH}") as combined_ws,
            ):
                bots = [BookClient(plain_ws, False, http), BookClient(combined_ws, True, http)]
                for bot in bots:
                    await bot.start()
                tasks = [asyncio.create_task(bot.follow()) for bot in bots]
                await _wait_live(hub)
                await until(lambda: all(len(b.history) >= 5 for b in bots))
                loop = asyncio.get_running_loop()
                dropped_at = loop.time()
                before = [b.last_u for b in bots]
                assert sim.binance.faults.drop() == 1
                assert hub.depth is not None
                depth = hub.depth
                await until(lambda: depth.bridges == 1, 15)
                # Every bot continues, contiguously, past the bridge.
                await until(lambda: all(len(b.history) >= 30 for b in bots), 15)
                first_after = min(t for b in bots for (t, _u0, u1) in b.arrivals if t > dropped_at)
                _report("drop -> first post-re-home depth frame (bridge)", first_after - dropped_at)
                # The bridge made the exchange's gap invisible: U == prev u + 1 throughout.
                for bot, prev in zip(bots, before, strict=True):
                    assert bot.violations == [], bot.violations
                    assert bot.last_u is not None and prev is not None and bot.last_u > prev
                # A fresh REST snapshot equals every bot's book at the same update id.
                async with httpx.AsyncClient() as client:
                    r = await client.get(f"{http}/api/v3/depth?symbol=BTCUSDT&limit=1000")
                snap = r.json()
                last = snap["lastUpdateId"]
                await until(lambda: all((b.last_u or 0) >= last for b in bots), 10)
                for bot in bots:
                    bids, asks = bot.history[last]
                    assert bids == _as_book(snap["bids"])
                    assert asks == _as_book(snap["asks"])
                stats = depth.statistics()
                assert stats.failures == 0 and stats.snapshots >= 2  # the seed and the bridge
                for t in tasks:
                    t.cancel()

    run(scenario)


def test_binance_depth_resync_without_rest_closes_sessions_1013() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            base = gw.url("binance")
            http = base.replace("ws://", "http://")
            hub = gw.daemon.routes["binance"].hub
            assert hub is not None and hub.depth is not None
            async with connect(f"{base}/ws/{DEPTH}") as ws:
                bot = BookClient(ws, False, http)
                await bot.start()
                task = asyncio.create_task(bot.follow())
                await _wait_live(hub)
                with socket.socket() as s:  # a port nobody listens on: REST is down
                    s.bind(("127.0.0.1", 0))
                    dead = s.getsockname()[1]
                hub.depth.rest_url = f"http://127.0.0.1:{dead}/api/v3"
                assert sim.binance.faults.drop() == 1
                await asyncio.wait_for(task, 20)
                assert bot.close_code == 1013
                assert bot.violations == []  # closed, never handed a gap
                assert hub.depth.statistics().failures == 1

    run(scenario)
