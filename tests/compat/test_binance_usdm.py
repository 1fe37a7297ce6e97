"""Binance USD-M clients pointed at wsgate: ccxt.pro ``binanceusdm`` and python-binance futures.

Only URLs are overridden. ccxt composes its per-category paths (``/public/ws`` for depth,
bookTicker and trades, ``/market/ws`` for the rest) from ``urls['api']['ws']['linear']`` and
checks every diff-depth event's ``pu`` against the previous ``u`` after its own REST snapshot
(``/fapi/v1/depth`` through the route's pass-through): a gap raises in ``watch_order_book``.
python-binance's futures sockets use ``FSTREAM_URL`` plus ``public/`` or ``market/``.

Across an upstream drop of every connection and the unannounced 24 h close, the clients see
no error and keep receiving, with the ``pu`` chain unbroken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, gateway_http, stack, until, upstream_usdm_streams

pytest.importorskip("ccxt.pro", reason=f"ccxt {INSTALL_HINT}")
pytest.importorskip("binance.async_client", reason=f"python-binance {INSTALL_HINT}")

import itertools

import ccxt.pro as ccxtpro
from binance.async_client import AsyncClient
from binance.ws.streams import BinanceSocketManager

from wsgate import Gateway


def _swap(market_id: str, base: str) -> dict[str, Any]:
    return {
        "id": market_id,
        "lowercaseId": market_id.lower(),
        "symbol": f"{base}/USDT:USDT",
        "base": base,
        "quote": "USDT",
        "settle": "USDT",
        "baseId": base,
        "quoteId": "USDT",
        "settleId": "USDT",
        "type": "swap",
        "spot": False,
        "margin": False,
        "swap": True,
        "future": False,
        "option": False,
        "contract": True,
        "linear": True,
        "inverse": False,
        "contractSize": 1,
        "active": True,
        "precision": {"amount": 0.001, "price": 0.1},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None}},
        "info": {},
    }


def usdm_for(gw: Gateway) -> Any:
    ex = ccxtpro.binanceusdm({"newUpdates": False})
    ex.urls["api"]["ws"]["linear"] = gw.url("binance_usdm") + "/ws"
    ex.urls["api"]["fapiPublic"] = gateway_http(gw, "binance_usdm") + "/fapi/v1"
    ex.set_markets([_swap("BTCUSDT", "BTC"), _swap("ETHUSDT", "ETH")])
    return ex


async def repeat(n: int, watch: Callable[[], Awaitable[Any]]) -> list[Any]:
    return [await asyncio.wait_for(watch(), 15) for _ in range(n)]


def test_ccxt_binanceusdm_ticker_trades_and_pu_checked_book_shared() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            a, b = usdm_for(gw), usdm_for(gw)
            try:
                tickers, trades, books = await asyncio.gather(
                    repeat(2, lambda: a.watch_ticker("BTC/USDT:USDT")),
                    repeat(3, lambda: a.watch_trades("BTC/USDT:USDT")),
                    repeat(30, lambda: a.watch_order_book("BTC/USDT:USDT")),
                )
                other_books, other_trades = await asyncio.gather(
                    repeat(20, lambda: b.watch_order_book("BTC/USDT:USDT")),
                    repeat(2, lambda: b.watch_trades("BTC/USDT:USDT")),
                )
                shared = upstream_usdm_streams(sim)
            finally:
                await a.close()
                await b.close()
        # ticker on /market; trades and depth where ccxt and the venue put them; once each
        assert sum(shared.values()) == 3, shared
        assert tickers[-1]["symbol"] == "BTC/USDT:USDT" and tickers[-1]["last"] > 0
        assert all(x["price"] > 0 for x in trades[-1] + other_trades[-1])
        for book in (books[-1], other_books[-1]):
            assert book["nonce"] and book["bids"] and book["asks"]
            assert book["bids"][0][0] < book["asks"][0][0]

    asyncio.run(scenario())


def test_ccxt_binanceusdm_keeps_receiving_across_drops_and_lifetime_closes() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            ex = usdm_for(gw)
            try:
                await repeat(10, lambda: ex.watch_order_book("BTC/USDT:USDT"))
                await repeat(2, lambda: ex.watch_trades("BTC/USDT:USDT"))
                for fault in (
                    lambda: sim.binance_usdm.faults.drop(),
                    lambda: sim.binance_usdm.fault_server_shutdown(),
                    lambda: sim.binance_usdm.faults.drop(),
                ):
                    fault()
                    # ccxt raises on a closed socket or a pu gap: none may reach it
                    books = await repeat(15, lambda: ex.watch_order_book("BTC/USDT:USDT"))
                    trades = await repeat(2, lambda: ex.watch_trades("BTC/USDT:USDT"))
                    assert books[-1]["bids"][0][0] < books[-1]["asks"][0][0]
                    assert trades[-1]
                assert sim.binance_usdm.statistics().connections_total >= 4
            finally:
                await ex.close()

    asyncio.run(scenario())


def client_for(gw: Gateway) -> tuple[AsyncClient, BinanceSocketManager]:
    client = AsyncClient()
    client.FUTURES_URL = gateway_http(gw, "binance_usdm") + "/fapi"
    bm = BinanceSocketManager(client)
    bm.FSTREAM_URL = gw.url("binance_usdm") + "/"
    return client, bm


async def messages(socket: Any, count: int, fault: Callable[[], object] | None = None) -> list[Any]:
    out: list[Any] = []
    async with socket as stream:
        while len(out) < count:
            msg = await asyncio.wait_for(stream.recv(), 10)
            assert msg.get("e") != "error", msg
            out.append(msg.get("data", msg))  # combined sockets wrap the payload
            if fault is not None and len(out) == count // 2:
                fault()
    return out


def test_python_binance_futures_streams_across_an_upstream_drop() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            client, bm = client_for(gw)
            try:
                agg, depth, marks = await asyncio.gather(
                    messages(bm.aggtrade_futures_socket("BTCUSDT"), 6),
                    messages(
                        bm.futures_depth_socket("BTCUSDT", depth=""),
                        40,
                        fault=lambda: sim.binance_usdm.faults.drop(),
                    ),
                    messages(
                        bm.futures_multiplex_socket(["btcusdt@markPrice@1s"], category="market"),
                        4,
                    ),
                )
                await until(lambda: bool(upstream_usdm_streams(sim)), what="streams re-homed")
            finally:
                await client.close_connection()
        assert {m["e"] for m in agg} == {"aggTrade"}
        ids = [m["a"] for m in agg]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # nothing repeated
        chain = [m for m in depth if m.get("e") == "depthUpdate"]
        assert len(chain) == 40
        for prev, ev in itertools.pairwise(chain):
            assert ev["pu"] == prev["u"], (prev, ev)  # the drop left no gap
        assert {m["e"] for m in marks} == {"markPriceUpdate"}

    asyncio.run(scenario())
