"""Two small bots that `wsgate run --demo` starts, so the demo shows live traffic.

They connect to the gateway exactly as a user's bot would (Bitfinex ticker + trades,
Binance trades) and log a one-line summary every few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = ["run_demo_bots"]

log = logging.getLogger("wsgate.demo")


async def _bitfinex_bot(url: str, every: float) -> None:
    async with connect(url) as ws:
        for channel in ("ticker", "trades"):
            await ws.send(
                json.dumps({"event": "subscribe", "channel": channel, "symbol": "tBTCUSD"})
            )
        chans: dict[int, str] = {}
        last_price: float | None = None
        count, mark = 0, time.monotonic()
        async for raw in ws:
            msg = json.loads(raw)
            if isinstance(msg, dict):
                if msg.get("event") == "subscribed":
                    chans[msg["chanId"]] = msg["channel"]
                continue
            count += 1
            if chans.get(msg[0]) == "ticker" and isinstance(msg[1], list):
                last_price = msg[1][6]
            now = time.monotonic()
            if now - mark >= every:
                log.info(
                    "demo bot (bitfinex): tBTCUSD last %s, %.1f msgs/s through the gateway",
                    last_price,
                    count / (now - mark),
                )
                count, mark = 0, now


async def _binance_bot(url: str, every: float) -> None:
    async with connect(url + "/ws/btcusdt@trade") as ws:
        count, mark, price = 0, time.monotonic(), None
        async for raw in ws:
            count += 1
            price = json.loads(raw).get("p", price)
            now = time.monotonic()
            if now - mark >= every:
                log.info(
                    "demo bot (binance): BTCUSDT trade %s, %.1f msgs/s through the gateway",
                    price,
                    count / (now - mark),
                )
                count, mark = 0, now


async def run_demo_bots(base_url: str, *, every: float = 5.0) -> None:
    """Run both bots until cancelled; reconnect after a pause when the gateway drops them."""

    async def forever(name: str, bot: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await bot()
            except (OSError, ConnectionClosed, InvalidStatus) as exc:
                log.info("demo bot (%s) disconnected: %s; reconnecting in 2 s", name, exc)
            await asyncio.sleep(2.0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(forever("bitfinex", lambda: _bitfinex_bot(base_url + "/bitfinex", every)))
        tg.create_task(forever("binance", lambda: _binance_bot(base_url + "/binance", every)))
