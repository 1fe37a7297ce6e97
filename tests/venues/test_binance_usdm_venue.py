"""Binance USD-M through wsgate against an independent fstream server
(tests/venues/binance_usdm_server.py): what a bot sees through the gateway is what it sees
from the server directly."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.venues.base import STYLES
from tests.venues.binance_usdm_server import UsdmServer
from tests.venues.books import BookKeeper
from tests.venues.rig import Inbox, gateway

PUBLIC = ["btcusdt@depth@100ms", "btcusdt@depth5@100ms", "btcusdt@trade"]
MARKET = ["btcusdt@aggTrade", "btcusdt@markPrice@1s"]


def of(stream: str) -> Any:
    return lambda m: m["stream"] == stream


@pytest.mark.parametrize("style", STYLES)
def test_combined_streams_through_the_gateway_are_what_the_server_sends(style: str) -> None:
    async def scenario() -> None:
        async with (
            UsdmServer(style) as srv,
            gateway("binance_usdm", srv.url, rest_url=srv.rest_url) as gw,
        ):
            direct_pub = srv.url + "/public/stream?streams=" + "/".join(PUBLIC)
            direct_mkt = srv.url + "/market/stream?streams=" + "/".join(MARKET)
            via_url = gw.url("venue") + "/stream?streams=" + "/".join(PUBLIC + MARKET)
            async with connect(direct_pub) as p, connect(direct_mkt) as m, connect(via_url) as v:
                pub, mkt, via = Inbox(p), Inbox(m), Inbox(v)
                streams = PUBLIC + MARKET
                await srv.until(lambda: all(len(srv.subscribers(s)) == 2 for s in streams))
                for k in range(4):
                    await srv.book_update("BTCUSDT", bids=[(f"9{k}.10", "1.5")])
                    await srv.agg_trade("BTCUSDT", f"10{k}.10", "0.010")
                    await srv.mark_price("BTCUSDT", f"100.{k}")
                await srv.book_update("BTCUSDT", asks=[("101.10", "0")])
                last = await srv.agg_trade("BTCUSDT", "101.20", "0.020")
                for inbox in (mkt, via):
                    await inbox.wait(lambda m: m["data"].get("a") == last)
                u = srv.books["BTCUSDT"].u
                for inbox in (pub, via):
                    await inbox.wait(lambda m: m["data"].get("u") == u, 2)
                for stream in PUBLIC:
                    assert via.where(of(stream)) == pub.where(of(stream)), stream
                for stream in MARKET:
                    assert via.where(of(stream)) == mkt.where(of(stream)), stream

    asyncio.run(scenario())


def test_raw_stream_path_through_the_gateway_is_what_the_server_sends() -> None:
    async def scenario() -> None:
        async with UsdmServer("pretty") as srv, gateway("binance_usdm", srv.url) as gw:
            path = "/public/ws/btcusdt@depth@100ms/btcusdt@trade"
            async with connect(srv.url + path) as d, connect(gw.url("venue") + path) as v:
                direct, via = Inbox(d), Inbox(v)
                await srv.until(lambda: len(srv.subscribers("btcusdt@trade")) == 2)
                await srv.book_update("BTCUSDT", bids=[("91.10", "3")])
                await srv.agg_trade("BTCUSDT", "100.5", "1")
                for inbox in (direct, via):
                    await inbox.wait(lambda m: m["e"] == "trade")
                    await inbox.wait(lambda m: m["e"] == "depthUpdate")
                assert via.frames == direct.frames

    asyncio.run(scenario())


def test_server_ping_frames_are_answered_and_the_connection_lives() -> None:
    async def scenario() -> None:
        async with (
            UsdmServer(ping_every=0.1, pong_timeout=0.3) as srv,
            gateway("binance_usdm", srv.url) as gw,
            connect(gw.url("venue") + "/ws/btcusdt@aggTrade") as v,
        ):
            via = Inbox(v)
            await srv.until(lambda: len(srv.subscribers("btcusdt@aggTrade")) == 1)
            connects = srv.connects
            await asyncio.sleep(1.5)  # 15 server pings, each to be answered within 0.3 s
            assert srv.connects == connects
            aid = await srv.agg_trade("BTCUSDT", "100", "1")
            await via.wait(lambda m: m["a"] == aid)

    asyncio.run(scenario())


def test_a_quiet_diff_depth_stream_is_not_resubscribed() -> None:
    """fstream pushes a diff-depth event only when the book changed: silence on a quiet
    symbol is not a stale stream, and resubscribing it would spend the message budget."""

    async def scenario() -> None:
        async with (
            UsdmServer() as srv,
            gateway("binance_usdm", srv.url, rest_url=srv.rest_url) as gw,
            connect(gw.url("venue") + "/ws/btcusdt@depth@100ms") as v,
        ):
            via = Inbox(v)
            await srv.until(lambda: len(srv.subscribers("btcusdt@depth@100ms")) == 1)
            await srv.book_update("BTCUSDT", bids=[("91.10", "3")])
            await via.wait(lambda m: m["e"] == "depthUpdate")
            connects = srv.connects
            await asyncio.sleep(3.0)
            subs = [p for r in srv.requests("SUBSCRIBE") for p in r["params"]]
            assert subs.count("btcusdt@depth@100ms") <= 1, subs
            assert srv.connects == connects
            await srv.book_update("BTCUSDT", bids=[("91.10", "0")])
            u = srv.books["BTCUSDT"].u
            [upd] = await via.wait(lambda m: m["u"] == u)
            assert upd["pu"] == u - 4

    asyncio.run(scenario())


def test_a_24h_cut_loses_no_agg_trade_and_repeats_none() -> None:
    async def scenario() -> None:
        async with (
            UsdmServer() as srv,
            gateway("binance_usdm", srv.url, rest_url=srv.rest_url) as gw,
            connect(gw.url("venue") + "/market/ws/btcusdt@aggTrade") as v,
        ):
            via = Inbox(v)
            await srv.until(lambda: len(srv.subscribers("btcusdt@aggTrade")) == 1)
            ids = [await srv.agg_trade("BTCUSDT", "100", "1") for _ in range(3)]
            await via.wait(lambda m: m["a"] == ids[-1])
            await srv.drop_all()
            ids += [await srv.agg_trade("BTCUSDT", "101", "1") for _ in range(2)]  # missed
            await srv.until(lambda: len(srv.subscribers("btcusdt@aggTrade")) == 1, 10)
            ids.append(await srv.agg_trade("BTCUSDT", "102", "1"))
            await via.wait(lambda m: m["a"] == ids[-1])
            assert [m["a"] for m in via.frames] == ids

    asyncio.run(scenario())


def test_a_bots_diff_depth_book_survives_a_24h_cut() -> None:
    """The bot keeps its book by fstream's recipe (REST snapshot, then the ``pu`` chain)
    through the gateway; the upstream is cut and the book moves while it is down: the bot's
    chain must hold (bridged) or its session be closed so it resyncs, never silently wrong."""

    async def scenario() -> None:
        async with (
            UsdmServer() as srv,
            gateway("binance_usdm", srv.url, rest_url=srv.rest_url) as gw,
            connect(gw.url("venue") + "/public/ws/btcusdt@depth@100ms") as v,
        ):
            via = Inbox(v)
            book = BookKeeper()
            await srv.until(lambda: len(srv.subscribers("btcusdt@depth@100ms")) == 1)
            await srv.book_update("BTCUSDT", bids=[("95.10", "1")])
            await via.wait(lambda m: m["e"] == "depthUpdate")
            rest = "http" + gw.url("venue")[2:] + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
            book.usdm_snapshot(await asyncio.to_thread(_get_json, rest))
            await srv.book_update("BTCUSDT", asks=[("103.10", "0")])
            await srv.drop_all()
            await srv.book_update("BTCUSDT", bids=[("96.10", "2")])  # while the gateway is away
            await srv.book_update("BTCUSDT", bids=[("99.10", "0")])
            await srv.until(lambda: len(srv.subscribers("btcusdt@depth@100ms")) == 1, 10)
            await srv.book_update("BTCUSDT", asks=[("104.10", "7")])
            u = srv.books["BTCUSDT"].u
            await via.wait(lambda m: m.get("u") == u)  # no later change: a quiet book
            for event in via.frames:
                book.usdm(event)
            assert book.breaks == []
            srv_book = srv.books["BTCUSDT"]
            assert book.same_as(srv_book.bids, srv_book.asks)

    asyncio.run(scenario())


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())
