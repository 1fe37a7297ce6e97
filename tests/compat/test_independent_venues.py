"""ccxt.pro, unchanged but for URLs, against the independent venue servers of tests/venues
(written from the venues' documentation, not from wsgate.sim): one client straight to the
server, one through wsgate, and both must end with the server's book and the same trades.

Markets come from fixtures (``set_markets``); only ``urls`` are overridden.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, until
from tests.venues.binance_usdm_server import UsdmServer
from tests.venues.bybit_server import BybitServer
from tests.venues.okx_server import OkxServer
from tests.venues.rig import gateway

pytest.importorskip("ccxt.pro", reason=f"ccxt {INSTALL_HINT}")

import ccxt.pro as ccxtpro

JSON_STYLES = ("compact", "pretty", "reordered", "escaped")


def _market(market_id: str, base: str, kind: str, **extra: Any) -> dict[str, Any]:
    swap = kind == "swap"
    return {
        "id": market_id,
        "symbol": f"{base}/USDT:USDT" if swap else f"{base}/USDT",
        "base": base,
        "quote": "USDT",
        "settle": "USDT" if swap else None,
        "baseId": base,
        "quoteId": "USDT",
        "settleId": "USDT" if swap else None,
        "type": kind,
        "spot": not swap,
        "margin": False,
        "swap": swap,
        "future": False,
        "option": False,
        "contract": swap,
        "linear": True if swap else None,
        "inverse": False if swap else None,
        "contractSize": 1 if swap else None,
        "active": True,
        "precision": {"amount": 0.001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None}},
        "info": {},
        **extra,
    }


class Watcher:
    """One ccxt client watching a book and trades in tasks, keeping what it saw."""

    def __init__(self, ex: Any, symbol: str, book_params: dict[str, Any] | None = None) -> None:
        self.ex, self.symbol = ex, symbol
        self.book: dict[str, Any] | None = None
        self.trade_ids: list[str] = []
        self.errors: list[BaseException] = []
        self._tasks = [
            asyncio.create_task(
                self._loop(
                    lambda: ex.watch_order_book(symbol, None, book_params or {}), self._on_book
                )
            ),
            asyncio.create_task(self._loop(lambda: ex.watch_trades(symbol), self._on_trades)),
        ]

    def _on_book(self, ob: Any) -> None:
        self.book = {"bids": [list(x) for x in ob["bids"]], "asks": [list(x) for x in ob["asks"]]}

    def _on_trades(self, trades: Any) -> None:
        for t in trades:
            if t["id"] not in self.trade_ids[-50:]:
                self.trade_ids.append(t["id"])

    async def _loop(self, watch: Callable[[], Awaitable[Any]], on: Callable[[Any], None]) -> None:
        while True:
            try:
                on(await watch())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # kept: the test fails on any
                self.errors.append(exc)
                await asyncio.sleep(0.05)

    def has_book(self, bids: dict[str, str], asks: dict[str, str]) -> bool:
        if self.book is None:
            return False
        want_b = sorted(((float(p), float(q)) for p, q in bids.items()), reverse=True)
        want_a = sorted((float(p), float(q)) for p, q in asks.items())
        got_b = [(float(p), float(q)) for p, q in self.book["bids"]]
        got_a = [(float(p), float(q)) for p, q in self.book["asks"]]
        return got_b == want_b and got_a == want_a

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ex.close()


def test_ccxt_okx_direct_and_through_wsgate_agree(json_style: str) -> None:
    async def scenario() -> None:
        async with OkxServer(json_style) as srv, gateway("okx", srv.url) as gw:
            watchers = []
            for base in (srv.url, gw.url("venue")):
                ex = ccxtpro.okx({"newUpdates": False})
                ex.urls["api"]["ws"] = base + "/ws/v5"
                info = {"instType": "SPOT", "instId": "BTC-USDT"}
                ex.set_markets([_market("BTC-USDT", "BTC", "spot", info=info)])
                watchers.append(Watcher(ex, "BTC/USDT"))
            try:
                await srv.until(lambda: len(srv.subscribers("trades", "BTC-USDT")) == 2, 15)
                await srv.until(lambda: len(srv.subscribers("books", "BTC-USDT")) == 2, 15)
                tids = []
                for k in range(5):
                    await srv.book_update(
                        "BTC-USDT", bids=[(f"9{k}.5", "2.5")], asks=[(f"10{k + 1}.5", "0")]
                    )
                    tids.append(str(await srv.trade("BTC-USDT", "100.5", "0.1")))
                book = srv.books["BTC-USDT"]
                for w in watchers:
                    await until(
                        lambda w=w: w.has_book(book.bids, book.asks), 15, "the server's book"
                    )
                    await until(lambda w=w: w.trade_ids[-1:] == tids[-1:], 15, "the last trade")
                    assert w.errors == []
                assert watchers[0].trade_ids == watchers[1].trade_ids == tids
            finally:
                for w in watchers:
                    await w.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["spot", "swap"])
def test_ccxt_bybit_direct_and_through_wsgate_agree(json_style: str, kind: str) -> None:
    category = "spot" if kind == "spot" else "linear"

    async def scenario() -> None:
        async with BybitServer(json_style) as srv, gateway("bybit", srv.url) as gw:
            watchers = []
            for base in (srv.url, gw.url("venue")):
                ex = ccxtpro.bybit({"newUpdates": False})
                for cat in ("spot", "linear"):
                    ex.urls["api"]["ws"]["public"][cat] = base + f"/v5/public/{cat}"
                ex.set_markets([_market("BTCUSDT", "BTC", kind)])
                symbol = "BTC/USDT" if kind == "spot" else "BTC/USDT:USDT"
                watchers.append(Watcher(ex, symbol))
            try:
                name = "publicTrade.BTCUSDT"
                await srv.until(lambda: len(srv.subscribers(category, name)) == 2, 15)
                await srv.until(
                    lambda: (
                        sum(t.startswith("orderbook.") for c in srv.live for t in c.topics) == 2
                    ),
                    15,
                )
                tids = []
                for k in range(4):
                    await srv.book_delta(
                        category, "BTCUSDT", bids=[(f"9{k}.5", "1.5")], asks=[(f"10{k + 1}.5", "0")]
                    )
                    tids.append(await srv.trade(category, "BTCUSDT", "100.5", "0.1"))
                await srv.restart(category, "BTCUSDT")  # u = 1: a snapshot resets the books
                await srv.book_delta(category, "BTCUSDT", bids=[("90.5", "3")])
                tids.append(await srv.trade(category, "BTCUSDT", "100.5", "0.2"))
                book = srv.books[(category, "BTCUSDT")]
                for w in watchers:
                    await until(
                        lambda w=w: w.has_book(book.bids, book.asks),
                        15,
                        "the server's book",
                    )
                    await until(lambda w=w: w.trade_ids[-1:] == tids[-1:], 15, "the last trade")
                    assert w.errors == []
                assert watchers[0].trade_ids == watchers[1].trade_ids == tids
            finally:
                for w in watchers:
                    await w.aclose()

    asyncio.run(scenario())


def test_ccxt_binanceusdm_direct_and_through_wsgate_agree(json_style: str) -> None:
    async def scenario() -> None:
        async with (
            UsdmServer(json_style) as srv,
            gateway("binance_usdm", srv.url, rest_url=srv.rest_url) as gw,
        ):
            watchers = []
            for ws, rest in (
                (srv.url, srv.rest_url),
                (gw.url("venue"), "http" + gw.url("venue")[2:] + "/fapi/v1"),
            ):
                ex = ccxtpro.binanceusdm({"newUpdates": False})
                ex.urls["api"]["ws"]["linear"] = ws + "/ws"
                ex.urls["api"]["fapiPublic"] = rest
                ex.set_markets([_market("BTCUSDT", "BTC", "swap", lowercaseId="btcusdt")])
                watchers.append(Watcher(ex, "BTC/USDT:USDT"))
            try:
                await srv.until(lambda: len(srv.subscribers("btcusdt@trade")) == 2, 15)
                await srv.until(
                    lambda: (
                        sum(s.startswith("btcusdt@depth") for c in srv.live for s in c.streams) == 2
                    ),
                    15,
                )
                tids = []
                for k in range(6):
                    await srv.book_update(
                        "BTCUSDT", bids=[(f"9{k}.10", "1.5")], asks=[(f"10{k + 1}.10", "0")]
                    )
                    await srv.agg_trade("BTCUSDT", "100.10", "0.010")
                    tids.append(str(srv.trades["BTCUSDT"][-1]["id"]))
                    await asyncio.sleep(0.05)  # ccxt fetches its REST snapshot meanwhile
                book = srv.books["BTCUSDT"]
                for w in watchers:
                    await until(
                        lambda w=w: w.has_book(book.bids, book.asks), 15, "the server's book"
                    )
                    await until(lambda w=w: w.trade_ids[-1:] == tids[-1:], 15, "the last trade")
                    assert w.errors == []
                assert watchers[0].trade_ids == watchers[1].trade_ids == tids
            finally:
                for w in watchers:
                    await w.aclose()

    asyncio.run(scenario())
