"""Every subscribe gets an answer: confirmed, or the venue's own error within a bound.

Real sockets: the gateway on 127.0.0.1:0, an independent fake Bitfinex upstream, bots as
plain websockets clients.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.runtime.drill import rig, route_toml, run, wait_for
from tests.runtime.fake_exchange import SYMBOLS, FakeBitfinex

KEYS = [(channel, symbol) for channel in ("trades", "ticker") for symbol in SYMBOLS]  # six


class Bot:
    """Sends subscribes and records every control answer, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.answers: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if isinstance(msg, dict) and msg.get("event") in ("subscribed", "error"):
                self.answers.append(msg)

    async def subscribe(self, keys: list[tuple[str, str]]) -> None:
        for i, (channel, symbol) in enumerate(keys):
            sub = {"event": "subscribe", "channel": channel, "symbol": symbol, "subId": f"s{i}"}
            await self.ws.send(json.dumps(sub))

    def errors(self) -> list[dict[str, Any]]:
        return [a for a in self.answers if a["event"] == "error"]

    def confirmed(self) -> list[dict[str, Any]]:
        return [a for a in self.answers if a["event"] == "subscribed"]

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()


def _route(url: str, **extra: Any) -> str:
    opts: dict[str, Any] = {"backoff_initial": 0.2, "backoff_max": 0.5}
    return route_toml("bfx", url, **{**opts, **extra})


def test_a_full_pool_answers_every_subscribe_with_10305_echoing_the_request() -> None:
    async def go() -> None:
        # The exchange takes two channels per connection; the route may open two connections.
        async with (
            FakeBitfinex() as ex,
            rig(_route(ex.url, max_connections=2, min_connections=1)) as r,
        ):
            ex.channel_limit = 2
            greedy = Bot(await connect(r.url("bfx")))
            await greedy.subscribe(KEYS)
            await wait_for(lambda: len(greedy.answers) == 6, 10.0, "an answer to all six")
            assert len(greedy.confirmed()) == 4
            for err in greedy.errors():
                assert err["code"] == 10305 and err["msg"] == "subscribe: limit", err
                assert err["channel"] in ("trades", "ticker") and err["symbol"] in SYMBOLS
                assert err["subId"].startswith("s")  # the request's own fields, echoed
            # Another bot on a key nobody holds is answered too, not left hanging.
            other = Bot(await connect(r.url("bfx")))
            refused = {(e["channel"], e["symbol"]) for e in greedy.errors()}
            await other.subscribe([sorted(refused)[0]])
            await wait_for(lambda: bool(other.answers), 5.0, "the other bot's answer")
            assert other.answers[0]["code"] == 10305
            hub = r.routes["bfx"].hub
            assert hub is not None
            assert not any(s.waiting for s in hub.registry.subscriptions())
            await greedy.close()
            await other.close()

    run(go())


def test_a_subscribe_nothing_can_take_in_time_gets_10300() -> None:
    async def go() -> None:
        async with rig(_route("ws://127.0.0.1:9/down")) as r:  # the exchange is unreachable
            hub = r.routes["bfx"].hub
            assert hub is not None
            hub.registry.answer_timeout = 0.5
            bot = Bot(await connect(r.url("bfx")))
            await bot.subscribe(KEYS[:1])
            took = await wait_for(lambda: bool(bot.answers), 5.0, "an answer")
            assert bot.answers == [
                {
                    "event": "error",
                    "msg": "subscribe: failed",
                    "code": 10300,
                    "channel": "trades",
                    "symbol": "tBTCUSD",
                    "pair": "BTCUSD",
                    "subId": "s0",
                }
            ]
            assert took < 5.0
            assert hub.registry.subscriptions() == []  # nobody wants it any more
            await bot.close()

    run(go())


def test_the_per_session_cap_refuses_past_it_and_counts_against_the_session() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(_route(ex.url)) as r:
            r.env.max_subscriptions_per_session = 2
            bot = Bot(await connect(r.url("bfx")))
            await bot.subscribe(KEYS[:3])
            await wait_for(lambda: len(bot.answers) == 3, 5.0, "three answers")
            assert len(bot.confirmed()) == 2
            (err,) = bot.errors()
            assert err["code"] == 10305 and err["msg"] == "subscribe: limit (2 per session)"
            assert (err["channel"], err["symbol"]) == KEYS[2]
            assert len(ex.open_channels()) == 2  # the refused one never reached the exchange
            hub = r.routes["bfx"].hub
            assert hub is not None
            assert hub.intents.session_errors.get("subscription_cap") == 1
            # An unsubscribe makes room again.
            chan = bot.confirmed()[0]["chanId"]
            await bot.ws.send(json.dumps({"event": "unsubscribe", "chanId": chan}))
            await bot.subscribe([KEYS[2]])
            await wait_for(lambda: len(bot.confirmed()) == 3, 5.0, "room after unsubscribe")
            await bot.close()

    run(go())


def test_binance_request_past_the_cap_gets_one_error_with_its_id_and_no_result() -> None:
    async def go() -> None:
        body = route_toml("bn", "ws://127.0.0.1:9/down", dialect="binance", min_connections=0)
        async with rig(body) as r:
            r.env.max_subscriptions_per_session = 2
            async with connect(r.url("bn", "/ws")) as ws:
                streams = ["btcusdt@trade", "ethusdt@trade", "ltcusdt@trade"]
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 7}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5.0))
                assert reply == {
                    "error": {
                        "code": 2,
                        "msg": "Invalid request: too many streams (2 per session)",
                    },
                    "id": 7,
                }
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
                listed = json.loads(await asyncio.wait_for(ws.recv(), 5.0))
                assert listed == {"result": [], "id": 8}  # nothing of the refused request
                # Within the cap it is not refused: it waits for the exchange, which is down
                # here, so it gets the unavailable error once nothing placed it in time.
                hub = r.routes["bn"].hub
                assert hub is not None
                hub.registry.answer_timeout = 0.5
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams[:2], "id": 9}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 5.0)) == {
                    "error": {
                        "code": 2,
                        "msg": "Invalid request: stream unavailable, try again later",
                    },
                    "id": 9,
                }

    run(go())


def test_subscribes_waiting_for_the_message_budget_are_not_resent() -> None:
    async def go() -> None:
        # Two messages a second: the sixth subscribe leaves ~3 s after the first, long
        # after the (shortened) confirmation timeout would have expired had it started
        # when the subscribe was queued.
        budget = {"count": 2, "per": 1.0}
        async with FakeBitfinex() as ex, rig(_route(ex.url, message_budget=budget)) as r:
            hub = r.routes["bfx"].hub
            assert hub is not None
            hub.registry.pending_timeout = 1.0
            bot = Bot(await connect(r.url("bfx")))
            await bot.subscribe(KEYS)
            await wait_for(lambda: len(bot.answers) == 6, 20.0, "six answers")
            assert len(bot.confirmed()) == 6, bot.answers
            # Whatever the hub still had queued has left too.
            await wait_for(
                lambda: not any(u.queue for u in hub.ups.values()), 20.0, "the queues drained"
            )
            assert sorted(ex.subscribes) == sorted(KEYS)  # each exactly once: no resend
            await bot.close()

    run(go())


def test_a_subscribe_the_exchange_never_confirms_gets_10300_after_one_resend() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(_route(ex.url)) as r:
            hub = r.routes["bfx"].hub
            assert hub is not None
            hub.registry.pending_timeout = 0.5
            lost = KEYS[0]
            ex.swallowed.add(lost)
            bot = Bot(await connect(r.url("bfx")))
            await bot.subscribe(KEYS[:2])
            await wait_for(lambda: len(bot.answers) == 2, 10.0, "both answers")
            assert [a["channel"] for a in bot.confirmed()] == [KEYS[1][0]]
            assert bot.errors() == [
                {
                    "event": "error",
                    "msg": "subscribe: failed",
                    "code": 10300,
                    "channel": lost[0],
                    "symbol": lost[1],
                    "pair": lost[1][1:],
                    "subId": "s0",
                }
            ]
            assert ex.subscribes.count(lost) == 2  # the subscribe and one resend
            # The refused sessions were released: only the confirmed channel is left.
            assert len(hub.registry.subscriptions()) == 1
            await bot.close()

    run(go())
