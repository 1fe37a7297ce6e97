"""Binance user data streams and the WebSocket API through wsgate, with the official clients.

binance-connector: ``Spot.new_listen_key/renew_listen_key/close_listen_key`` through the
``binance_user`` route's REST pass-through, ``SpotWebsocketStreamClient.user_data`` (a
SUBSCRIBE to the listen key on ``/ws``), and ``SpotWebsocketAPIClient`` (ping, time, a signed
``order.place``) on the ``binance_trade`` route. python-binance: ``stream_get_listen_key``,
``stream_keepalive`` (a PUT with a form body) and ``stream_close``, and ``user_socket()``,
which subscribes on the WebSocket API with a signed ``userDataStream.subscribe.signature``,
while ``ws_create_order`` places the order. The simulator verifies every signature, so a
frame changed on the way would be refused.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, gateway_http, stack, until
from wsgate.sim.binance_account import DEFAULT_API_KEYS

pytest.importorskip("binance.spot", reason=f"binance-connector {INSTALL_HINT}")
pytest.importorskip("binance.async_client", reason=f"python-binance {INSTALL_HINT}")

from binance.async_client import AsyncClient
from binance.spot import Spot
from binance.websocket.spot.websocket_api import SpotWebsocketAPIClient
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient
from binance.ws.streams import BinanceSocketManager

API_KEY, SECRET = next(iter(DEFAULT_API_KEYS.items()))


class Inbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def on_message(self, _manager: object, message: str) -> None:
        with self._lock:
            self._items.append(json.loads(message))

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def by_id(self) -> dict[object, Any]:
        return {m["id"]: m for m in self.items() if isinstance(m, dict) and "id" in m}

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.items() if isinstance(m, dict) and m.get("e") == kind]


def test_binance_connector_listen_key_user_stream_and_ws_api_order() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            spot = Spot(api_key=API_KEY, base_url=gateway_http(gw, "binance_user"))
            key = (await asyncio.to_thread(spot.new_listen_key))["listenKey"]
            assert await asyncio.to_thread(spot.renew_listen_key, key) == {}
            assert sim.binance.accounts.keepalives == 1
            stream_inbox, api_inbox = Inbox(), Inbox()
            stream = await asyncio.to_thread(
                SpotWebsocketStreamClient,
                stream_url=gw.url("binance_user"),
                on_message=stream_inbox.on_message,
            )
            api = await asyncio.to_thread(
                SpotWebsocketAPIClient,
                stream_url=gw.url("binance_trade") + "/ws-api/v3",
                api_key=API_KEY,
                api_secret=SECRET,
                on_message=api_inbox.on_message,
            )
            try:
                await asyncio.to_thread(stream.user_data, listen_key=key, id=11)
                await until(lambda: 11 in stream_inbox.by_id(), what="user_data ack")
                await asyncio.to_thread(api.ping_connectivity, id="ping")
                await asyncio.to_thread(api.server_time, id="time")
                await asyncio.to_thread(
                    api.new_order,
                    id="order",
                    symbol="BTCUSDT",
                    side="BUY",
                    type="MARKET",
                    quantity=0.02,
                )
                await until(
                    lambda: (
                        {"ping", "time", "order"} <= set(api_inbox.by_id())
                        and len(stream_inbox.events("executionReport")) >= 2
                        and stream_inbox.events("outboundAccountPosition")
                    ),
                    what="order answer and user data events",
                )
            finally:
                await asyncio.to_thread(stream.stop)
                await asyncio.to_thread(api.stop)
            assert await asyncio.to_thread(spot.close_listen_key, key) == {}
            assert stream_inbox.by_id()[11] == {"result": None, "id": 11}
            answers = api_inbox.by_id()
            assert answers["ping"]["status"] == 200 and answers["time"]["status"] == 200
            order = answers["order"]
            assert order["status"] == 200, order
            reports = stream_inbox.events("executionReport")
            assert [r["x"] for r in reports] == ["NEW", "TRADE"]
            assert {r["i"] for r in reports} == {order["result"]["orderId"]}
            assert sim.binance.accounts.orders_placed == 1

    asyncio.run(scenario())


def test_python_binance_listen_key_rest_and_user_socket_over_ws_api() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):

            class Client(AsyncClient):  # type: ignore[misc]
                WS_API_URL = gw.url("binance_trade") + "/ws-api/v3"

            client = Client(API_KEY, SECRET)
            client.API_URL = gateway_http(gw, "binance_user") + "/api"
            try:
                key = await client.stream_get_listen_key()
                await client.stream_keepalive(key)  # PUT with listenKey in a form body
                assert sim.binance.accounts.keepalives == 1
                await client.stream_close(key)
                assert sim.binance.accounts.live_key(key) is None
                bm = BinanceSocketManager(client)
                async with bm.user_socket() as user:
                    placed = await client.ws_create_order(
                        symbol="BTCUSDT", side="SELL", type="MARKET", quantity=0.01
                    )
                    events = [await asyncio.wait_for(user.recv(), 10) for _ in range(3)]
            finally:
                await client.close_connection()
        assert placed["status"] == "FILLED"
        kinds = [e["e"] for e in events]
        assert kinds == ["executionReport", "executionReport", "outboundAccountPosition"]
        assert {e["i"] for e in events[:2]} == {placed["orderId"]}

    asyncio.run(scenario())
