"""The hard corners of shared subscriptions, end to end against the simulator (issue 4, 5-6).

Binance depth continuity across re-homing, Bitfinex checksum mismatch, per-session conf
flags through the hub, Bitfinex re-homing on upstream loss.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_sharing import _sub, recv_json, recv_until, run, stack, until
from wsgate.dialects.base import SubKey
from wsgate.dialects.binance import parse_stream
from wsgate.dialects.binance_depth import Phase
from wsgate.runtime.routing.hub import Hub

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


# ====================================================================== Bitfinex
def _raw(text: str | bytes) -> Any:
    """JSON with every number kept as its wire token (checksums hash the exchange's text)."""
    return json.loads(text, parse_int=str, parse_float=str)


@dataclass
class BfxBook:
    """A bot keeping a Bitfinex P0 book and verifying every checksum it is sent."""

    levels: dict[str, tuple[str, str]] = field(default_factory=dict)  # price -> (count, amt)
    snapshots: int = 0
    cs_ok: int = 0
    cs_bad: int = 0
    cs_ok_since_snapshot: int = 0

    def take(self, payload: Any, rest: list[Any]) -> None:
        if payload == "hb":
            return
        if payload == "cs":
            if self.checksum() == int(rest[0]):
                self.cs_ok += 1
                self.cs_ok_since_snapshot += 1
            else:
                self.cs_bad += 1
            return
        if payload and isinstance(payload[0], list):
            self.levels.clear()
            self.snapshots += 1
            self.cs_ok_since_snapshot = 0
            for entry in payload:
                self._put(entry)
        else:
            self._put(payload)

    def _put(self, entry: list[str]) -> None:
        price, count, amount = entry
        if float(count) == 0:
            self.levels.pop(price, None)
        else:
            self.levels[price] = (count, amount)

    def checksum(self) -> int:
        bids = sorted((p for p, v in self.levels.items() if float(v[1]) > 0), key=float)[::-1]
        asks = sorted((p for p, v in self.levels.items() if float(v[1]) < 0), key=float)
        parts: list[str] = []
        for i in range(25):
            for side in (bids, asks):
                if i < len(side):
                    parts += [side[i], self.levels[side[i]][1]]
        crc = zlib.crc32(":".join(parts).encode())
        return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass
class BfxBot:
    """Reads everything a Bitfinex session is sent and files it by gateway chanId."""

    ws: ClientConnection
    flags: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    frames: dict[int, list[tuple[float, list[Any]]]] = field(default_factory=dict)
    books: dict[int, BfxBook] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def conf(self, flags: int) -> None:
        self.flags = flags
        await self.ws.send(json.dumps({"event": "conf", "flags": flags}))
        ack = await recv_until(self.ws, lambda m: isinstance(m, dict) and m["event"] == "conf")
        assert ack == {"event": "conf", "status": "OK", "flags": flags}

    async def subscribe(self, channel: str, **kw: Any) -> int:
        await self.ws.send(_sub(channel, **kw))
        ack = await recv_until(self.ws, lambda m: isinstance(m, dict))
        assert ack["event"] == "subscribed", ack
        chan = int(ack["chanId"])
        self.frames[chan] = []
        if channel == "book":
            self.books[chan] = BfxBook()
        return chan

    async def follow(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for text in self.ws:
                try:
                    msg = _raw(text)
                except ValueError:
                    self.errors.append(f"invalid JSON: {text!r}")
                    continue
                if isinstance(msg, dict):
                    self.events.append(msg)
                    continue
                if not isinstance(msg, list) or len(msg) < 2:
                    self.errors.append(f"not a channel frame: {text!r}")
                    continue
                chan = int(msg[0])
                self.frames.setdefault(chan, []).append((loop.time(), msg))
                book = self.books.get(chan)
                if book is not None:
                    n_trailing = bool(self.flags & 65536) + bool(self.flags & 32768)
                    body = msg[1 : len(msg) - n_trailing]
                    book.take(body[0], body[1:])
        except ConnectionClosed:
            pass


async def _bots(url: str, n: int) -> list[BfxBot]:
    out = []
    for _ in range(n):
        ws = await connect(url)
        await recv_json(ws)  # info
        out.append(BfxBot(ws))
    return out


def test_bitfinex_checksum_mismatch_resubscribes_and_every_session_gets_a_fresh_snapshot() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            hub = gw.daemon.routes["bitfinex"].hub
            assert hub is not None
            bots = await _bots(gw.url("bitfinex"), 2)
            chans = []
            for bot in bots:
                await bot.conf(131072)
                chans.append(await bot.subscribe("book"))
            assert chans[0] == chans[1]
            chan = chans[0]
            tasks = [asyncio.create_task(b.follow()) for b in bots]
            await until(lambda: all(b.books[chan].cs_ok >= 2 for b in bots))
            assert all(b.books[chan].snapshots == 1 for b in bots)
            sim.bitfinex.faults.bad_checksum(1)
            await until(lambda: hub.statistics().checksum_mismatches == 1)
            # The channel was resubscribed upstream: every session gets one fresh snapshot on
            # the same gateway chanId, and its book then verifies against the next cs.
            await until(
                lambda: all(
                    b.books[chan].snapshots == 2 and b.books[chan].cs_ok_since_snapshot >= 2
                    for b in bots
                )
            )
            for bot in bots:
                assert bot.books[chan].cs_bad == 0  # the wrong cs was never forwarded
                assert not [e for e in bot.events if e.get("event") == "subscribed"]
                assert bot.errors == []
            assert hub.statistics().subscriptions == {"confirmed": 1}
            for t in tasks:
                t.cancel()
            for bot in bots:
                await bot.ws.close()

    run(scenario)


def test_per_session_conf_flags_through_the_hub() -> None:
    async def scenario() -> None:
        async with stack(book_rate=20) as (gw, sim):
            plain, flagged, checks = await _bots(gw.url("bitfinex"), 3)
            chan = await plain.subscribe("book")
            tasks = [asyncio.create_task(plain.follow())]
            await until(lambda: len(plain.frames[chan]) >= 5)
            # Upstream latency widens the window in which frames framed by the old flags are
            # still in flight after the gateway asked the exchange for new ones.
            sim.bitfinex.faults.latency(150)
            seen = len(plain.frames[chan])
            await until(lambda: len(plain.frames[chan]) >= seen + 5)  # the pipe is full
            # Flags arrive while frames flow (the upstream conf changes mid-stream).
            await flagged.conf(65536 + 32768)
            await checks.conf(131072)
            assert await flagged.subscribe("book") == chan  # a late joiner
            assert await checks.subscribe("book") == chan
            tasks += [asyncio.create_task(b.follow()) for b in (flagged, checks)]
            await until(lambda: len(flagged.frames[chan]) >= 60 and checks.books[chan].cs_ok >= 3)
            await until(lambda: len(plain.frames[chan]) >= 60)
            # The flagged session: snapshot first, strictly +1 per-session seq, ms timestamps.
            frames = [f for _t, f in flagged.frames[chan]]
            assert isinstance(frames[0][1], list) and isinstance(frames[0][1][0], list)
            assert [int(f[-2]) for f in frames] == list(range(1, len(frames) + 1))
            wall_ms = time.time() * 1000
            for f in frames:
                assert len(f) in (4, 5) and abs(int(f[-1]) - wall_ms) < 60_000  # epoch ms
                assert f[1] != "cs"  # no checksum frames for a session that did not ask
            # The plain session: the exchange's plain frames, never a cs, never corrupted.
            for _t, f in plain.frames[chan]:
                assert f[1] == "hb" or (isinstance(f[1], list) and len(f) == 2), f
                if isinstance(f[1], list) and not isinstance(f[1][0], list):
                    assert len(f[1]) == 3  # [price, count, amount]
            # The checksum session gets cs frames and its book verifies every one.
            assert checks.books[chan].cs_bad == 0 and checks.books[chan].cs_ok >= 3
            assert plain.errors == flagged.errors == checks.errors == []
            for t in tasks:
                t.cancel()
            for b in (plain, flagged, checks):
                await b.ws.close()

    run(scenario)


def test_bitfinex_rehoming_on_upstream_loss_book_snapshot_trades_bridged_same_chan_id() -> None:
    """The book gets the fresh snapshot; the trades channel is bridged (issue 16: the new
    subscription's snapshot would repeat trades the bots have), on the same chanId."""

    async def scenario() -> None:
        async with stack() as (gw, sim):
            hub = gw.daemon.routes["bitfinex"].hub
            assert hub is not None
            bots = await _bots(gw.url("bitfinex"), 2)
            chans: list[dict[str, int]] = []
            for bot in bots:
                chans.append(
                    {"book": await bot.subscribe("book"), "trades": await bot.subscribe("trades")}
                )
            assert chans[0] == chans[1]
            tasks = [asyncio.create_task(b.follow()) for b in bots]
            book, trades = chans[0]["book"], chans[0]["trades"]
            await until(lambda: all(len(b.frames[book]) >= 5 for b in bots))
            loop = asyncio.get_running_loop()
            dropped_at = loop.time()
            assert sim.bitfinex.faults.drop() == 1

            def snapshots_after(bot: BfxBot, chan: int) -> list[float]:
                return [
                    t
                    for t, f in bot.frames[chan]
                    if t > dropped_at and isinstance(f[1], list) and isinstance(f[1][0], list)
                ]

            await until(lambda: all(snapshots_after(b, book) for b in bots), 15)
            await until(lambda: hub.statistics().trade_resumes["bridged"] == 1, 15)
            first = min(t for b in bots for t, _f in b.frames[book] if t > dropped_at)
            _report("drop -> first post-re-home Bitfinex frame (snapshot)", first - dropped_at)
            assert first - dropped_at < 10.0  # within the connect budget
            for bot in bots:
                assert not [e for e in bot.events if e.get("event") == "subscribed"]
                assert len(snapshots_after(bot, book)) == 1  # exactly one fresh snapshot
                # the first frame after the drop is that snapshot
                after = [f for t, f in bot.frames[book] if t > dropped_at]
                assert isinstance(after[0][1][0], list)
                assert snapshots_after(bot, trades) == []  # bridged: no repeated trades
                assert bot.errors == []
            assert hub.statistics().subscriptions == {"confirmed": 2}
            assert sum(c.channels for c in sim.bitfinex.statistics().connections) == 2
            for t in tasks:
                t.cancel()
            for bot in bots:
                await bot.ws.close()

    run(scenario)


def test_binance_subscribe_never_confirmed_gets_code_2_with_the_request_id() -> None:
    """The simulator swallows one stream's SUBSCRIBE: after one resend the bot gets an error."""

    async def scenario() -> None:
        async with stack() as (gw, sim):
            hub = gw.daemon.routes["binance"].hub
            assert hub is not None and sim.binance is not None
            hub.registry.pending_timeout = 0.5
            venue = sim.binance
            answer = venue._on_message
            swallowed: list[str] = []

            def on_message(conn: Any, message: str | bytes) -> bool:
                if "ethusdt@trade" in str(message):
                    swallowed.append(str(message))
                    return True  # no reply at all
                return answer(conn, message)

            venue._on_message = on_message  # type: ignore[method-assign]
            async with connect(gw.url("binance") + "/ws") as ws:
                sub = {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 41}
                await ws.send(json.dumps(sub))
                # The request is answered once the exchange's silence is final: with the
                # venue's error and the request's id, never a success first.
                reply = await recv_until(ws, lambda m: "id" in m)
                assert reply == {
                    "error": {
                        "code": 2,
                        "msg": "Invalid request: stream unavailable, try again later",
                    },
                    "id": 41,
                }
                assert len(swallowed) == 2  # the subscribe and one resend
                ok = {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 42}
                await ws.send(json.dumps(ok))
                assert await recv_until(ws, lambda m: "id" in m) == {"result": None, "id": 42}

    run(scenario)


def test_binance_depth_seeds_from_a_rest_url_with_its_own_query() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            hub = gw.daemon.routes["binance"].hub
            assert hub is not None and hub.depth is not None
            hub.depth.rest_url = sim.binance_rest_url + "?tenant=1"  # the route's REST base
            async with connect(f"{gw.url('binance')}/ws/{DEPTH}") as ws:
                await recv_json(ws)
                await _wait_live(hub)
                assert hub.depth.statistics().failures == 0

    run(scenario)
