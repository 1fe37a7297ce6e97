"""An upstream that writes spaced or pretty-printed JSON: bots get every frame intact.

The simulator's ``json_style`` makes it write JSON the way other exchange-compatible servers
do. Through wsgate, every frame must still be one JSON value with nothing before or after
it, numbers as the exchange wrote them (Bitfinex book checksums verified by the gateway
and by this client), Binance diff-depth ids contiguous.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import zlib
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.simstack import Route, stack_config
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.dialects.bitfinex_state import Num, load_raw
from wsgate.sim import Simulator

WS = " \t\r\n"


ROUTES = {"bitfinex": Route("bitfinex"), "binance": Route("binance", rest=False)}


def _frame(raw: str | bytes) -> Any:
    text = raw if isinstance(raw, str) else raw.decode()
    assert text and text[0] not in WS and text[-1] not in WS, repr(text[:60])
    return json.loads(text)


async def _binance(gw: Gateway) -> None:
    async with (
        connect(gw.url("binance") + "/ws/btcusdt@trade") as plain,
        connect(gw.url("binance") + "/stream?streams=btcusdt@depth@100ms/ethusdt@trade") as comb,
    ):
        for _ in range(3):
            ev = _frame(await asyncio.wait_for(plain.recv(), 10))
            assert ev["e"] == "trade" and ev["s"] == "BTCUSDT" and isinstance(ev["t"], int)
        last_u: int | None = None
        seen = set()
        for _ in range(12):
            msg = _frame(await asyncio.wait_for(comb.recv(), 10))
            assert set(msg) == {"stream", "data"}
            seen.add(msg["stream"])
            if msg["stream"] == "btcusdt@depth@100ms":
                data = msg["data"]
                assert last_u is None or data["U"] == last_u + 1
                last_u = data["u"]
        assert seen == {"btcusdt@depth@100ms", "ethusdt@trade"}


def _checksum(book: dict[str, tuple[Num, Num]], bids: bool) -> list[str]:
    levels = [(float(p), p, a) for p, (_c, a) in book.items() if (float(a) > 0) == bids]
    levels.sort(key=lambda x: -x[0] if bids else x[0])
    return [f"{p}:{a}" for _, p, a in levels[:25]]


async def _bitfinex(gw: Gateway) -> None:
    async with connect(gw.url("bitfinex")) as ws:
        _frame(await ws.recv())  # info
        await ws.send(json.dumps({"event": "conf", "flags": 131072}))
        await ws.send(json.dumps({"event": "subscribe", "channel": "book", "symbol": "tBTCUSD"}))
        await ws.send(json.dumps({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"}))
        book: dict[str, tuple[Num, Num]] = {}
        chans: dict[int, str] = {}
        verified = trades = 0
        async with asyncio.timeout(20):
            while verified < 5 or trades < 3:
                raw = await ws.recv()
                msg = _frame(raw)
                if isinstance(msg, dict):
                    if msg.get("event") == "subscribed":
                        chans[msg["chanId"]] = msg["channel"]
                    continue
                kind = chans.get(msg[0])
                if kind == "trades" and msg[1] in ("te", "tu"):
                    trades += 1
                if kind != "book":
                    continue
                # Number tokens as the exchange wrote them: the checksum depends on them.
                tokens = load_raw(raw if isinstance(raw, str) else raw.decode())
                if tokens[1] == "cs":
                    parts: list[str] = []
                    bids, asks = _checksum(book, True), _checksum(book, False)
                    for i in range(25):
                        parts += [bids[i]] if i < len(bids) else []
                        parts += [asks[i]] if i < len(asks) else []
                    crc = zlib.crc32(":".join(parts).encode())
                    assert (crc - (1 << 32) if crc >= 1 << 31 else crc) == msg[2]
                    verified += 1
                    continue
                entries = tokens[1] if isinstance(tokens[1][0], list) else [tokens[1]]
                if isinstance(tokens[1][0], list):
                    book.clear()
                for price, count, amount in entries:
                    if count == "0":
                        book.pop(price, None)
                    else:
                        book[price] = (count, amount)
    hub = gw.daemon.routes["bitfinex"].hub
    assert hub is not None and hub.statistics().checksum_mismatches == 0


@pytest.mark.parametrize("style", ["spaced", "pretty"])
def test_spaced_and_pretty_upstreams_reach_bots_intact(style: str) -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with Simulator(seed=7, json_style=style, trades_rate=20.0) as sim:
            # The simulator really writes this style.
            async with connect(sim.bitfinex_url) as direct:
                greeting = await asyncio.wait_for(direct.recv(), 5)
                assert ": " in greeting and (style == "spaced") != ("\n" in greeting)
            async with Gateway(parse_config(stack_config(sim, tmp, ROUTES)), seed=2) as gw:
                await asyncio.gather(_binance(gw), _bitfinex(gw))

    asyncio.run(asyncio.wait_for(scenario(), 60))
