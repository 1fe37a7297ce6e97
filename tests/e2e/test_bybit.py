"""Bybit v5 end to end: in-process wsgate (Gateway) + the Bybit simulator, raw WebSocket bots."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.simstack import Route
from tests.simstack import stack as simstack
from wsgate import Gateway
from wsgate.sim import Simulator

FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "min_uptime": 0, "app_ping_interval": 0.5}


@asynccontextmanager
async def stack() -> AsyncIterator[tuple[Gateway, Simulator]]:
    routes = {"bybit": Route("bybit", **FAST), "bybit_private": Route("bybit_private")}
    only = {"bitfinex": False, "binance": False, "binance_usdm": False, "okx": False}
    async with simstack(routes, gateway="linger = 0.5", **only) as (gw, sim):
        yield gw, sim


async def recv(ws: ClientConnection, limit: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), limit))


async def until_msg(ws: ClientConnection, pred: Callable[[Any], bool], limit: int = 400) -> Any:
    for _ in range(limit):
        msg = await recv(ws)
        if pred(msg):
            return msg
    raise AssertionError("expected message never arrived")


def sub(*topics: str, req_id: str | None = None, op: str = "subscribe") -> str:
    body: dict[str, Any] = {} if req_id is None else {"req_id": req_id}
    body.update({"op": op, "args": list(topics)})
    return json.dumps(body)


def upstream(sim: Simulator) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in sim.bybit.statistics().connections:
        out[c.path] = out.get(c.path, 0) + c.channels
    return out


def test_acks_echo_req_id_in_each_categorys_shape_and_topics_are_shared() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            spot_url = gw.url("bybit") + "/v5/public/spot"
            linear_url = gw.url("bybit") + "/v5/public/linear"
            async with connect(spot_url) as s, connect(linear_url) as lin, connect(spot_url) as s2:
                await s.send(sub("publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", req_id="r1"))
                ack = await until_msg(s, lambda m: m.get("op") == "subscribe")
                assert ack["success"] is True and ack["req_id"] == "r1"
                assert ack["ret_msg"] == "subscribe" and ack["conn_id"]
                await lin.send(sub("orderbook.50.BTCUSDT", "tickers.BTCUSDT"))
                ack = await until_msg(lin, lambda m: m.get("op") == "subscribe")
                assert ack == {**ack, "success": True, "ret_msg": "", "req_id": ""}
                await s2.send(sub("orderbook.50.BTCUSDT", req_id="late"))
                ack = await until_msg(s2, lambda m: m.get("op") == "subscribe")
                assert ack["req_id"] == "late"
                snap = await until_msg(s2, lambda m: m.get("topic") == "orderbook.50.BTCUSDT")
                assert snap["type"] == "snapshot" and len(snap["data"]["b"]) > 5
                # spot and linear are separate instruments on separate upstream paths
                assert upstream(sim) == {"/v5/public/linear": 2, "/v5/public/spot": 2}
                await s.send('{"req_id":"p","op":"ping"}')
                pong = await until_msg(s, lambda m: m.get("op") == "ping")
                assert pong["ret_msg"] == "pong" and pong["req_id"] == "p"
                await s.send(sub(*[f"tickers.X{i}USDT" for i in range(11)], req_id="big"))
                err = await until_msg(s, lambda m: m.get("req_id") == "big")
                assert err["success"] is False and "args size" in err["ret_msg"]
                await s.send(sub("orderbook.7.BTCUSDT", req_id="bad"))
                err = await until_msg(s, lambda m: m.get("req_id") == "bad")
                assert err["success"] is False and "topic:orderbook.7.BTCUSDT" in err["ret_msg"]

    asyncio.run(scenario())


def _apply(book: dict[str, dict[str, str]], frame: dict[str, Any]) -> int:
    data = frame["data"]
    if frame["type"] == "snapshot":
        book["b"], book["a"] = {}, {}
    for side in ("b", "a"):
        for price, size in data[side]:
            if float(size) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = size
    return int(data["u"])


def test_books_stay_valid_across_drops_and_an_engine_restart() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            url = gw.url("bybit") + "/v5/public/linear"
            async with connect(url) as ws:
                await ws.send(sub("orderbook.50.ETHUSDT", "publicTrade.ETHUSDT", req_id="x"))
                book: dict[str, dict[str, str]] = {"b": {}, "a": {}}
                trades: list[str] = []
                last_u = 0
                snapshots = 0

                async def take(n: int) -> None:
                    nonlocal last_u, snapshots
                    got = 0
                    while got < n:
                        m = await recv(ws)
                        assert m.get("success") is not False, m
                        topic = m.get("topic", "")
                        if topic.startswith("publicTrade"):
                            trades.extend(t["i"] for t in m["data"])
                        elif topic.startswith("orderbook"):
                            u = _apply(book, m)
                            if m["type"] == "snapshot":
                                snapshots += 1
                            else:
                                assert u > last_u, (u, last_u)
                            last_u = u
                            got += 1
                            best_bid = max(float(p) for p in book["b"])
                            best_ask = min(float(p) for p in book["a"])
                            assert best_bid < best_ask

                await take(15)
                sim.bybit.faults.drop()
                await take(20)
                sim.bybit.fault_info(20051)  # engine restart: snapshots at u = 1
                await take(20)
                assert snapshots >= 2
                assert len(set(trades)) == len(trades)  # never a trade twice

    asyncio.run(scenario())


def test_private_sessions_are_dedicated_relays() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            async with connect(gw.url("bybit_private") + "/v5/private") as ws:
                await ws.send('{"req_id":"a","op":"auth","args":["key",1662350400000,"sig"]}')
                reply = await recv(ws)
                assert reply["op"] == "auth" and reply["success"] is True
            # A market-data route refuses private sessions at the handshake, saying why.
            with pytest.raises(InvalidStatus) as refused:
                await connect(gw.url("bybit") + "/v5/private")
            assert refused.value.response.status_code == 403

    asyncio.run(scenario())
