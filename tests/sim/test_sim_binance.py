"""BinanceSim over real sockets: raw and combined streams, live subscribe, limits, REST depth."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal
from typing import Any

import httpx
import pytest
from _simhelp import recv_json, recv_until, run, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsgate.sim import BinanceSim, Simulator, run_simulator


def test_raw_stream_trades_with_increasing_ids() -> None:
    async def main() -> None:
        async with BinanceSim(seed=1, trades_rate=50) as sim:
            async with connect(sim.url + "/ws/btcusdt@trade") as ws:
                a = await recv_json(ws)
                b = await recv_json(ws)
                assert a["e"] == "trade" and a["s"] == "BTCUSDT" and b["t"] == a["t"] + 1
                assert isinstance(a["p"], str) and Decimal(a["q"]) > 0
            with pytest.raises(InvalidStatus):
                async with connect(sim.url + "/ws/nosuch@trade"):
                    pass

    run(main())


def test_combined_stream_wrapper_and_kinds() -> None:
    async def main() -> None:
        async with BinanceSim(seed=2, time_scale=0.05, trades_rate=100) as sim:
            streams = [
                "btcusdt@aggTrade",
                "ethusdt@bookTicker",
                "btcusdt@ticker",
                "ethusdt@miniTicker",
                "btcusdt@kline_1m",
            ]
            url = f"{sim.url}/stream?streams={'/'.join(streams)}"
            seen: dict[str, Any] = {}
            async with connect(url) as ws:
                while len(seen) < len(streams):
                    msg = await recv_json(ws)
                    assert set(msg) == {"stream", "data"}
                    seen[msg["stream"]] = msg["data"]
            assert seen["btcusdt@aggTrade"]["e"] == "aggTrade"
            assert {"u", "s", "b", "B", "a", "A"} <= set(seen["ethusdt@bookTicker"])
            assert seen["btcusdt@ticker"]["e"] == "24hrTicker"
            assert seen["ethusdt@miniTicker"]["e"] == "24hrMiniTicker"
            k = seen["btcusdt@kline_1m"]["k"]
            assert k["i"] == "1m" and k["T"] - k["t"] == 59_999 and k["x"] is False

    run(main())


def test_live_subscribe_list_unsubscribe_and_errors() -> None:
    async def main() -> None:
        async with (
            BinanceSim(seed=3, max_messages_per_second=50) as sim,
            connect(sim.url + "/ws") as ws,
        ):

            async def call(req: Any) -> Any:
                await ws.send(req if isinstance(req, str) else json.dumps(req))
                return await recv_until(ws, lambda m: "id" in m)

            sub = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@depth"]}
            assert await call({**sub, "id": 1}) == {"result": None, "id": 1}
            listed = await call({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            assert listed == {"result": ["btcusdt@trade", "ethusdt@depth"], "id": 2}
            unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3}
            assert await call(unsub) == {"result": None, "id": 3}
            listed = await call({"method": "LIST_SUBSCRIPTIONS", "id": 4})
            assert listed["result"] == ["ethusdt@depth"]
            bad_id = await call({"method": "SUBSCRIBE", "params": [], "id": "x"})
            assert bad_id["error"]["code"] == 2 and bad_id["id"] == "x"
            bad_method = await call({"method": "SUBSCRIBEZ", "params": [], "id": 5})
            assert bad_method["error"]["code"] == 2 and bad_method["id"] == 5
            bad_stream = await call({"method": "SUBSCRIBE", "params": ["x@y"], "id": 6})
            assert bad_stream["error"]["code"] == 2
            bad_json = await call("{nope")
            assert bad_json["error"]["code"] == 3 and bad_json["id"] is None
            prop = await call({"method": "GET_PROPERTY", "params": ["combined"], "id": 7})
            assert prop == {"result": False, "id": 7}
            sim.faults.channel_limit(1)
            full = await call({**sub, "id": 8})
            assert full["error"]["code"] == 2

    run(main())


def test_more_than_five_messages_per_second_closes_1008() -> None:
    async def main() -> None:
        async with BinanceSim(seed=4) as sim, connect(sim.url + "/ws") as ws:
            for i in range(6):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(ConnectionClosed) as closed:
                await recv_until(ws, lambda m: False)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    run(main())


def _apply(book: dict[str, dict[Decimal, Decimal]], ev: dict[str, Any]) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for price, qty in ev[key]:
            if Decimal(qty) == 0:
                book[side].pop(Decimal(price), None)
            else:
                book[side][Decimal(price)] = Decimal(qty)


def test_rest_snapshot_is_consistent_with_depth_updates() -> None:
    async def main() -> None:
        async with (
            BinanceSim(seed=5, time_scale=0.2) as sim,
            connect(sim.url + "/ws/btcusdt@depth@100ms") as ws,
            httpx.AsyncClient(timeout=5) as http,
        ):
            url = f"{sim.rest_url}/depth"
            first = await recv_json(ws)  # buffer from here, as the documented algorithm says
            buffered = [first]
            snap = (await http.get(url, params={"symbol": "BTCUSDT", "limit": 5000})).json()
            last_id = snap["lastUpdateId"]
            book = {s: {Decimal(p): Decimal(q) for p, q in snap[s]} for s in ("bids", "asks")}
            while buffered[-1]["u"] <= last_id:
                buffered.append(await recv_json(ws))
            events = [e for e in buffered if e["u"] > last_id]
            assert events[0]["U"] <= last_id + 1 <= events[0]["u"]
            prev_u = None
            for ev in events:
                if prev_u is not None:
                    assert ev["U"] == prev_u + 1  # contiguous
                _apply(book, ev)
                prev_u = ev["u"]
            # Catch up to a second snapshot's id and compare the whole book.
            snap2 = (await http.get(url, params={"symbol": "btcusdt", "limit": 5000})).json()
            while prev_u < snap2["lastUpdateId"]:
                ev = await recv_json(ws)
                assert ev["U"] == prev_u + 1
                _apply(book, ev)
                prev_u = ev["u"]
            assert prev_u == snap2["lastUpdateId"]
            assert book["bids"] == {Decimal(p): Decimal(q) for p, q in snap2["bids"]}
            assert book["asks"] == {Decimal(p): Decimal(q) for p, q in snap2["asks"]}
            assert max(book["bids"]) < min(book["asks"])
            bad = await http.get(url, params={"symbol": "NOPE"})
            assert bad.status_code == 400 and bad.json()["code"] == -1121

    run(main())


def test_depth_1000ms_is_contiguous_and_slower() -> None:
    async def main() -> None:
        async with BinanceSim(seed=6, time_scale=0.05) as sim:
            url = f"{sim.url}/stream?streams=ethusdt@depth/ethusdt@depth@100ms"
            async with connect(url) as ws:
                slow: list[dict[str, Any]] = []
                fast = 0
                while len(slow) < 3:
                    msg = await recv_json(ws)
                    if msg["stream"] == "ethusdt@depth":
                        slow.append(msg["data"])
                    else:
                        fast += 1
                assert slow[1]["U"] == slow[0]["u"] + 1 and slow[2]["U"] == slow[1]["u"] + 1
                assert fast > len(slow)

    run(main())


def test_server_shutdown_event_then_close() -> None:
    async def main() -> None:
        async with (
            BinanceSim(seed=7, shutdown_grace=0.1) as sim,
            connect(sim.url + "/ws") as raw,
            connect(sim.url + "/stream") as comb,
        ):
            await asyncio.wait_for(raw.ping(), 5)
            await asyncio.wait_for(comb.ping(), 5)
            assert sim.faults.server_shutdown() == 2
            ev = await recv_json(raw)
            assert ev["e"] == "serverShutdown" and ev["E"] > 0
            wrapped = await recv_json(comb)
            assert wrapped["stream"] == "!serverShutdown"
            with pytest.raises(ConnectionClosed) as closed:
                await recv_until(raw, lambda m: False)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

    run(main())


def test_max_lifetime_sends_server_shutdown_before_closing() -> None:
    async def main() -> None:
        async with (
            BinanceSim(seed=8, time_scale=0.01, max_lifetime=30, shutdown_grace=10) as sim,
            connect(sim.url + "/ws") as ws,
        ):
            ev = await recv_json(ws)
            assert ev["e"] == "serverShutdown"
            with pytest.raises(ConnectionClosed) as closed:
                await recv_until(ws, lambda m: False)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

    run(main())


def test_server_pings_and_drops_a_client_that_never_pongs() -> None:
    async def main() -> None:
        async with BinanceSim(seed=9, time_scale=0.01) as sim:  # ping 0.2 s, timeout 0.6 s
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101")
            first = await asyncio.wait_for(reader.readexactly(2), 5)
            assert first[0] & 0x0F == 0x9  # a ping frame from the server
            await asyncio.wait_for(reader.read(), 10)  # read to EOF: the server gave up on us
            writer.close()
            await wait_for(lambda: sim.statistics().connections_open == 0)

    run(main())


def test_simulator_umbrella_urls_stats_and_tuning() -> None:
    async def main() -> None:
        async with Simulator(seed=1, time_scale=0.5, heartbeat_interval=3.0) as sim:
            assert sim.bitfinex_url.startswith("ws://127.0.0.1:") and sim.bitfinex_url.endswith(
                "/ws/2"
            )
            assert sim.binance_rest_url == sim.binance_url.replace("ws://", "http://") + "/api/v3"
            assert sim.bitfinex.config.heartbeat_interval == 3.0
            assert sim.binance.time_scale == 0.5
            async with connect(sim.binance_url + "/ws/btcusdt@trade"):
                stats = sim.statistics()
                assert stats.binance is not None and stats.binance.connections_open == 1
                assert stats.as_dict()["bitfinex"]["handshakes_accepted"] == 0  # type: ignore[index]
        with pytest.raises(TypeError):
            Simulator(no_such_option=1)
        assert Simulator(binance=False, binance_max_lifetime=5)._binance is None

    run(main())


def test_run_simulator_serves_until_stop() -> None:
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port

    async def main() -> None:
        stop = asyncio.Event()
        port = free_port()
        task = asyncio.create_task(run_simulator("127.0.0.1", 0, port, 1, stop))

        async def connected() -> None:
            while True:
                try:
                    async with connect(f"ws://127.0.0.1:{port}/ws/ethusdt@aggTrade") as ws:
                        assert (await recv_json(ws))["e"] == "aggTrade"
                        return
                except OSError:
                    await asyncio.sleep(0.02)

        await asyncio.wait_for(connected(), 10)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert task.done() and task.exception() is None

    run(main())
