"""Binance user data streams and the WebSocket API through wsgate, against the simulator.

Real sockets both ways: listen keys are created, kept alive and closed through the
route's REST pass-through, ``/ws/<listenKey>`` and ``/ws-api/v3`` sessions are relayed
on dedicated upstreams, an order placed on the trading route shows up on the user data
stream, and the listen key never reaches a log line, ``status`` or the event stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.simstack import Route, stack_config
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.control.api import status
from wsgate.sim import Simulator
from wsgate.sim.binance_account import DEFAULT_API_KEYS

API_KEY, SECRET = next(iter(DEFAULT_API_KEYS.items()))


ROUTES = {
    "binance": Route("binance"),
    "binance_user": Route("binance_user"),
    "binance_trade": Route("binance_trade"),
}


def signed(method: str, rid: str, **params: Any) -> str:
    params = {**params, "apiKey": API_KEY, "timestamp": int(time.time() * 1000)}
    payload = urlencode(sorted(params.items()))
    params["signature"] = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"id": rid, "method": method, "params": params})


async def recv_json(ws: ClientConnection, limit: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), limit))


async def events_until(ws: ClientConnection, kinds: set[str]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while kinds - {e.get("e") for e in got}:
        msg = await recv_json(ws)
        got.append(msg.get("data", msg) if "stream" in msg else msg)
    return got


async def _aiter(items: Iterator[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def test_listen_key_lifecycle_user_stream_and_ws_api_orders(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsgate")

    async def scenario() -> str:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with Simulator(seed=9, bitfinex=False) as sim:
            cfg = parse_config(stack_config(sim, tmp, ROUTES))
            async with Gateway(cfg, seed=2) as gw:
                http_base = "http" + gw.url("binance_user")[2:] + "/api/v3/userDataStream"
                hdr = {"X-MBX-APIKEY": API_KEY}
                async with httpx.AsyncClient(timeout=10) as http:
                    r = await http.post(http_base, headers=hdr)
                    assert r.status_code == 200, r.text
                    key = r.json()["listenKey"]
                    # Keepalive both ways clients send it: query (binance-connector) and a
                    # form body (python-binance).
                    r = await http.put(http_base, params={"listenKey": key}, headers=hdr)
                    assert r.status_code == 200 and r.json() == {}
                    r = await http.put(http_base, data={"listenKey": key}, headers=hdr)
                    assert r.status_code == 200
                    assert sim.binance.accounts.keepalives == 2
                    # A chunked body is refused with a clear status, not a dropped socket.
                    chunks = iter([b"listenKey=", key.encode()])
                    r = await http.put(http_base, content=_aiter(chunks), headers=hdr)
                    assert r.status_code == 411 and "Content-Length" in r.text
                    # Without the API key the exchange refuses; the gateway passes it on.
                    r = await http.put(http_base, params={"listenKey": key})
                    assert r.status_code == 401 and r.json()["code"] == -2015
                    # Market data routes pass GETs only.
                    market = "http" + gw.url("binance")[2:] + "/api/v3/userDataStream"
                    r = await http.post(market, headers=hdr)
                    assert r.status_code == 405
                    for bad in ("/ws/" + key, "/ws-api/v3"):
                        with pytest.raises(InvalidStatus) as exc:
                            await connect(gw.url("binance") + bad)
                        assert exc.value.response.status_code == 403

                    async with (
                        connect(gw.url("binance_user") + "/ws/" + key) as user,
                        connect(gw.url("binance_user") + "/ws/" + key) as user2,
                        connect(gw.url("binance_user") + "/ws") as connector_style,
                        connect(gw.url("binance_trade") + "/ws-api/v3") as api,
                    ):
                        await api.send(json.dumps({"id": "p", "method": "ping"}))
                        assert (await recv_json(api))["status"] == 200
                        await api.send(json.dumps({"id": "t", "method": "time"}))
                        assert (await recv_json(api))["result"]["serverTime"] > 0
                        # binance-connector's user_data(): SUBSCRIBE to the listen key on /ws.
                        await connector_style.send(
                            json.dumps({"method": "SUBSCRIBE", "params": [key], "id": 7})
                        )
                        assert await recv_json(connector_style) == {"result": None, "id": 7}
                        # Every user data session has an upstream of its own.
                        rt = gw.daemon.routes["binance_user"]
                        await _until(lambda: len(rt.relays) == 3)
                        assert not rt.pool  # no pooled probe on a private Binance route
                        await api.send(
                            signed(
                                "order.place",
                                "o1",
                                symbol="BTCUSDT",
                                side="BUY",
                                type="MARKET",
                                quantity="0.01",
                            )
                        )
                        placed = await recv_json(api)
                        assert placed["status"] == 200, placed
                        assert placed["result"]["status"] == "FILLED"
                        want = {"executionReport", "outboundAccountPosition"}
                        for ws in (user, user2, connector_style):
                            evs = await events_until(ws, want)
                            reports = [e for e in evs if e["e"] == "executionReport"]
                            assert [e["x"] for e in reports] == ["NEW", "TRADE"]
                            assert {e["i"] for e in reports} == {placed["result"]["orderId"]}
                        # A bad signature is the exchange's answer, relayed untouched.
                        forged = json.loads(
                            signed(
                                "order.place",
                                "o2",
                                symbol="BTCUSDT",
                                side="BUY",
                                type="MARKET",
                                quantity="1",
                            )
                        )
                        forged["params"]["quantity"] = "100"
                        await api.send(json.dumps(forged))
                        assert (await recv_json(api))["error"]["code"] == -1022
                        assert sim.binance.accounts.orders_placed == 1
                        doc = json.dumps(status(gw.daemon))
                        conns = json.dumps(
                            [c.statistics().__dict__ for c in rt.connections()], default=str
                        )
                        events = json.dumps([e.as_dict() for e in gw.daemon.events.recent()])
                        r = await http.delete(http_base, params={"listenKey": key}, headers=hdr)
                        assert r.status_code == 200
                        expired = await recv_json(user)
                        assert expired["e"] == "listenKeyExpired"
                for text in (doc, conns, events):
                    assert key not in text
                assert "***" in conns  # the relay URLs are there, masked
                return key

    key = asyncio.run(scenario())
    assert key not in caplog.text


async def _until(cond: Any, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110 - polled daemon state
            await asyncio.sleep(0.02)


def test_config_accepts_binance_user_data_and_trading_routes() -> None:
    cfg = parse_config(
        """
[routes.u]
dialect = "binance"
type = "user_data"
[[routes.u.endpoints]]
url = "wss://stream.binance.com:9443"
[routes.t]
dialect = "binance"
type = "trading"
[[routes.t.endpoints]]
url = "wss://ws-api.binance.com:443"
"""
    )
    assert [r.min_connections for r in cfg.routes] == [0, 0]  # per-session relays only


def test_an_upstream_drop_ends_private_sessions_and_nothing_is_replayed() -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with Simulator(seed=11, bitfinex=False) as sim:
            cfg = parse_config(stack_config(sim, tmp, ROUTES))
            async with Gateway(cfg, seed=3) as gw:
                base = "http" + gw.url("binance_user")[2:] + "/api/v3/userDataStream"
                async with httpx.AsyncClient(timeout=10) as http:
                    key = (await http.post(base, headers={"X-MBX-APIKEY": API_KEY})).json()[
                        "listenKey"
                    ]
                async with (
                    connect(gw.url("binance_user") + "/ws/" + key) as user,
                    connect(gw.url("binance_trade") + "/ws-api/v3") as api,
                ):
                    await api.send(
                        signed(
                            "order.place",
                            "o",
                            symbol="BTCUSDT",
                            side="BUY",
                            type="MARKET",
                            quantity="0.5",
                        )
                    )
                    assert (await recv_json(api))["status"] == 200
                    await events_until(user, {"executionReport", "outboundAccountPosition"})
                    assert sim.binance.faults.drop() >= 2
                    for ws in (user, api):
                        await asyncio.wait_for(ws.wait_closed(), 10)
                        assert ws.close_code == 1013  # reconnect and re-authenticate
                rt_user = gw.daemon.routes["binance_user"]
                rt_trade = gw.daemon.routes["binance_trade"]
                await _until(lambda: not rt_user.relays and not rt_trade.relays)
                # Nothing reconnected on the sessions' behalf, no order sent twice.
                assert not [c for c in sim.binance.connections.values() if c.path != "/stream"]
                assert sim.binance.accounts.orders_placed == 1

    asyncio.run(scenario())
