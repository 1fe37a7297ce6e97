"""OKX v5 through wsgate against an independent OKX server (tests/venues/okx_server.py):
what a bot sees through the gateway is what it sees from the server directly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.venues.base import STYLES
from tests.venues.books import BookKeeper
from tests.venues.okx_server import OkxServer
from tests.venues.rig import Inbox, gateway

PUBLIC = "/ws/v5/public"


def sub(*args: tuple[str, str], req_id: str | None = None, op: str = "subscribe") -> dict[str, Any]:
    body: dict[str, Any] = {} if req_id is None else {"id": req_id}
    body.update({"op": op, "args": [{"channel": c, "instId": i} for c, i in args]})
    return body


def data_of(channel: str, inst: str = "BTC-USDT") -> Any:
    return lambda m: m["arg"] == {"channel": channel, "instId": inst} and "data" in m


def acks(event: str = "subscribe") -> Any:
    return lambda m: m["event"] == event


@pytest.mark.parametrize("style", STYLES)
def test_a_bot_through_the_gateway_sees_what_a_direct_bot_sees(style: str) -> None:
    async def scenario() -> None:
        async with OkxServer(style) as srv, gateway("okx", srv.url) as gw:
            chans = [
                ("books", "BTC-USDT"),
                ("trades", "BTC-USDT"),
                ("books5", "BTC-USDT"),
                ("bbo-tbt", "BTC-USDT"),
                ("tickers", "BTC-USDT"),
            ]
            async with connect(srv.url + PUBLIC) as d, connect(gw.url("venue") + PUBLIC) as g:
                direct, via = Inbox(d), Inbox(g)
                for bot in (direct, via):
                    await bot.send(sub(*chans, req_id="7"))
                    got = await bot.wait(acks(), 5)
                    want = [{"channel": c, "instId": i} for c, i in chans]
                    assert [a["arg"] for a in got] == want
                    assert all(a["id"] == "7" for a in got)
                await via.wait(data_of("tickers"))
                await srv.until(lambda: len(srv.subscribers("books", "BTC-USDT")) == 2)
                await srv.book_update("BTC-USDT", bids=[("99.5", "0")], asks=[("100.9", "2")])
                await srv.trade("BTC-USDT", "100.9", "0.5")
                await srv.book_update(
                    "BTC-USDT", seq=srv.books["BTC-USDT"].seq, prev=srv.books["BTC-USDT"].seq
                )  # unchanged book
                await srv.book_update("BTC-USDT", bids=[("99.7", "1")], seq=17)  # seqId reset
                await srv.book_update("BTC-USDT", asks=[("101.5", "0")])
                tid = await srv.trade("BTC-USDT", "100.9", "0.25", "sell")
                for bot in (direct, via):
                    await bot.wait(lambda m: m["data"][0].get("tradeId") == str(tid))
                    await bot.wait(lambda m: m["data"][0]["seqId"] == 20, 3)  # books + 2 tops
                for channel, _ in chans:
                    assert via.where(data_of(channel)) == direct.where(data_of(channel)), channel
                assert via.where(lambda m: m["event"] == "error") == []
                # one upstream connection, subscribed once per channel, never again
                ups = [c for c in srv.live if c.subs]
                assert len(ups) == 2 and srv.connects == 2

    asyncio.run(scenario())


def test_late_joiner_gets_the_current_book_and_the_chain_continues() -> None:
    async def scenario() -> None:
        async with OkxServer("pretty") as srv, gateway("okx", srv.url) as gw:
            url = gw.url("venue") + PUBLIC
            async with connect(url) as a:
                first = Inbox(a)
                await first.send(sub(("books", "BTC-USDT"), ("books5", "BTC-USDT")))
                await first.wait(data_of("books5"))
                for k in range(5):
                    await srv.book_update(
                        "BTC-USDT", bids=[(f"9{k}.1", "3")], asks=[(f"10{k + 1}.5", "0")]
                    )
                seq = srv.books["BTC-USDT"].seq
                await first.wait(lambda m: m["data"][0]["seqId"] == seq, 2)
                async with connect(srv.url + PUBLIC) as d, connect(url) as b:
                    direct, late = Inbox(d), Inbox(b)
                    for bot in (direct, late):
                        await bot.send(sub(("books", "BTC-USDT"), ("books5", "BTC-USDT")))
                        await bot.wait(data_of("books"))
                        await bot.wait(data_of("books5"))
                    [want] = direct.where(data_of("books"))
                    [got] = late.where(data_of("books"))
                    assert got["action"] == "snapshot" and got["data"][0]["seqId"] == seq
                    for side in ("bids", "asks"):
                        assert got["data"][0][side] == want["data"][0][side], side
                    assert late.where(data_of("books5")) == direct.where(data_of("books5"))
                    await srv.book_update("BTC-USDT", bids=[("98.5", "0")])
                    for bot in (direct, late, first):
                        [upd] = await bot.wait(
                            lambda m: (
                                m.get("action") == "update" and m["data"][0]["prevSeqId"] == seq
                            )
                        )
                        assert upd["data"][0]["seqId"] == srv.books["BTC-USDT"].seq
                # one snapshot upstream for the whole run
                subs = [t for texts in srv.received.values() for t in texts if 'books"' in t]
                assert sum('"subscribe"' in t for t in subs) == 2  # the gateway's and direct's

    asyncio.run(scenario())


def test_errors_reach_the_bot_in_okx_format_with_its_id() -> None:
    async def scenario() -> None:
        async with OkxServer() as srv, gateway("okx", srv.url) as gw:
            url = gw.url("venue") + PUBLIC
            async with connect(srv.url + PUBLIC) as d, connect(url) as g:
                direct, via = Inbox(d), Inbox(g)
                for bot in (direct, via):
                    await bot.send(sub(("trades", "FOO-USDT"), req_id="e1"))
                    [err] = await bot.wait(lambda m: m["event"] == "error")
                    assert err["code"] == "60018" and err["id"] == "e1", err
                    assert err["connId"] and "FOO-USDT" in err["msg"]
                    await bot.send("ping")
                    await bot.wait(lambda m: m == "pong")

    asyncio.run(scenario())


def test_one_bots_bad_instrument_does_not_fail_another_bots_subscription() -> None:
    """OKX answers a request with one bad arg by one error and subscribes none of its args:
    the gateway must not put two bots' args in one request."""

    async def scenario() -> None:
        async with OkxServer() as srv, gateway("okx", srv.url) as gw:
            url = gw.url("venue") + PUBLIC
            async with connect(url) as a, connect(url) as b:
                good, bad = Inbox(a), Inbox(b)
                await asyncio.gather(
                    good.send(sub(("trades", "BTC-USDT"), ("trades", "ETH-USDT"), req_id="g")),
                    bad.send(sub(("trades", "FOO-USDT"), req_id="b")),
                )
                await good.wait(acks(), 2)
                [err] = await bad.wait(lambda m: m["event"] == "error")
                assert err["id"] == "b" and err["code"] == "60018"
                tid = await srv.trade("ETH-USDT", "10", "1")
                await good.wait(lambda m: m["data"][0]["tradeId"] == str(tid))
                assert good.where(lambda m: m["event"] == "error") == []

    asyncio.run(scenario())


def test_a_quiet_upstream_outlives_the_30_s_idle_rule() -> None:
    """OKX closes a connection with nothing pushed and no ping for 30 s (here 1 s): the
    gateway's own ``ping`` keeps a quiet channel's upstream open."""

    async def scenario() -> None:
        async with (
            OkxServer(idle=1.0) as srv,
            gateway("okx", srv.url, app_ping_interval=0.3) as gw,
            connect(gw.url("venue") + PUBLIC) as a,
        ):
            bot = Inbox(a)
            await bot.send(sub(("trades", "BTC-USDT")))
            await bot.wait(acks())
            await srv.until(lambda: srv.pings >= 8, 10, "gateway pings")
            assert srv.idle_closes == 0 and srv.connects == 1
            tid = await srv.trade("BTC-USDT", "100", "1")
            await bot.wait(lambda m: m["data"][0]["tradeId"] == str(tid))

    asyncio.run(scenario())


def _book_ok(bot: Inbox, srv: OkxServer, inst: str = "BTC-USDT") -> BookKeeper:
    book = BookKeeper()
    for m in bot.where(data_of("books", inst)):
        book.okx(m)
    server = srv.books[inst]
    assert book.breaks == [], book.breaks
    assert book.same_as(dict(server.bids), dict(server.asks))
    return book


@pytest.mark.parametrize("how", ["notice", "drop"])
def test_books_and_trades_hold_across_a_64008_rotation_and_an_upstream_loss(how: str) -> None:
    """A bot keeps its book by OKX's rules (snapshot resets, ``prevSeqId`` chains) and its
    trades by ``tradeId``: across a 64008 notice (make-before-break) or a lost upstream it
    sees no break it cannot follow, ends with the server's book, and no trade twice."""

    async def scenario() -> None:
        async with (
            OkxServer() as srv,
            gateway("okx", srv.url) as gw,
            connect(gw.url("venue") + PUBLIC) as a,
        ):
            bot = Inbox(a)
            await bot.send(sub(("books", "BTC-USDT"), ("trades", "BTC-USDT")))
            await bot.wait(data_of("books"))
            for k in range(3):
                await srv.book_update("BTC-USDT", bids=[(f"9{k}.5", "2")])
                await srv.trade("BTC-USDT", "100", "1")
            if how == "notice":
                await srv.notice()
                await srv.until(lambda: srv.connects == 2, 10, "the successor")
            else:
                await srv.drop_all()
                await srv.until(lambda: len(srv.subscribers("trades", "BTC-USDT")) == 1, 10)
            for k in range(3):
                await srv.book_update("BTC-USDT", asks=[(f"10{k + 1}.5", "0")])
                await srv.trade("BTC-USDT", "101", "1")
            if how == "notice":
                await srv.until(lambda: len(srv.live) == 1, 10, "the old connection retired")
                await srv.until(lambda: len(srv.subscribers("books", "BTC-USDT")) == 1)
            await srv.book_update("BTC-USDT", bids=[("90.5", "0")])
            tid = await srv.trade("BTC-USDT", "102", "1")
            await bot.wait(lambda m: m["data"][0].get("tradeId") == str(tid))
            await bot.wait(lambda m: m["data"][0].get("seqId") == srv.books["BTC-USDT"].seq)
            _book_ok(bot, srv)
            tids = [m["data"][0]["tradeId"] for m in bot.where(data_of("trades"))]
            assert len(tids) == len(set(tids)), tids
            assert bot.where(lambda m: m["event"] in ("notice", "error")) == []

    asyncio.run(scenario())
