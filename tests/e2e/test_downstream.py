"""Downstream security and limits, and authenticated sessions (dedicated relays)."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.test_sharing import recv_json, recv_until, run, stack
from tests.simstack import stack_config
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.sim import Simulator

AUTH_ROUTE = """
[routes.trade]
dialect = "bitfinex"
type = "trading"
min_connections = 0
token_env = "WSGATE_TEST_TOKEN"
max_sessions = 2
[[routes.trade.endpoints]]
url = "{url}"
"""


def _auth_msg(key: str) -> str:
    return json.dumps(
        {"event": "auth", "apiKey": key, "authSig": "sig", "authPayload": "AUTH1", "authNonce": 1}
    )


async def _status_of(url: str, **kw: object) -> int:
    try:
        async with connect(url, **kw):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_tokens_max_sessions_and_auth_relay(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsgate")
    monkeypatch.setenv("WSGATE_TEST_TOKEN", "s3cret")

    async def scenario() -> None:
        async with Simulator(seed=21) as sim:
            tmp = tempfile.mkdtemp(dir="/tmp")
            text = stack_config(sim, tmp, extra=AUTH_ROUTE.format(url=sim.bitfinex_url))
            async with Gateway(parse_config(text), seed=3) as gw:
                url = gw.url("trade")
                assert await _status_of(url) == 401
                assert await _status_of(url + "?token=wrong") == 401
                hdr = {"Authorization": "Bearer s3cret"}
                async with connect(url, additional_headers=hdr) as bot:
                    info = await recv_json(bot)
                    assert info["event"] == "info"
                    await bot.send(_auth_msg("sim-key"))
                    ok = await recv_until(bot, lambda m: isinstance(m, dict))
                    assert ok["event"] == "auth" and ok["status"] == "OK"
                    relays = gw.daemon.routes["trade"].relays
                    assert len(relays) == 1  # a dedicated upstream for this session
                    order = [
                        0,
                        "on",
                        None,
                        {
                            "type": "LIMIT",
                            "symbol": "tBTCUSD",
                            "amount": "0.1",
                            "price": "100",
                            "cid": 7,
                        },
                    ]
                    await bot.send(json.dumps(order))
                    note = await recv_until(
                        bot, lambda m: isinstance(m, list) and m[1] in ("n", "on")
                    )
                    assert note[0] == 0
                    async with connect(url + "?token=s3cret") as second:
                        await recv_json(second)
                        assert await _status_of(url + "?token=s3cret") == 503  # max_sessions 2
                    # Upstream lost: the session is closed 1013 and nothing is replayed.
                    sent_before = sum(
                        c.messages_received for c in sim.bitfinex.statistics().connections
                    )
                    sim.bitfinex.faults.drop()
                    with pytest.raises(ConnectionClosed):
                        while True:
                            await asyncio.wait_for(bot.recv(), 10)
                    assert bot.close_code == 1013
                    await asyncio.sleep(0)  # let the relay task finish
                    sent_after = sum(
                        c.messages_received for c in sim.bitfinex.statistics().connections
                    )
                    assert sent_after <= sent_before
        assert "sim-key" not in caplog.text  # API keys never reach the logs

    run(scenario)


def test_market_data_route_rejects_auth_and_origin_allow_list() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            url = gw.url("bitfinex")
            async with connect(url) as bot:
                await recv_json(bot)
                await bot.send(_auth_msg("sim-key"))
                reply = await recv_json(bot)
                assert reply["event"] == "auth" and reply["status"] == "FAILED"
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(bot.recv(), 10)
                assert bot.close_code == 1008
            import dataclasses

            gw.daemon.gateway.cfg = dataclasses.replace(
                gw.daemon.gateway.cfg, origins=("https://ok.example",)
            )
            assert await _status_of(url, origin="https://evil.example") == 403
            assert await _status_of(url, origin="https://ok.example") == 101
            assert await _status_of(gw.url("bitfinex") + "/nope/path") == 404

    run(scenario)


def test_client_message_rate_limit_closes_1008() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            gw.daemon.env.client_messages_per_second = 5
            async with connect(gw.url("bitfinex")) as bot:
                await recv_json(bot)
                with pytest.raises(ConnectionClosed):
                    for i in range(50):
                        await bot.send(json.dumps({"event": "ping", "cid": i}))
                    while True:
                        await asyncio.wait_for(bot.recv(), 10)
                assert bot.close_code == 1008

    run(scenario)
