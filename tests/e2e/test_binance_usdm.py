"""Binance USD-M end to end: in-process wsgate (Gateway) + the fstream simulator.

The simulator serves the 2026 path split (a stream on the wrong path is acknowledged and
silent), ``pu``-chained depth and ``/fapi/v1/depth``; these tests check that bots get every
stream whatever path they connect to, that one upstream subscription serves them all, and
that the ``pu`` chain a bot sees survives upstream drops and lifetime closes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests import simstack
from tests.simstack import Route
from wsgate import Gateway
from wsgate.sim import Simulator

ROUTES = {
    "usdm": Route("binance_usdm", backoff_initial=0.05, backoff_max=0.2, min_uptime=0),
    "usdm_user": Route("binance_usdm_user", min_connections=0),
}


@asynccontextmanager
async def stack(**usdm: Any) -> AsyncIterator[tuple[Gateway, Simulator]]:
    routes = ROUTES
    if usdm:
        base = ROUTES["usdm"]
        routes = {**ROUTES, "usdm": Route("binance_usdm", **{**base.options, **usdm})}
    only = {"bitfinex": False, "binance": False, "okx": False, "bybit": False}
    async with simstack.stack(routes, seed=7, gateway_seed=2, gateway="linger = 0.5", **only) as (
        gw,
        sim,
    ):
        yield gw, sim


async def until(cond: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def recv_json(ws: ClientConnection, limit: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), limit))


def _upstream(sim: Simulator) -> dict[str, int]:
    """Streams per upstream path prefix at the simulator."""
    out: dict[str, int] = {}
    for c in sim.binance_usdm.statistics().connections:
        prefix = c.path.split("/")[1]
        out[prefix] = out.get(prefix, 0) + c.channels
    return out


async def _collect(ws: ClientConnection, want: set[str], limit: float = 10.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with asyncio.timeout(limit):
        while not want <= set(seen):
            msg = json.loads(await ws.recv())
            if "stream" in msg:
                seen.setdefault(msg["stream"], msg["data"])
    return seen


def test_every_stream_arrives_on_any_path_and_is_placed_on_its_upstream_path() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            streams = "btcusdt@aggTrade/btcusdt@depth@100ms/btcusdt@markPrice@1s/btcusdt@bookTicker"
            # A bot on /market asks for book streams too; a legacy /stream bot for all of them.
            url_a = gw.url("usdm") + f"/market/stream?streams={streams}"
            url_b = gw.url("usdm") + f"/stream?streams={streams}"
            async with connect(url_a) as a, connect(url_b) as b:
                want = set(streams.split("/"))
                got_a, got_b = await asyncio.gather(_collect(a, want), _collect(b, want))
                assert got_a["btcusdt@aggTrade"]["e"] == "aggTrade"
                assert got_b["btcusdt@markPrice@1s"]["e"] == "markPriceUpdate"
                assert "pu" in got_a["btcusdt@depth@100ms"]
                # one upstream subscription per stream, each on the path that carries it
                assert _upstream(sim) == {"public": 2, "market": 2}

    asyncio.run(scenario())


def test_raw_session_gets_payloads_and_subscribe_ids_as_on_spot() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim), connect(gw.url("usdm") + "/public/ws") as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@depth5@100ms"], "id": 7})
            )
            assert await recv_json(ws) == {"result": None, "id": 7}
            ev = await recv_json(ws)
            assert ev["e"] == "depthUpdate" and len(ev["b"]) == 5
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["x@nope"], "id": 8}))
            err = await recv_json(ws)
            while "id" not in err:
                err = await recv_json(ws)
            assert err["id"] == 8 and err["error"]["code"] == 2
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            reply = await recv_json(ws)
            while reply.get("id") != 9:
                reply = await recv_json(ws)
            assert reply["result"] == ["ethusdt@depth5@100ms"]

    asyncio.run(scenario())


async def _depth_chain(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg.get("e") == "depthUpdate":
            events.append(msg)
    return events


def _assert_chained(events: list[dict[str, Any]]) -> None:
    for prev, ev in itertools.pairwise(events):
        assert ev["pu"] == prev["u"], (prev, ev)


def test_pu_chain_survives_every_upstream_drop_and_a_lifetime_close() -> None:
    async def scenario() -> None:
        async with (
            stack() as (gw, sim),
            connect(gw.url("usdm") + "/public/ws/btcusdt@depth@100ms") as ws,
        ):
            before = await _depth_chain(ws, 10)
            # The bot's REST snapshot through the pass-through lines up with the stream.
            rest = "http" + gw.url("usdm")[2:] + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
            body = await asyncio.to_thread(
                lambda: json.loads(urllib.request.urlopen(rest, timeout=10).read())
            )
            assert body["lastUpdateId"] >= before[0]["u"]
            # Every upstream connection drops and the first reconnects are refused, so the
            # book moves on meanwhile: wsgate must bridge the gap from a REST snapshot.
            sim.binance_usdm.faults.reject_handshakes(503, count=3)
            sim.binance_usdm.faults.drop()
            after_drop = await _depth_chain(ws, 30)
            sim.binance_usdm.fault_server_shutdown()  # the unannounced 24 h close
            after_close = await _depth_chain(ws, 30)
            _assert_chained(before + after_drop + after_close)
            stats = gw.daemon.routes["usdm"].hub
            assert stats is not None and stats.depth is not None
            assert stats.depth.bridges >= 1

    asyncio.run(scenario())


def test_private_session_is_a_dedicated_relay_with_its_listen_key_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsgate")
    key = "A" * 32

    async def scenario() -> None:
        async with stack() as (gw, sim):
            url = gw.url("usdm_user") + f"/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE"
            async with connect(url):
                await until(
                    lambda: any(
                        c.path.startswith("/private/ws?listenKey=" + key)
                        for c in sim.binance_usdm.statistics().connections
                    )
                )
            public = gw.url("usdm") + f"/private/ws?listenKey={key}"
            # A market-data route refuses user data at the handshake, saying why.
            with pytest.raises(InvalidStatus) as refused:
                await connect(public)
            assert refused.value.response.status_code == 403
            assert b"user_data or trading route" in refused.value.response.body

    asyncio.run(scenario())
    assert caplog.records and key not in caplog.text  # the listen key is never logged


def test_lifetime_rotation_is_make_before_break_on_both_paths() -> None:
    """max_lifetime (fstream closes every connection at 24 h) rotates each connection to a
    successor on the same path before it goes: depth keeps its pu chain, aggTrade ids never
    repeat and never stop."""

    async def scenario() -> None:
        async with stack(max_lifetime=1.5) as (gw, sim):
            url = gw.url("usdm") + "/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade"
            async with connect(url) as ws:
                depth: list[dict[str, Any]] = []
                aggs: list[int] = []
                async with asyncio.timeout(30):
                    while len(depth) < 50 or len(aggs) < 25:
                        msg = await recv_json(ws)
                        if msg["stream"].endswith("@depth@100ms"):
                            depth.append(msg["data"])
                        else:
                            aggs.append(msg["data"]["a"])
                _assert_chained(depth)
                assert aggs == sorted(aggs) and len(set(aggs)) == len(aggs)
                hub = gw.daemon.routes["usdm"].hub
                assert hub is not None and hub.placement.moves_done >= 2  # both paths moved
                paths = {c.path.split("?")[0] for c in sim.binance_usdm.statistics().connections}
                assert paths == {"/public/stream", "/market/stream"}

    asyncio.run(scenario())
