"""Bybit v5 clients pointed at wsgate: ccxt.pro ``bybit`` and pybit's ``WebSocket``.

Only URLs are overridden: ccxt's ``urls['api']['ws']['public'][category]``, and pybit's
module-level ``PUBLIC_WSS`` template (pybit builds its host from fixed parts, so the template
is its URL setting). pybit finds each subscription's ack by the ``req_id`` it sent; ccxt
resets its book on every ``snapshot`` and applies deltas. Across an upstream drop and an
engine restart (books back at ``u = 1``), the clients see no error and keep receiving.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, stack, until

pytest.importorskip("ccxt.pro", reason=f"ccxt {INSTALL_HINT}")
pytest.importorskip("pybit.unified_trading", reason=f"pybit {INSTALL_HINT}")

import ccxt.pro as ccxtpro
from pybit import unified_trading

from wsgate import Gateway


def _market(market_id: str, base: str, kind: str) -> dict[str, Any]:
    linear = kind == "swap"
    return {
        "id": market_id,
        "symbol": f"{base}/USDT:USDT" if linear else f"{base}/USDT",
        "base": base,
        "quote": "USDT",
        "settle": "USDT" if linear else None,
        "baseId": base,
        "quoteId": "USDT",
        "settleId": "USDT" if linear else None,
        "type": kind,
        "spot": not linear,
        "margin": False,
        "swap": linear,
        "future": False,
        "option": False,
        "contract": linear,
        "linear": True if linear else None,
        "inverse": False if linear else None,
        "contractSize": 1 if linear else None,
        "active": True,
        "precision": {"amount": 0.00000001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None}},
        "info": {},
    }


def bybit_for(gw: Gateway) -> Any:
    ex = ccxtpro.bybit({"newUpdates": False})
    public = ex.urls["api"]["ws"]["public"]
    for category in ("spot", "linear"):
        public[category] = gw.url("bybit") + f"/v5/public/{category}"
    ex.set_markets(
        [
            _market("BTCUSDT", "BTC", "spot"),
            _market("ETHUSDT", "ETH", "spot"),
            _market("BTCUSDT", "BTC", "swap"),
            _market("ETHUSDT", "ETH", "swap"),
        ]
    )
    return ex


async def repeat(n: int, watch: Callable[[], Awaitable[Any]]) -> list[Any]:
    return [await asyncio.wait_for(watch(), 15) for _ in range(n)]


def test_ccxt_bybit_spot_and_linear_tickers_trades_books() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            ex = bybit_for(gw)
            try:
                spot_t, lin_t, spot_b, lin_b, lin_tr = await asyncio.gather(
                    repeat(2, lambda: ex.watch_ticker("BTC/USDT")),
                    repeat(2, lambda: ex.watch_ticker("BTC/USDT:USDT")),
                    repeat(20, lambda: ex.watch_order_book("BTC/USDT")),
                    repeat(20, lambda: ex.watch_order_book("BTC/USDT:USDT")),
                    repeat(3, lambda: ex.watch_trades("BTC/USDT:USDT")),
                )
                for fault in (
                    lambda: sim.bybit.faults.drop(),
                    lambda: sim.bybit.fault_info(20051),  # engine restart: books at u = 1
                ):
                    fault()
                    books = await repeat(20, lambda: ex.watch_order_book("BTC/USDT:USDT"))
                    trades = await repeat(2, lambda: ex.watch_trades("BTC/USDT:USDT"))
                    assert books[-1]["bids"][0][0] < books[-1]["asks"][0][0]
                    ids = [t["id"] for t in trades[-1]]
                    assert len(set(ids)) == len(ids)  # ccxt's cache: none twice
            finally:
                await ex.close()
        assert spot_t[-1]["symbol"] == "BTC/USDT" and spot_t[-1]["last"] > 0
        assert lin_t[-1]["symbol"] == "BTC/USDT:USDT" and lin_t[-1]["last"] > 0
        for book in (spot_b[-1], lin_b[-1]):
            assert book["bids"] and book["asks"] and book["bids"][0][0] < book["asks"][0][0]
        assert all(t["price"] > 0 for t in lin_tr[-1])

    asyncio.run(scenario())


class Collector:
    """pybit callbacks run on its own thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.messages.append(message)

    def count(self, topic_prefix: str) -> int:
        with self.lock:
            return sum(1 for m in self.messages if m.get("topic", "").startswith(topic_prefix))


def test_pybit_linear_and_spot_streams_across_a_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            monkeypatch.setattr(
                unified_trading, "PUBLIC_WSS", gw.url("bybit") + "/v5/public/{CHANNEL_TYPE}"
            )
            open_ws = unified_trading.WebSocket
            linear = await asyncio.to_thread(open_ws, testnet=False, channel_type="linear")
            spot = await asyncio.to_thread(open_ws, testnet=False, channel_type="spot")
            got = Collector()
            try:
                await asyncio.to_thread(linear.orderbook_stream, 50, "BTCUSDT", got)
                await asyncio.to_thread(linear.trade_stream, "BTCUSDT", got)
                await asyncio.to_thread(linear.ticker_stream, "BTCUSDT", got)
                await asyncio.to_thread(spot.orderbook_stream, 1, "ETHUSDT", got)
                await until(lambda: got.count("orderbook.50") >= 10, what="linear book")
                await until(lambda: got.count("orderbook.1") >= 3, what="spot top of book")
                await until(lambda: got.count("tickers") >= 1, what="ticker")
                # pybit matched every ack by its req_id: nothing left pending
                assert linear.subscriptions and all(
                    isinstance(v, str) for v in linear.subscriptions.values()
                )
                before = got.count("orderbook.50")
                sim.bybit.faults.drop()  # every upstream connection
                await until(lambda: got.count("orderbook.50") >= before + 20, what="after drop")
                assert linear.is_connected() and spot.is_connected()  # the bots' own sockets
            finally:
                await asyncio.to_thread(linear.exit)
                await asyncio.to_thread(spot.exit)
        book = [m for m in got.messages if m.get("topic") == "orderbook.50.BTCUSDT"][-1]
        assert book["data"]["b"] and book["data"]["a"]
        assert float(book["data"]["b"][0][0]) < float(book["data"]["a"][0][0])
        trade_frames = [m for m in got.messages if m.get("topic") == "publicTrade.BTCUSDT"]
        trades = [t["i"] for m in trade_frames for t in m["data"]]
        assert len(set(trades)) == len(trades)

    asyncio.run(scenario())
