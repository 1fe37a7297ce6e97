"""The ``bad_checksum`` fault: the next book checksum frames are wrong, then right again."""

from __future__ import annotations

import asyncio
import json

import pytest
from _simhelp import event, recv_until, run
from websockets.asyncio.client import connect

from tests.e2e.test_sharing_corners import BfxBook
from wsgate.sim import BitfinexSim, FaultError


def test_bad_checksum_corrupts_exactly_the_requested_cs_frames() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=3, book_rate=50) as sim, connect(sim.url) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": 131072}))
            await recv_until(ws, event("conf"))
            await ws.send(
                json.dumps({"event": "subscribe", "channel": "book", "symbol": "tBTCUSD"})
            )
            chan = (await recv_until(ws, event("subscribed")))["chanId"]
            book = BfxBook()  # an independent client-side book and checksum

            async def until_cs() -> bool:
                while True:
                    msg = json.loads(await ws.recv(), parse_int=str, parse_float=str)
                    if isinstance(msg, list) and int(msg[0]) == chan:
                        bad = book.cs_bad
                        book.take(msg[1], msg[2:])
                        if msg[1] == "cs":
                            return book.cs_bad == bad

            async def next_cs_ok() -> bool:
                return await asyncio.wait_for(until_cs(), 5)

            assert await next_cs_ok()
            sim.faults.bad_checksum(2)
            assert [await next_cs_ok() for _ in range(3)] == [False, False, True]
            assert sim.faults.statistics().counts["bad_checksum_sent"] == 2
            with pytest.raises(FaultError):
                sim.faults.bad_checksum(0)
            assert sim.faults.apply("bad_checksum", {"count": "1"})["ok"] is True

    run(main())
