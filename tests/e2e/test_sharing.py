"""Shared subscriptions end to end: in-process daemon (wsgate.Gateway) + simulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests import simstack
from wsgate import Gateway
from wsgate.sim import Simulator


@asynccontextmanager
async def stack(extra: str = "", **sim_tuning: Any) -> AsyncIterator[tuple[Gateway, Simulator]]:
    async with simstack.stack(
        seed=11,
        gateway_seed=2,
        gateway="linger = 0.5\nsend_buffer_bytes = 1048576",
        extra=extra,
        **sim_tuning,
    ) as (gw, sim):
        yield gw, sim


async def until(cond: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll a condition of another component (no event to wait on), bounded by ``limit``."""
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def recv_json(ws: ClientConnection, limit: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), limit))


async def recv_until(ws: ClientConnection, pred: Callable[[Any], bool], limit: int = 200) -> Any:
    for _ in range(limit):
        msg = await recv_json(ws)
        if pred(msg):
            return msg
    raise AssertionError("expected message never arrived")


def _sub(channel: str, symbol: str = "tBTCUSD", **kw: Any) -> str:
    return json.dumps({"event": "subscribe", "channel": channel, "symbol": symbol, **kw})


def _upstream_channels(sim: Simulator) -> int:
    return sum(c.channels for c in sim.bitfinex.statistics().connections)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def test_two_bots_share_one_upstream_subscription_and_late_joiner_gets_snapshot() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            url = gw.url("bitfinex")
            async with connect(url) as a, connect(url) as b:
                await recv_json(a), await recv_json(b)  # info events
                await a.send(_sub("book", subId="mine"))
                ack_a = await recv_until(a, lambda m: isinstance(m, dict))
                assert ack_a["event"] == "subscribed" and ack_a["subId"] == "mine"
                snap_a = await recv_until(a, lambda m: isinstance(m, list) and m[1] != "hb")
                assert isinstance(snap_a[1][0], list)  # a book snapshot: list of levels
                await b.send(_sub("book"))
                ack_b = await recv_until(b, lambda m: isinstance(m, dict))
                assert ack_b["chanId"] == ack_a["chanId"]  # stable gateway channel id
                snap_b = await recv_until(b, lambda m: isinstance(m, list) and m[1] != "hb")
                assert isinstance(snap_b[1][0], list)  # exactly one snapshot, from gateway state
                upd = await recv_until(b, lambda m: isinstance(m, list) and m[1] != "hb")
                assert not isinstance(upd[1][0], list)  # then updates
                assert _upstream_channels(sim) == 1
                hub = gw.daemon.routes["bitfinex"].hub
                assert hub.statistics().subscriptions == {"confirmed": 1}

    run(scenario)


def test_linger_then_upstream_unsubscribe() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim), connect(gw.url("bitfinex")) as a:
            await recv_json(a)
            await a.send(_sub("ticker"))
            ack = await recv_until(a, lambda m: isinstance(m, dict))
            await until(lambda: _upstream_channels(sim) == 1)
            await a.send(json.dumps({"event": "unsubscribe", "chanId": ack["chanId"]}))
            bye = await recv_until(a, lambda m: isinstance(m, dict))
            assert bye == {"event": "unsubscribed", "status": "OK", "chanId": ack["chanId"]}
            assert _upstream_channels(sim) == 1  # lingering (0.5 s)
            await until(lambda: _upstream_channels(sim) == 0, 5)

    run(scenario)


def test_bad_frames_get_exchange_errors_and_nobody_else_notices() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            url = gw.url("bitfinex")
            async with connect(url) as good, connect(url) as bad:
                await recv_json(good), await recv_json(bad)
                await good.send(_sub("ticker"))
                await recv_until(good, lambda m: isinstance(m, dict))
                await bad.send("{not json")
                err = await recv_json(bad)
                assert err["event"] == "error"
                await bad.send(_sub("nope"))
                err = await recv_json(bad)
                assert (err["event"] == "error" and err["code"] == 10300) or err["code"] == 10302
                await bad.send(_sub("ticker"))
                await recv_until(bad, lambda m: isinstance(m, dict))
                await bad.send(_sub("ticker"))
                dup = await recv_until(bad, lambda m: isinstance(m, dict))
                assert dup["event"] == "error" and dup["code"] == 10301
                for _ in range(3):  # the good client keeps receiving
                    await recv_until(good, lambda m: isinstance(m, list))

    run(scenario)


def test_slow_consumer_closed_while_fast_one_keeps_receiving() -> None:
    async def scenario() -> None:
        async with stack(book_rate=200, trades_rate=50) as (gw, _sim):
            # A small bound makes the drill quick; the mechanism is the same at 4 MiB.
            gw.daemon.gateway.cfg = dataclasses.replace(
                gw.daemon.gateway.cfg, send_buffer_bytes=65536
            )
            url = gw.url("bitfinex")
            port = int(url.split(":")[2].split("/")[0])
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a bot that stalls
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            async with connect(url, sock=sock, max_queue=1) as slow, connect(url) as fast:
                await recv_json(slow), await recv_json(fast)
                for ws in (slow, fast):
                    await ws.send(_sub("book", len="250"))
                    await ws.send(_sub("trades"))
                slow.transport.pause_reading()
                # Shrink the server's kernel buffer for the slow session so the drill
                # reaches wsgate's own bound in seconds, not minutes (loopback autotunes
                # SO_SNDBUF to ~4 MB).
                for s in gw.daemon.gateway.sessions:
                    if s.peer.endswith(str(sock.getsockname()[1])):
                        raw = s.ws.transport.get_extra_info("socket")
                        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                hub = gw.daemon.routes["bitfinex"].hub

                async def drain_fast() -> None:
                    while hub.statistics().slow_consumers_closed == 0:
                        await recv_json(fast)

                await asyncio.wait_for(drain_fast(), 60)
                for _ in range(10):  # still flowing after the slow one was cut off
                    await recv_json(fast)
                sessions = gw.daemon.gateway.sessions
                await until(lambda: len(sessions) == 1, 10)

    run(scenario)


def test_binance_raw_combined_and_subscribe_ids() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            base = gw.url("binance")
            async with connect(base + "/ws/btcusdt@trade") as raw:
                t = await recv_json(raw)
                assert t["e"] == "trade" and t["s"] == "BTCUSDT"
            async with connect(base + "/stream?streams=btcusdt@trade/ethusdt@bookTicker") as c:
                seen = set()
                for _ in range(40):
                    m = await recv_json(c)
                    assert set(m) == {"stream", "data"}
                    seen.add(m["stream"])
                    if len(seen) == 2:
                        break
                assert seen == {"btcusdt@trade", "ethusdt@bookTicker"}
            async with connect(base + "/ws") as ws:
                await ws.send(
                    json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 7})
                )
                assert await recv_until(ws, lambda m: "id" in m) == {"result": None, "id": 7}
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
                listed = await recv_until(ws, lambda m: m.get("id") == 8)
                assert listed["result"] == ["btcusdt@trade"]
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": "x", "id": 9}))
                err = await recv_until(ws, lambda m: m.get("id") == 9)
                assert "error" in err

    run(scenario)


def test_binance_depth_snapshot_passthrough_keeps_update_ids_contiguous() -> None:
    import httpx

    async def scenario() -> None:
        async with stack() as (gw, _sim):
            base = gw.url("binance")
            http_base = base.replace("ws://", "http://")
            async with connect(base + "/ws/btcusdt@depth@100ms") as ws:
                first = await recv_json(ws)
                async with httpx.AsyncClient() as client:
                    r = await client.get(http_base + "/api/v3/depth?symbol=BTCUSDT&limit=100")
                    assert r.status_code == 200, r.text
                    snap = r.json()
                    missing = await client.get(http_base + "/api/v3/../../etc/passwd")
                    assert missing.status_code in (400, 404)
                last = snap["lastUpdateId"]
                # The documented algorithm: drop events with u <= lastUpdateId; the first
                # applied event has U <= lastUpdateId+1 <= u; then U == previous u + 1.
                events = [first]
                while events[-1]["u"] <= last:
                    events.append(await recv_json(ws))
                applied = [e for e in events if e["u"] > last]
                assert applied[0]["U"] <= last + 1 <= applied[0]["u"]
                prev = applied[0]["u"]
                for _ in range(5):
                    e = await recv_json(ws)
                    assert e["U"] == prev + 1
                    prev = e["u"]

    run(scenario)
