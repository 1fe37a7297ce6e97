"""OKX v5 end to end: in-process wsgate (Gateway) + the OKX simulator, raw WebSocket bots."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.simstack import daemon_head
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.sim import Simulator

PUBLIC = "/ws/v5/public"


def _config(sim: Simulator, tmp: str) -> str:
    return (
        daemon_head(tmp, gateway="linger = 0.5")
        + f"""
[routes.okx]
dialect = "okx"
type = "market_data"
backoff_initial = 0.05
backoff_max = 0.2
min_uptime = 0
app_ping_interval = 0.3
[[routes.okx.endpoints]]
url = "{sim.okx_url}"
[routes.okx_private]
dialect = "okx"
type = "trading"
min_connections = 0
[[routes.okx_private.endpoints]]
url = "{sim.okx_url}"
"""
    )


@asynccontextmanager
async def stack(**okx: Any) -> AsyncIterator[tuple[Gateway, Simulator]]:
    tmp = tempfile.mkdtemp(dir="/tmp")
    tuning = {f"okx_{k}": v for k, v in okx.items()}
    async with (
        Simulator(seed=3, bitfinex=False, binance=False, binance_usdm=False, **tuning) as sim,
        Gateway(parse_config(_config(sim, tmp)), seed=2) as gw,
    ):
        yield gw, sim


async def until(cond: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def recv(ws: ClientConnection, limit: float = 10.0) -> Any:
    raw = await asyncio.wait_for(ws.recv(), limit)
    return raw if raw == "pong" else json.loads(raw)


def sub(*args: tuple[str, str], req_id: str | None = None, op: str = "subscribe") -> str:
    body: dict[str, Any] = {} if req_id is None else {"id": req_id}
    body.update({"op": op, "args": [{"channel": c, "instId": i} for c, i in args]})
    return json.dumps(body)


def upstream_channels(sim: Simulator) -> int:
    return sum(c.channels for c in sim.okx.statistics().connections)


async def until_msg(ws: ClientConnection, pred: Callable[[Any], bool], limit: int = 400) -> Any:
    for _ in range(limit):
        msg = await recv(ws)
        if pred(msg):
            return msg
    raise AssertionError("expected message never arrived")


def test_acks_echo_each_bots_id_and_one_upstream_subscription_is_shared() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            url = gw.url("okx") + PUBLIC
            async with connect(url) as a, connect(url) as b:
                await a.send(sub(("trades", "BTC-USDT"), ("tickers", "BTC-USDT"), req_id="a1"))
                acks = [await until_msg(a, lambda m: m.get("event") == "subscribe") for _ in "ab"]
                assert {json.dumps(x["arg"]) for x in acks} == {
                    '{"channel": "trades", "instId": "BTC-USDT"}',
                    '{"channel": "tickers", "instId": "BTC-USDT"}',
                }
                assert all(x["id"] == "a1" and x["connId"] for x in acks)
                await b.send(sub(("trades", "BTC-USDT")))  # no id: none in the ack
                ack = await until_msg(b, lambda m: m.get("event") == "subscribe")
                assert "id" not in ack and ack["arg"] == {"channel": "trades", "instId": "BTC-USDT"}
                trade = await until_msg(b, lambda m: m.get("arg", {}).get("channel") == "trades")
                assert trade["data"][0]["instId"] == "BTC-USDT"
                assert upstream_channels(sim) == 2
                await b.send("ping")
                assert await until_msg(b, lambda m: m == "pong") == "pong"
                await b.send(sub(("candle1m", "BTC-USDT"), req_id="x"))
                err = await until_msg(b, lambda m: m.get("event") == "error")
                assert err["code"] == "60018" and err["id"] == "x"
                await a.send(sub(("trades", "BTC-USDT"), req_id="u", op="unsubscribe"))
                un = await until_msg(a, lambda m: m.get("event") == "unsubscribe")
                assert un["id"] == "u" and un["arg"]["channel"] == "trades"

    asyncio.run(scenario())


def _book_chain_ok(msgs: list[dict[str, Any]]) -> int:
    """Check every update's prevSeqId against the previous push; returns the snapshots seen."""
    seq = None
    snapshots = 0
    for m in msgs:
        push = m["data"][0]
        if m.get("action") == "snapshot":
            snapshots += 1
            assert push["prevSeqId"] == -1
        else:
            assert seq is not None and push["prevSeqId"] == seq, (seq, push["prevSeqId"])
        seq = push["seqId"]
    return snapshots


async def _books(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        m = await recv(ws)
        assert not (isinstance(m, dict) and m.get("event") == "error"), m
        if isinstance(m, dict) and "data" in m and m["arg"]["channel"] == "books":
            out.append(m)
    return out


def test_late_joiner_gets_the_gateways_book_and_the_chain_holds() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            url = gw.url("okx") + PUBLIC
            async with connect(url) as a:
                await a.send(sub(("books", "ETH-USDT")))
                first = await _books(a, 20)
                assert first[0]["action"] == "snapshot"
                assert _book_chain_ok(first) == 1
                async with connect(url) as b:
                    await b.send(sub(("books", "ETH-USDT"), req_id="late"))
                    late = await _books(b, 20)
                assert late[0]["action"] == "snapshot" and _book_chain_ok(late) == 1
                # The gateway's snapshot is the book the first bot has at that seqId.
                assert len(late[0]["data"][0]["bids"]) > 5
                assert upstream_channels(sim) == 1

    asyncio.run(scenario())


def test_drop_and_notice_64008_are_invisible_to_bots() -> None:
    async def scenario() -> None:
        async with stack(notice_grace=0.5) as (gw, sim):
            url = gw.url("okx") + PUBLIC
            async with connect(url) as ws:
                await ws.send(sub(("books", "BTC-USDT"), ("trades", "BTC-USDT")))
                books: list[dict[str, Any]] = []
                trades: list[str] = []

                async def take(n: int) -> None:
                    got = 0
                    while got < n:
                        m = await recv(ws)
                        assert not (isinstance(m, dict) and m.get("event") in ("error", "notice"))
                        if isinstance(m, dict) and "data" in m:
                            ch = m["arg"]["channel"]
                            if ch == "books":
                                books.append(m)
                                got += 1
                            else:
                                trades.extend(t["tradeId"] for t in m["data"])

                await take(15)
                sim.okx.faults.drop()
                await take(30)
                opened = sim.okx.statistics().connections_total
                sim.okx.fault_info(20051)  # notice 64008, close 0.5 s later
                await take(40)
                assert sim.okx.statistics().connections_total > opened  # rotated
                _book_chain_ok(books)  # updates chain; a re-homed channel starts a snapshot
                ids = [int(t) for t in trades]
                assert ids == sorted(ids) and len(set(ids)) == len(ids)  # never repeated

    asyncio.run(scenario())


def test_upstream_pings_keep_a_quiet_connection_past_the_idle_close() -> None:
    async def scenario() -> None:
        async with stack(idle_close=1.0) as (gw, sim), connect(gw.url("okx") + PUBLIC) as ws:
            # No subscription at all: only the gateway's pings keep the upstream open.
            await until(lambda: sim.okx.statistics().connections_open == 1)
            total = sim.okx.statistics().connections_total
            await asyncio.sleep(2.5)  # the idle limit must pass; nothing to wait on
            assert sim.okx.statistics().connections_total == total
            await ws.send("ping")
            assert await recv(ws) == "pong"

    asyncio.run(scenario())


def test_private_sessions_are_dedicated_relays() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            url = gw.url("okx_private") + "/ws/v5/private"
            login = {
                "op": "login",
                "args": [{"apiKey": "k", "passphrase": "p", "timestamp": "1", "sign": "s"}],
            }
            async with connect(url) as ws:
                await ws.send(json.dumps(login))
                reply = await recv(ws)
                assert reply["event"] == "login" and reply["code"] == "0"
                await ws.send(sub(("orders", "BTC-USDT"), req_id="o"))
                ack = await recv(ws)
                assert ack["event"] == "subscribe" and ack["id"] == "o"
            # A market-data route refuses private sessions at the handshake, saying why.
            with pytest.raises(InvalidStatus) as refused:
                await connect(gw.url("okx") + "/ws/v5/private")
            assert refused.value.response.status_code == 403

    asyncio.run(scenario())
