"""Bybit v5 through wsgate against an independent Bybit server (tests/venues/bybit_server.py):
what a bot sees through the gateway is what it sees from the server directly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.venues.base import STYLES
from tests.venues.books import BookKeeper
from tests.venues.bybit_server import BybitServer
from tests.venues.rig import Inbox, gateway


def sub(*topics: str, req_id: str | None = None, op: str = "subscribe") -> dict[str, Any]:
    body: dict[str, Any] = {} if req_id is None else {"req_id": req_id}
    body.update({"op": op, "args": list(topics)})
    return body


def topic(name: str) -> Any:
    return lambda m: m["topic"] == name


def reply(op: str = "subscribe") -> Any:
    return lambda m: m["op"] == op


def without_conn_id(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "conn_id"}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("category", ["spot", "linear"])
def test_a_bot_through_the_gateway_sees_what_a_direct_bot_sees(style: str, category: str) -> None:
    async def scenario() -> None:
        path = f"/v5/public/{category}"
        topics = ["orderbook.50.BTCUSDT", "orderbook.1.BTCUSDT", "publicTrade.BTCUSDT"]
        topics.append("tickers.BTCUSDT")
        async with (
            BybitServer(style) as srv,
            gateway("bybit", srv.url) as gw,
            connect(srv.url + path) as d,
            connect(gw.url("venue") + path) as g,
        ):
            direct, via = Inbox(d), Inbox(g)
            for bot in (direct, via):
                await bot.send(sub(*topics, req_id="r1"))
                [ack] = await bot.wait(reply())
                assert without_conn_id(ack) == {
                    "success": True,
                    "ret_msg": "subscribe" if category == "spot" else "",
                    "req_id": "r1",
                    "op": "subscribe",
                }
                await bot.send({"op": "ping"})
                [pong] = await bot.wait(reply("ping"))
                assert set(pong) == (
                    {"success", "ret_msg", "conn_id", "op"}
                    | ({"req_id"} if category == "linear" else set())
                )
            await via.wait(topic("tickers.BTCUSDT"))
            await srv.until(lambda: len(srv.subscribers(category, "publicTrade.BTCUSDT")) == 2)
            await srv.book_delta(category, "BTCUSDT", bids=[("99.5", "0")], asks=[("100.9", "2")])
            await srv.trade(category, "BTCUSDT", "100.9", "0.5")
            await srv.restart(category, "BTCUSDT")
            await srv.book_delta(category, "BTCUSDT", bids=[("99.7", "1")])
            tid = await srv.trade(category, "BTCUSDT", "100.9", "0.25")
            for bot in (direct, via):
                await bot.wait(lambda m: m["data"][0]["i"] == tid)
                await bot.wait(
                    lambda m: m["topic"] == "orderbook.50.BTCUSDT" and m["data"]["u"] == 2
                )
            for name in topics:
                assert via.where(topic(name)) == direct.where(topic(name)), name
            upstream_subs = srv.requests("subscribe")
            assert sum(len(r["args"]) for r in upstream_subs) == 2 * len(topics)

    asyncio.run(scenario())


def test_late_joiner_after_a_restart_gets_the_book_from_u_1_on() -> None:
    async def scenario() -> None:
        path = "/v5/public/linear"
        async with BybitServer("pretty") as srv, gateway("bybit", srv.url) as gw:
            url = gw.url("venue") + path
            async with connect(url) as a:
                first = Inbox(a)
                await first.send(sub("orderbook.200.BTCUSDT", "tickers.BTCUSDT"))
                await first.wait(topic("orderbook.200.BTCUSDT"))
                await srv.book_delta("linear", "BTCUSDT", bids=[("91.5", "4")])
                await srv.restart("linear", "BTCUSDT")
                await srv.book_delta("linear", "BTCUSDT", asks=[("101.5", "0")])
                await srv.book_delta("linear", "BTCUSDT", bids=[("99.5", "0.5")])
                await first.wait(lambda m: m["topic"] == "tickers.BTCUSDT", 4)
                await first.wait(lambda m: m["data"]["u"] == 3)
                async with connect(srv.url + path) as d, connect(url) as b:
                    direct, late = Inbox(d), Inbox(b)
                    for bot in (direct, late):
                        await bot.send(sub("orderbook.200.BTCUSDT", "tickers.BTCUSDT"))
                        await bot.wait(topic("orderbook.200.BTCUSDT"))
                        await bot.wait(topic("tickers.BTCUSDT"))
                    [want] = direct.where(topic("orderbook.200.BTCUSDT"))
                    [got] = late.where(topic("orderbook.200.BTCUSDT"))
                    assert got["type"] == "snapshot" and got["data"]["u"] == 3
                    assert got["data"] == want["data"]
                    [want_t] = direct.where(topic("tickers.BTCUSDT"))
                    [got_t] = late.where(topic("tickers.BTCUSDT"))
                    assert got_t["type"] == "snapshot"
                    assert got_t["data"] == {**want_t["data"], **got_t["data"]}
                    assert set(got_t["data"]) == set(want_t["data"])
                    await srv.book_delta("linear", "BTCUSDT", asks=[("102.5", "9")])
                    for bot in (first, direct, late):
                        await bot.wait(lambda m: m["data"]["u"] == 4)
                assert len(srv.requests("subscribe")) == 2  # the gateway's one and direct's

    asyncio.run(scenario())


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_one_bots_bad_topic_does_not_fail_or_delay_another_bots(category: str) -> None:
    """Bybit refuses a request with an unknown topic as a whole: the gateway must not let
    one bot's bad topic fail (or hold up) another bot's good ones."""

    async def scenario() -> None:
        path = f"/v5/public/{category}"
        async with BybitServer() as srv, gateway("bybit", srv.url) as gw:
            url = gw.url("venue") + path
            async with connect(url) as a, connect(url) as b:
                good, bad = Inbox(a), Inbox(b)
                await asyncio.gather(
                    good.send(sub("publicTrade.BTCUSDT", "publicTrade.ETHUSDT", req_id="g")),
                    bad.send(sub("publicTrade.FOOUSDT", req_id="b")),
                )
                [ok] = await good.wait(reply(), limit=5)
                assert ok["success"] is True and ok["req_id"] == "g"
                [err] = await bad.wait(reply(), limit=5)
                assert err["success"] is False and err["req_id"] == "b"
                assert "publicTrade.FOOUSDT" in err["ret_msg"]
                tid = await srv.trade(category, "ETHUSDT", "10", "1")
                await good.wait(lambda m: m["data"][0]["i"] == tid)

    asyncio.run(scenario())


@pytest.mark.parametrize("category", ["spot", "linear"])
def test_a_bots_book_and_trades_hold_across_an_upstream_loss(category: str) -> None:
    """A bot keeps its book by Bybit's rules (any snapshot resets, deltas follow ``u``) and
    its trades by id: across a lost upstream it ends with the server's book, its deltas
    never skip, and no trade comes twice."""

    async def scenario() -> None:
        path = f"/v5/public/{category}"
        name = "orderbook.50.BTCUSDT"
        async with (
            BybitServer() as srv,
            gateway("bybit", srv.url) as gw,
            connect(gw.url("venue") + path) as a,
        ):
            bot = Inbox(a)
            await bot.send(sub(name, "publicTrade.BTCUSDT"))
            await bot.wait(topic(name))
            for k in range(3):
                await srv.book_delta(category, "BTCUSDT", bids=[(f"9{k}.5", "2")])
                await srv.trade(category, "BTCUSDT", "100", "1")
            await srv.drop_all()
            await srv.book_delta(category, "BTCUSDT", asks=[("101.5", "0")])  # while away
            await srv.until(lambda: len(srv.subscribers(category, name)) == 1, 10)
            for k in range(2):
                await srv.book_delta(category, "BTCUSDT", asks=[(f"10{k + 2}.5", "0")])
                await srv.trade(category, "BTCUSDT", "101", "1")
            tid = await srv.trade(category, "BTCUSDT", "102", "1")
            await bot.wait(lambda m: m["data"][0]["i"] == tid)
            u = srv.books[(category, "BTCUSDT")].u
            await bot.wait(lambda m: m["topic"] == name and m["data"]["u"] == u)
            book = BookKeeper()
            for m in bot.where(topic(name)):
                book.bybit(m)
            assert book.breaks == []
            server = srv.books[(category, "BTCUSDT")]
            assert book.same_as(server.bids, server.asks)
            tids = [t["i"] for m in bot.where(topic("publicTrade.BTCUSDT")) for t in m["data"]]
            assert len(tids) == len(set(tids)) == 6

    asyncio.run(scenario())
