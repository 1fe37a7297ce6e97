"""Binance SUBSCRIBE answers come when the exchange answered, spot and USD-M, with real bots.

A bot's ``{"result":null,"id":N}`` means its streams are live: it is sent when the exchange
confirmed them (at once when the stream is already live and shared), and a stream the
exchange refuses (an unknown symbol) gets the venue's error with the request's id instead,
never a success first. When it comes is the registry's timeout policy
(``core/subscriptions.py``); the simulator is made slow or refusing by wrapping its handler.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests import simstack
from tests.e2e.test_sharing import recv_json, recv_until, run, until
from tests.simstack import Route
from wsgate.sim.binance import BinanceSim

# (route kind, the bot's path, a stream the simulator serves, one it refuses: unknown symbol)
VENUES = {
    "binance": ("binance", "/ws", "btcusdt@trade", "zzzusdt@trade"),
    "binance_usdm": ("binance_usdm", "/market/ws", "btcusdt@aggTrade", "zzzusdt@aggTrade"),
}


def _venue(sim: Any, kind: str) -> BinanceSim:
    venue = sim.binance if kind == "binance" else sim.binance_usdm
    assert isinstance(venue, BinanceSim)
    return venue


async def _answer(ws: ClientConnection) -> Any:
    """The next message that answers a request (data frames skipped)."""
    return await recv_until(ws, lambda m: isinstance(m, dict) and "id" in m)


def _subscribe(stream: str, rid: int) -> str:
    return json.dumps({"method": "SUBSCRIBE", "params": [stream], "id": rid})


@pytest.mark.parametrize("kind", VENUES)
def test_an_unknown_symbol_gets_the_venues_error_and_no_success(kind: str) -> None:
    async def scenario() -> None:
        _, path, good, unknown = VENUES[kind]
        routes = {"r": Route(kind, rest=False)}
        async with simstack.stack(routes, gateway="linger = 0.5") as (gw, sim):
            venue = _venue(sim, kind)
            async with connect(gw.url("r") + path) as a, connect(gw.url("r") + path) as b:
                await a.send(_subscribe(unknown, 5))
                refused = await _answer(a)
                assert refused["id"] == 5 and refused["error"]["code"] == 2, refused
                assert unknown in refused["error"]["msg"]  # the exchange's own words
                await a.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 6}))
                assert await _answer(a) == {"result": [], "id": 6}
                await a.send(_subscribe(good, 7))
                assert await _answer(a) == {"result": None, "id": 7}
                assert "e" in await recv_json(a)  # its data follows the answer
                # Live and shared: the second bot is answered without asking the exchange.
                asked = venue.statistics().messages_received
                await b.send(_subscribe(good, 8))
                assert await _answer(b) == {"result": None, "id": 8}
                assert venue.statistics().messages_received == asked

    run(scenario)


@pytest.mark.parametrize("kind", VENUES)
def test_a_slow_exchange_answer_is_waited_for_by_every_bot_asking(kind: str) -> None:
    async def scenario() -> None:
        _, path, good, _ = VENUES[kind]
        routes = {"r": Route(kind, rest=False)}
        async with simstack.stack(routes, gateway="linger = 0.5") as (gw, sim):
            venue = _venue(sim, kind)
            answer: Callable[[Any, str | bytes], bool] = venue._on_message
            held: list[tuple[Any, str | bytes]] = []

            def slow(conn: Any, message: str | bytes) -> bool:
                if "SUBSCRIBE" in str(message) and good in str(message):
                    held.append((conn, message))  # answered when the test says so
                    return True
                return answer(conn, message)

            venue._on_message = slow  # type: ignore[method-assign]
            async with connect(gw.url("r") + path) as a, connect(gw.url("r") + path) as b:
                await a.send(_subscribe(good, 11))
                await until(lambda: len(held) == 1)
                await b.send(_subscribe(good, 12))  # pending upstream: b waits as well
                # The exchange has not answered: neither bot has an answer.
                for ws in (a, b):
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.5)
                assert len(held) == 1  # one upstream SUBSCRIBE for both
                conn, message = held.pop()
                venue._on_message = answer  # type: ignore[method-assign]
                answer(conn, message)
                assert await _answer(a) == {"result": None, "id": 11}
                assert await _answer(b) == {"result": None, "id": 12}

    run(scenario)
