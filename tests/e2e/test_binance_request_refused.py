"""A Binance SUBSCRIBE is taken or refused as a whole, as Binance itself does, spot and USD-M.

``{"method":"SUBSCRIBE","params":["btcusdt@trade","nosuch@trade"],"id":1}`` sent to
Binance gets ``{"error":{"code":2,...},"id":1}`` and subscribes nothing. Through wsgate the
streams of a request are placed one by one (some may be live and shared already), so the
gateway holds a request's confirmed streams until the request is answered: the bot sees
no data before ``{"result":null}``, and after an error it holds none of the request's
streams (``LIST_SUBSCRIPTIONS`` is empty, nothing of them flows, the exchange is
unsubscribed once nobody else wants them).

Real bots (websockets clients) against the built-in simulator, and against a hand-written
variant server (``tests/runtime/fake_binance.py``) that answers in the documented flat
error form and lets the test hold an answer while the request's other stream flows.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests import simstack
from tests.e2e.test_sharing import recv_json, recv_until, until
from tests.runtime.drill import rig, route_toml, run, wait_for
from tests.runtime.fake_binance import FakeBinance
from tests.simstack import Route
from wsgate.runtime.routing.hub import Hub

# route kind -> (dialect, the bot's path, a stream served, another one, one refused)
VENUES = {
    "binance": ("binance", "/ws", "btcusdt@trade", "ethusdt@trade", "nosuch@trade"),
    "binance_usdm": (
        "binance_usdm",
        "/market/ws",
        "btcusdt@aggTrade",
        "ethusdt@aggTrade",
        "nosuch@aggTrade",
    ),
}


def _subscribe(streams: list[str], rid: int) -> str:
    return json.dumps({"method": "SUBSCRIBE", "params": streams, "id": rid})


async def _listed(ws: ClientConnection, rid: int) -> Any:
    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": rid}))
    return await recv_until(ws, lambda m: isinstance(m, dict) and m.get("id") == rid)


def _sessions(hub: Hub, stream: str) -> int:
    """Sessions of the gateway's shared subscription to ``stream`` (0 when there is none)."""
    for sub in hub.registry.subscriptions():
        if getattr(sub.key, "name", "") == stream:
            return len(sub.sessions)
    return 0


@pytest.mark.parametrize("kind", VENUES)
def test_one_refused_stream_refuses_the_request_and_its_live_shared_stream(kind: str) -> None:
    async def scenario() -> None:
        _, path, good, other, bad = VENUES[kind]
        async with simstack.stack({"r": Route(kind, rest=False)}, gateway="linger = 0.5") as (
            gw,
            _sim,
        ):
            hub = gw.daemon.routes["r"].hub
            assert hub is not None
            url = gw.url("r") + path
            async with connect(url) as b, connect(url) as a:
                # b keeps the stream live and shared the whole time.
                await b.send(_subscribe([good], 1))
                assert await recv_json(b) == {"result": None, "id": 1}
                assert "e" in await recv_json(b)
                # a asks for it together with a stream the exchange refuses: the request's
                # error is the first thing a receives (no data of the live stream before it).
                await a.send(_subscribe([good, bad], 2))
                refused = await recv_json(a)
                assert refused["id"] == 2 and refused["error"]["code"] == 2, refused
                assert bad in refused["error"]["msg"]
                assert await _listed(a, 3) == {"result": [], "id": 3}
                assert _sessions(hub, good) == 1  # b's alone
                # What a receives from now on is only what it asks for next.
                await a.send(_subscribe([other], 4))
                assert await recv_json(a) == {"result": None, "id": 4}
                symbols = {(await recv_json(a))["s"] for _ in range(20)}
                assert symbols == {other.split("@")[0].upper()}
                assert (await recv_json(b))["s"] == good.split("@")[0].upper()  # b unaffected

    run(scenario())


def _variant_route(kind: str, url: str) -> str:
    dialect = VENUES[kind][0]
    return route_toml("r", url, dialect=dialect, linger=0.5, backoff_initial=0.2)


@pytest.mark.parametrize("kind", VENUES)
def test_variant_server_refusing_late_while_the_other_stream_flows(kind: str) -> None:
    async def scenario() -> None:
        _, path, good, _other, bad = VENUES[kind]
        async with FakeBinance() as ex, rig(_variant_route(kind, ex.url)) as r:
            hub = r.routes["r"].hub
            assert hub is not None
            ex.held = {bad}
            async with connect(r.url("r", path)) as a:
                await a.send(_subscribe([good, bad], 7))
                # The good stream is confirmed and flowing upstream; the refusal waits.
                await wait_for(lambda: ex.parked() == 1 and good in ex.subscribed())
                start = hub.statistics().frames_in
                await wait_for(lambda: hub.statistics().frames_in >= start + 5)
                await ex.release()
                refused = await recv_json(a)  # the first frame a gets: no data before it
                assert refused == {
                    "error": {"code": 2, "msg": f"Invalid request: unknown stream {bad}"},
                    "id": 7,
                }
                assert await _listed(a, 8) == {"result": [], "id": 8}
                assert _sessions(hub, good) == 0
                # Nobody wants it: after the linger the exchange is unsubscribed too, as if
                # the bot had talked to it directly.
                await until(lambda: good not in ex.subscribed())

    run(scenario())


@pytest.mark.parametrize("kind", VENUES)
def test_variant_server_a_request_taken_as_a_whole_flows_after_its_answer(kind: str) -> None:
    async def scenario() -> None:
        _, path, good, other, _bad = VENUES[kind]
        async with FakeBinance() as ex, rig(_variant_route(kind, ex.url)) as r:
            hub = r.routes["r"].hub
            assert hub is not None
            ex.held = {other}
            async with connect(r.url("r", path)) as a:
                await a.send(_subscribe([good, other], 3))
                await wait_for(lambda: ex.parked() == 1 and good in ex.subscribed())
                start = hub.statistics().frames_in
                await wait_for(lambda: hub.statistics().frames_in >= start + 5)
                await ex.release()
                assert await recv_json(a) == {"result": None, "id": 3}  # before any data
                want = {s.split("@")[0].upper() for s in (good, other)}
                seen: set[str] = set()
                for _ in range(200):
                    seen.add((await recv_json(a))["s"])
                    if seen == want:
                        break
                assert seen == want
                assert await _listed(a, 4) == {"result": [good, other], "id": 4}

    run(scenario())
