"""OKX v5 clients pointed at wsgate: ccxt.pro ``okx``.

Only ``urls['api']['ws']`` is overridden (ccxt appends ``/public``). ccxt checks every book
update's ``prevSeqId`` against the ``seqId`` it holds (a broken chain raises ``InvalidNonce``
in ``watch_order_book``) and takes an ``action: snapshot`` frame as a reset. Across an
upstream drop of every connection and a ``notice`` 64008 service upgrade, ccxt sees no error
and keeps receiving.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, stack, until, upstream_okx_channels

pytest.importorskip("ccxt.pro", reason=f"ccxt {INSTALL_HINT}")

import ccxt.pro as ccxtpro

from wsgate import Gateway
from wsgate.sim import Simulator


def _spot(market_id: str, base: str) -> dict[str, Any]:
    return {
        "id": market_id,
        "symbol": f"{base}/USDT",
        "base": base,
        "quote": "USDT",
        "baseId": base,
        "quoteId": "USDT",
        "type": "spot",
        "spot": True,
        "margin": False,
        "swap": False,
        "future": False,
        "option": False,
        "contract": False,
        "linear": None,
        "inverse": None,
        "active": True,
        "precision": {"amount": 0.00000001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None}},
        "info": {"instType": "SPOT", "instId": market_id},
    }


def okx_for(gw: Gateway) -> Any:
    ex = ccxtpro.okx({"newUpdates": False})
    ex.urls["api"]["ws"] = gw.url("okx") + "/ws/v5"
    ex.set_markets([_spot("BTC-USDT", "BTC"), _spot("ETH-USDT", "ETH")])
    return ex


@asynccontextmanager
async def okx_clients(n: int, **sim_tuning: Any) -> AsyncIterator[tuple[Simulator, list[Any]]]:
    """The simulator behind wsgate (``rig.stack``) and ``n`` ccxt ``okx`` clients on it,
    closed before the stack stops."""
    async with stack(**sim_tuning) as (gw, sim):
        clients = [okx_for(gw) for _ in range(n)]
        try:
            yield sim, clients
        finally:
            for ex in clients:
                await ex.close()


async def repeat(n: int, watch: Callable[[], Awaitable[Any]]) -> list[Any]:
    return [await asyncio.wait_for(watch(), 15) for _ in range(n)]


def test_ccxt_okx_ticker_trades_and_seq_checked_book_shared() -> None:
    async def scenario() -> None:
        async with okx_clients(2) as (sim, (a, b)):
            tickers, trades, books = await asyncio.gather(
                repeat(2, lambda: a.watch_ticker("BTC/USDT")),
                repeat(3, lambda: a.watch_trades("BTC/USDT")),
                repeat(30, lambda: a.watch_order_book("BTC/USDT")),
            )
            # b joins late: its first book is the gateway's snapshot at the last seqId
            other_books, other_trades = await asyncio.gather(
                repeat(20, lambda: b.watch_order_book("BTC/USDT")),
                repeat(2, lambda: b.watch_trades("BTC/USDT")),
            )
            shared = upstream_okx_channels(sim)
        assert shared == 3  # tickers, trades, books: once upstream for both bots
        assert tickers[-1]["symbol"] == "BTC/USDT" and tickers[-1]["last"] > 0
        assert all(x["price"] > 0 for x in trades[-1] + other_trades[-1])
        for book in (books[-1], other_books[-1]):
            assert book["nonce"] and book["bids"] and book["asks"]
            assert book["bids"][0][0] < book["asks"][0][0]

    asyncio.run(scenario())


def test_ccxt_okx_keeps_receiving_across_a_drop_and_a_service_upgrade_notice() -> None:
    async def scenario() -> None:
        async with okx_clients(1, okx_notice_grace=0.5) as (sim, (ex,)):
            await repeat(10, lambda: ex.watch_order_book("BTC/USDT"))
            seen: set[str] = set()
            for fault in (
                lambda: sim.okx.faults.drop(),
                lambda: sim.okx.fault_info(20051),  # notice 64008, close 0.5 s later
                lambda: sim.okx.faults.drop(),
            ):
                fault()
                books = await repeat(20, lambda: ex.watch_order_book("BTC/USDT"))
                trades = await repeat(2, lambda: ex.watch_trades("BTC/USDT"))
                assert books[-1]["bids"][0][0] < books[-1]["asks"][0][0]
                # ccxt's cache holds every trade it was sent: none twice, in id order
                ids = [int(t["id"]) for t in trades[-1]]
                assert len(set(ids)) == len(ids) and ids == sorted(ids)
                seen.update(map(str, ids))
            assert sim.okx.statistics().connections_total >= 4

    asyncio.run(scenario())


def test_python_okx_public_client_through_a_tls_front(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-okx's ``WsPublicAsync`` (TLS only) through a TLS front: acks with its ``id``,
    books and trades, and across an upstream drop no error frame and no end of its stream."""
    okx_ws = pytest.importorskip("okx.websocket.WsPublicAsync", reason=f"python-okx {INSTALL_HINT}")
    from tests.compat.tlsfront import tls_front

    async def scenario() -> None:
        async with (
            stack() as (gw, sim),
            tls_front(gw.daemon.gateway.port) as (port, ca),
        ):
            monkeypatch.setenv("SSL_CERT_FILE", str(ca))
            got: list[dict[str, Any]] = []
            client = okx_ws.WsPublicAsync(url=f"wss://127.0.0.1:{port}/okx/ws/v5/public")
            consumer = await client.start()
            try:
                args = [
                    {"channel": "books", "instId": "BTC-USDT"},
                    {"channel": "trades", "instId": "BTC-USDT"},
                ]
                await client.subscribe(args, lambda m: got.append(json.loads(m)), id="py1")
                await until(lambda: len(books(got)) >= 10, what="books")
                acks = [m for m in got if m.get("event") == "subscribe"]
                assert len(acks) == 2 and all(a["id"] == "py1" for a in acks)
                seen = len(books(got))
                sim.okx.faults.drop()
                await until(lambda: len(books(got)) >= seen + 20, what="books after the drop")
                assert not consumer.done()  # the client's own connection never ended
                assert not [m for m in got if m.get("event") == "error"]
            finally:
                await client.stop()
                consumer.cancel()
        chain = books(got)
        for prev, cur in itertools.pairwise(chain):
            push = cur["data"][0]
            assert cur.get("action") == "snapshot" or push["prevSeqId"] == prev["data"][0]["seqId"]

    asyncio.run(scenario())


def books(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if "data" in m and m["arg"]["channel"] == "books"]
