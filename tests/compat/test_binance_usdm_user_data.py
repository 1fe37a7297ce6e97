"""Binance USD-M user data and the futures WebSocket API through wsgate, with unchanged clients.

python-binance: ``futures_stream_get_listen_key``, ``futures_stream_keepalive`` (a PUT with a
form body) and ``futures_stream_close`` through the ``binance_usdm_user`` route's REST
pass-through (``/fapi/v1/listenKey``), ``futures_user_socket()`` (``/private/ws?listenKey=``)
and ``ws_futures_create_order`` (a signed ``order.place`` on ``/ws-fapi/v1``, the
``binance_usdm_trade`` route). ccxt.pro ``binanceusdm``: ``watch_orders`` and ``watch_balance``
(its own listen key, ``/private/ws?listenKey=``) while ``create_order_ws`` places the order on
the WebSocket API. Only URLs are set; the simulator verifies every signature, so a frame
changed on the way would be refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, gateway_http, stack, until
from wsgate.sim.binance_account import DEFAULT_API_KEYS

pytest.importorskip("ccxt.pro", reason=f"ccxt {INSTALL_HINT}")
pytest.importorskip("binance.async_client", reason=f"python-binance {INSTALL_HINT}")

import ccxt.pro as ccxtpro
from binance.async_client import AsyncClient
from binance.ws.streams import BinanceSocketManager

from tests.compat.test_binance_usdm import _swap

API_KEY, SECRET = next(iter(DEFAULT_API_KEYS.items()))


def test_python_binance_futures_listen_key_user_socket_and_ws_order() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            usdm = sim.binance_usdm

            class Client(AsyncClient):  # type: ignore[misc]
                WS_FUTURES_URL = gw.url("binance_usdm_trade") + "/ws-fapi/v1"

            client = Client(API_KEY, SECRET)
            client.FUTURES_URL = gateway_http(gw, "binance_usdm_user") + "/fapi"
            try:
                key = await client.futures_stream_get_listen_key()
                await client.futures_stream_keepalive(key)  # PUT, listenKey in a form body
                assert usdm.accounts.keepalives == 1
                bm = BinanceSocketManager(client)
                bm.FSTREAM_URL = gw.url("binance_usdm_user") + "/"
                async with bm.futures_user_socket() as user:
                    await until(lambda: bool(usdm.subscribers.get(key)), what="user stream")
                    placed = await client.ws_futures_create_order(
                        symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.01
                    )
                    events = [await asyncio.wait_for(user.recv(), 10) for _ in range(3)]
                await client.futures_stream_close(key)
                assert usdm.accounts.live_key(key) is None
            finally:
                await client.close_connection()
        assert placed["status"] == "FILLED"
        kinds = [e["e"] for e in events]
        assert kinds == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]
        assert [e["o"]["x"] for e in events[:2]] == ["NEW", "TRADE"]
        assert {e["o"]["i"] for e in events[:2]} == {placed["orderId"]}
        assert usdm.accounts.orders_placed == 1

    asyncio.run(scenario())


def _private_usdm(gw: Any) -> Any:
    ex = ccxtpro.binanceusdm({"apiKey": API_KEY, "secret": SECRET, "newUpdates": False})
    ex.urls["api"]["ws"]["linear"] = gw.url("binance_usdm_user") + "/ws"
    ex.urls["api"]["ws"]["ws-api"]["linear"] = gw.url("binance_usdm_trade") + "/ws-fapi/v1"
    ex.urls["api"]["fapiPrivate"] = gateway_http(gw, "binance_usdm_user") + "/fapi/v1"
    # What exchangeInfo says of a symbol that order entry checks (ccxt validates the type).
    info = {"orderTypes": ["LIMIT", "MARKET"], "contractType": "PERPETUAL"}
    ex.set_markets(
        [{**_swap(m, b), "info": {**info, "symbol": m}} for m, b in (("BTCUSDT", "BTC"),)]
    )
    return ex


def test_ccxt_binanceusdm_watch_orders_and_balance_with_an_order_on_the_ws_api() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            usdm = sim.binance_usdm
            ex = _private_usdm(gw)
            try:
                orders = asyncio.ensure_future(ex.watch_orders("BTC/USDT:USDT"))
                balance = asyncio.ensure_future(ex.watch_balance())
                await until(
                    lambda: any(usdm.subscribers.get(k) for k in usdm.accounts.listen_keys),
                    what="ccxt's user stream",
                )
                placed = await asyncio.wait_for(
                    ex.create_order_ws("BTC/USDT:USDT", "market", "buy", 0.01), 15
                )
                got_orders, got_balance = await asyncio.wait_for(
                    asyncio.gather(orders, balance), 15
                )
            finally:
                await ex.close()
        assert placed["id"] and placed["status"] == "closed"
        assert {o["id"] for o in got_orders} == {placed["id"]}
        assert got_balance["USDT"]["total"] is not None
        assert usdm.accounts.orders_placed == 1

    asyncio.run(scenario())
