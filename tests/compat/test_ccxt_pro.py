"""ccxt.pro (``ccxt.pro.bitfinex`` and ``ccxt.pro.binance``) pointed at wsgate.

Only URLs are overridden (``urls['api']['ws']`` and the Binance REST base). ccxt verifies the
Bitfinex book checksum itself (a mismatch raises ``ChecksumError`` from ``watch_order_book``)
and the Binance diff-depth ``U``/``u`` chain against its REST snapshot (``InvalidNonce``).
Markets come from a fixture (``set_markets``): ``load_markets`` would ask REST endpoints that
the simulator does not serve and that have nothing to do with the streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.compat.rig import (
    INSTALL_HINT,
    gateway_http,
    stack,
    until,
    upstream_binance_streams,
    upstream_bitfinex_channels,
)

pytest.importorskip("ccxt.pro", reason=f"ccxt {INSTALL_HINT}")

import ccxt.pro as ccxtpro

from wsgate import Gateway

# Issue 16: a spaced Binance-compatible server made ccxt.pro drop every frame through wsgate.
JSON_STYLES = ("compact", "spaced", "pretty")


def _market(market_id: str, base: str, quote: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": market_id,
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "baseId": base,
        "quoteId": quote,
        "type": "spot",
        "spot": True,
        "margin": False,
        "swap": False,
        "future": False,
        "option": False,
        "contract": False,
        "linear": False,
        "inverse": False,
        "active": True,
        "precision": {"amount": 0.00000001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None}},
        "info": {},
        **extra,
    }


def bitfinex_for(gw: Gateway) -> Any:
    ex = ccxtpro.bitfinex({"newUpdates": False})
    ex.urls["api"]["ws"]["public"] = gw.url("bitfinex")
    ex.set_markets([_market("tBTCUSD", "BTC", "USD"), _market("tETHUSD", "ETH", "USD")])
    return ex


def binance_for(gw: Gateway) -> Any:
    ex = ccxtpro.binance({"newUpdates": False})
    ex.urls["api"]["ws"]["spot"] = gw.url("binance") + "/ws"
    ex.urls["api"]["public"] = gateway_http(gw, "binance") + "/api/v3"
    ex.set_markets(
        [
            _market("BTCUSDT", "BTC", "USDT", lowercaseId="btcusdt"),
            _market("ETHUSDT", "ETH", "USDT", lowercaseId="ethusdt"),
        ]
    )
    return ex


async def repeat(n: int, watch: Callable[[], Awaitable[Any]]) -> list[Any]:
    return [await asyncio.wait_for(watch(), 15) for _ in range(n)]


def test_ccxt_bitfinex_ticker_trades_ohlcv_and_checksummed_book_shared() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            a, b = bitfinex_for(gw), bitfinex_for(gw)
            try:
                tickers, trades, candles, books = await asyncio.gather(
                    repeat(3, lambda: a.watch_ticker("BTC/USD")),
                    repeat(3, lambda: a.watch_trades("BTC/USD")),
                    repeat(2, lambda: a.watch_ohlcv("BTC/USD", "1m")),
                    # 60 book updates, every checksum after the conf verified by ccxt
                    repeat(60, lambda: a.watch_order_book("BTC/USD")),
                )
                other_books = await repeat(30, lambda: b.watch_order_book("BTC/USD"))
                other_trades = await repeat(2, lambda: b.watch_trades("BTC/USD"))
                shared = upstream_bitfinex_channels(sim)
            finally:
                await a.close()
                await b.close()
        assert shared == 4  # ticker, trades, candles, book: once upstream for both
        t = tickers[-1]
        assert t["symbol"] == "BTC/USD" and 0 < t["bid"] < t["ask"] and t["last"] > 0
        assert trades[-1] and all(x["price"] > 0 and x["amount"] > 0 for x in trades[-1])
        assert other_trades[-1][-1]["symbol"] == "BTC/USD"
        assert candles[-1] and all(c[2] >= c[3] > 0 for c in candles[-1])  # high >= low
        for book in (books[-1], other_books[-1]):
            assert book["bids"] and book["asks"]
            assert book["bids"][0][0] < book["asks"][0][0]

    asyncio.run(scenario())


def test_ccxt_binance_ticker_trades_and_depth_from_rest_snapshot_shared() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            a, b = binance_for(gw), binance_for(gw)
            try:
                tickers, trades, books = await asyncio.gather(
                    repeat(2, lambda: a.watch_ticker("BTC/USDT")),
                    repeat(3, lambda: a.watch_trades("BTC/USDT")),
                    # ccxt checks every U/u against its REST snapshot (InvalidNonce on a gap)
                    repeat(30, lambda: a.watch_order_book("BTC/USDT")),
                )
                other_books, other_trades = await asyncio.gather(
                    repeat(20, lambda: b.watch_order_book("BTC/USDT")),
                    repeat(2, lambda: b.watch_trades("BTC/USDT")),
                )
                shared = upstream_binance_streams(sim)
            finally:
                await a.close()
                await b.close()
        assert shared == 3  # ticker, trade, depth: once upstream for both
        t = tickers[-1]
        assert t["symbol"] == "BTC/USDT" and t["last"] > 0
        assert all(x["price"] > 0 for x in trades[-1] + other_trades[-1])
        for book in (books[-1], other_books[-1]):
            assert book["nonce"] and book["bids"] and book["asks"]
            assert book["bids"][0][0] < book["asks"][0][0]

    asyncio.run(scenario())


def test_ccxt_unwatch_and_raw_bitfinex_book_with_order_id_checksums() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            raw, plain = bitfinex_for(gw), bitfinex_for(gw)
            raw.options["watchOrderBook"]["prec"] = "R0"
            bnc = binance_for(gw)
            try:
                books = await repeat(40, lambda: raw.watch_order_book("BTC/USD"))
                await plain.watch_ticker("BTC/USD")
                await bnc.watch_trades("BTC/USDT")
                await until(lambda: upstream_bitfinex_channels(sim) == 2, what="two channels")
                # ccxt sends {"event":"unsubscribe","chanId":"<id>"}: the id as a string
                assert await asyncio.wait_for(plain.un_watch_ticker("BTC/USD"), 10) is True
                assert await asyncio.wait_for(bnc.un_watch_trades("BTC/USDT"), 10) is True
                await until(lambda: upstream_bitfinex_channels(sim) == 1, what="bitfinex linger")
                await until(lambda: upstream_binance_streams(sim) == 0, what="binance linger")
            finally:
                await raw.close()
                await plain.close()
                await bnc.close()
        book = books[-1]
        assert len(book["bids"][0]) == 3  # raw book levels carry the order id
        assert book["bids"][0][0] < book["asks"][0][0]

    asyncio.run(scenario())
