"""Binance USD-M user data and the futures WebSocket API through wsgate, against the simulator.

Real sockets both ways: the listen key is created, kept alive and closed with
``/fapi/v1/listenKey`` through the route's REST pass-through; ``/private/ws?listenKey=``,
``/private/ws/<key>`` and the legacy ``/ws/<key>`` sessions are relayed on a dedicated upstream
each (the legacy one at ``/private/ws/<key>``, where fstream carries user data now); an order
placed on ``/ws-fapi/v1`` shows up as ``ORDER_TRADE_UPDATE`` and ``ACCOUNT_UPDATE``; the key
never reaches a log line, ``status`` or the event stream; an upstream drop closes the private
sessions with 1013 and nothing is sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.e2e.test_binance_user_data import API_KEY, _until, recv_json, signed
from tests.simstack import Route, stack_config
from wsgate import Gateway
from wsgate.config import ConfigError, parse_config
from wsgate.control.api import status
from wsgate.sim import Simulator

ROUTES = {
    "usdm": Route("binance_usdm"),
    "usdm_user": Route("binance_usdm_user"),
    "usdm_trade": Route("binance_usdm_trade"),
}
HDR = {"X-MBX-APIKEY": API_KEY}


def _sim() -> Simulator:
    return Simulator(seed=13, bitfinex=False, binance=False, okx=False, bybit=False)


def _order(rid: str, qty: str = "0.01") -> str:
    return signed("order.place", rid, symbol="BTCUSDT", side="BUY", type="MARKET", quantity=qty)


async def _events(ws: Any, kinds: set[str]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while kinds - {e.get("e") for e in got}:
        got.append(await recv_json(ws))
    return got


def test_listen_key_user_streams_and_ws_api_orders(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wsgate")

    async def scenario() -> str:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with _sim() as sim:
            usdm = sim.binance_usdm
            async with Gateway(parse_config(stack_config(sim, tmp, ROUTES)), seed=2) as gw:
                rest = "http" + gw.url("usdm_user")[2:] + "/fapi/v1/listenKey"
                async with httpx.AsyncClient(timeout=10) as http:
                    r = await http.post(rest, headers=HDR)
                    assert r.status_code == 200, r.text
                    key = r.json()["listenKey"]
                    # Keepalive as fapi takes it (no parameter) and as python-binance sends it.
                    r = await http.put(rest, headers=HDR)
                    assert r.status_code == 200 and r.json() == {"listenKey": key}
                    r = await http.put(rest, data={"listenKey": key}, headers=HDR)
                    assert r.status_code == 200
                    assert usdm.accounts.keepalives == 2
                    r = await http.put(rest)  # no API key: the exchange's refusal, passed on
                    assert r.status_code == 401 and r.json()["code"] == -2015
                    market = "http" + gw.url("usdm")[2:] + "/fapi/v1/listenKey"
                    r = await http.post(market, headers=HDR)
                    assert r.status_code == 405 and "/fapi/v1/listenKey" in r.text
                    for bad in (f"/private/ws?listenKey={key}", f"/ws/{key}", "/ws-fapi/v1"):
                        with pytest.raises(InvalidStatus) as exc:
                            await connect(gw.url("usdm") + bad)
                        assert exc.value.response.status_code == 403

                    user = gw.url("usdm_user")
                    async with (
                        connect(f"{user}/private/ws?listenKey={key}") as new_style,
                        connect(f"{user}/private/ws/{key}") as path_style,
                        connect(f"{user}/ws/{key}") as legacy,
                        connect(
                            f"{user}/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE"
                        ) as filtered,
                        connect(gw.url("usdm_trade") + "/ws-fapi/v1") as api,
                    ):
                        rt = gw.daemon.routes["usdm_user"]
                        await _until(lambda: len(rt.relays) == 4)
                        assert not rt.pool  # no pooled probe on a private route
                        paths = [c.path for c in usdm.connections.values()]
                        # The legacy path went upstream where user data lives now.
                        assert paths.count(f"/private/ws/{key}") == 2
                        await _until(lambda: len(usdm.subscribers.get(key, {})) == 4)
                        await api.send(_order("o1"))
                        placed = await recv_json(api)
                        assert placed["status"] == 200, placed
                        assert placed["result"]["status"] == "FILLED"
                        oid = placed["result"]["orderId"]
                        for ws in (new_style, path_style, legacy):
                            evs = await _events(ws, {"ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"})
                            updates = [e["o"] for e in evs if e["e"] == "ORDER_TRADE_UPDATE"]
                            assert [(u["x"], u["i"]) for u in updates] == [
                                ("NEW", oid),
                                ("TRADE", oid),
                            ]
                        filtered_evs = [await recv_json(filtered) for _ in range(2)]
                        assert [e["e"] for e in filtered_evs] == ["ORDER_TRADE_UPDATE"] * 2
                        # A forged order is the exchange's answer, relayed untouched.
                        forged = json.loads(_order("o2", "1"))
                        forged["params"]["quantity"] = "100"
                        await api.send(json.dumps(forged))
                        assert (await recv_json(api))["error"]["code"] == -1022
                        assert usdm.accounts.orders_placed == 1
                        doc = json.dumps(status(gw.daemon))
                        conns = json.dumps(
                            [c.statistics().__dict__ for c in rt.connections()], default=str
                        )
                        events = json.dumps([e.as_dict() for e in gw.daemon.events.recent()])
                        r = await http.delete(rest, headers=HDR)
                        assert r.status_code == 200
                        assert (await recv_json(new_style))["e"] == "listenKeyExpired"
                for text in (doc, conns, events):
                    assert key not in text
                assert "***" in conns  # the relay URLs are there, masked
                return key

    key = asyncio.run(scenario())
    assert key not in caplog.text


def test_an_upstream_drop_closes_private_sessions_and_nothing_is_sent_again() -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with _sim() as sim:
            usdm = sim.binance_usdm
            async with Gateway(parse_config(stack_config(sim, tmp, ROUTES)), seed=3) as gw:
                rest = "http" + gw.url("usdm_user")[2:] + "/fapi/v1/listenKey"
                async with httpx.AsyncClient(timeout=10) as http:
                    key = (await http.post(rest, headers=HDR)).json()["listenKey"]
                async with (
                    connect(gw.url("usdm_user") + f"/private/ws?listenKey={key}") as user,
                    connect(gw.url("usdm_trade") + "/ws-fapi/v1") as api,
                ):
                    await _until(lambda: len(usdm.subscribers.get(key, {})) == 1)
                    await api.send(_order("o", "0.5"))
                    assert (await recv_json(api))["status"] == 200
                    await _events(user, {"ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"})
                    assert usdm.faults.drop() >= 2
                    for ws in (user, api):
                        await asyncio.wait_for(ws.wait_closed(), 10)
                        assert ws.close_code == 1013  # reconnect and re-authenticate
                rt_user, rt_trade = gw.daemon.routes["usdm_user"], gw.daemon.routes["usdm_trade"]
                await _until(lambda: not rt_user.relays and not rt_trade.relays)
                # Nothing reconnected on the sessions' behalf, no order sent twice.
                private = [
                    c.path
                    for c in usdm.connections.values()
                    if c.path.startswith(("/private", "/ws-fapi"))
                ]
                assert private == []
                assert usdm.accounts.orders_placed == 1

    asyncio.run(scenario())


def _two_hosts(sim: Simulator, tmp: str) -> str:
    """A trading route with fstream and ws-fapi as separate endpoints (here: one simulator)."""
    return stack_config(
        sim,
        tmp,
        {},
        extra=f"""
[routes.fut]
dialect = "binance_usdm"
type = "trading"
[[routes.fut.endpoints]]
name = "fstream"
url = "{sim.binance_usdm_url}"
[[routes.fut.endpoints]]
name = "ws-fapi"
url = "{sim.binance_usdm_url}"
serves = "ws_api"
""",
    )


def test_ws_api_sessions_go_to_the_ws_api_endpoint_and_streams_never_do() -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with _sim() as sim, Gateway(parse_config(_two_hosts(sim, tmp)), seed=4) as gw:
            rt = gw.daemon.routes["fut"]
            key = "K" * 20 + "1" * 20
            for _ in range(2):
                async with (
                    connect(gw.url("fut") + "/ws-fapi/v1") as api,
                    connect(gw.url("fut") + f"/private/ws/{key}"),
                ):
                    await _until(lambda: len(rt.relays) == 2)
                    by_path = {
                        c.settings.url.split("/", 3)[3].split("?")[0]: c.settings.endpoint
                        for c in rt.relays.values()
                    }
                    assert by_path == {"ws-fapi/v1": "ws-fapi", f"private/ws/{key}": "fstream"}
                    await api.send(json.dumps({"id": 1, "method": "time"}))
                    assert (await recv_json(api))["status"] == 200
                await _until(lambda: not rt.relays)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        ('dialect = "binance_usdm"\ntype = "market_data"', "binance_usdm market_data"),
        ('dialect = "bitfinex"\ntype = "trading"', "bitfinex trading"),
    ],
)
def test_config_refuses_a_ws_api_endpoint_where_no_ws_api_session_exists(
    route: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(
            f"""
[routes.r]
{route}
[[routes.r.endpoints]]
url = "wss://fstream.binance.com"
[[routes.r.endpoints]]
url = "wss://ws-fapi.binance.com"
serves = "ws_api"
"""
        )
    text = str(exc.value)
    assert "routes.r.endpoints[1].serves" in text and needle in text
    with pytest.raises(ConfigError) as typo:
        parse_config(
            """
[routes.r]
dialect = "binance_usdm"
type = "trading"
[[routes.r.endpoints]]
url = "wss://ws-fapi.binance.com"
serves = "wsapi"
"""
        )
    assert "ws_api" in str(typo.value)
