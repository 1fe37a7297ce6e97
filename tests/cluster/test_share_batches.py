"""The owner's side of the frame messages, on the in-memory engine: the frames of one turn
go as one message per key with consecutive sequences, and a follower that asks for the
state without saying it reads v2 gets one v1 message per frame from then on."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

from tests.cluster.memory_engine import MemoryEngine, MemoryServer
from wsgate.cluster import wire
from wsgate.cluster.data_plane import RouteShare
from wsgate.cluster.share_state import Owned
from wsgate.config.schema import ClusterConfig
from wsgate.dialects import base as d

CFG = ClusterConfig(engine="nats", name="m", lease_ttl=3.0)
KEY = "bitfinex:ticker:tBTCUSD"


def ev(i: int) -> d.ChannelData:
    return d.ChannelData(5, d.DataKind.DATA, f'[5,[{i},"x"]]', 0, 0, None)


def test_one_message_per_key_and_turn_then_v1_for_a_follower_that_reads_only_v1() -> None:
    async def scenario() -> None:
        server = MemoryServer()
        engine = MemoryEngine(server)
        assert await engine.connect(1.0)
        sub = SimpleNamespace(key=KEY, attachment=None, state=None)
        hub = SimpleNamespace(
            route=SimpleNamespace(cfg=SimpleNamespace(share="cluster")), registry={KEY: sub}
        )
        owner = RouteShare(CFG, "a", "bfx", engine, hub)
        owner.owned[KEY] = own = Owned(1, time.monotonic(), seq=10)
        got: list[bytes] = []

        async def on_msg(data: bytes) -> None:
            got.append(data)

        await engine.serve(owner._subject("md", KEY), on_msg)
        for i in range(5):
            owner.tap(sub, ev(i))  # type: ignore[arg-type]
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        (msg,) = got
        bodies = wire.decode(msg)
        assert bodies is not None
        assert [b[1] for b in bodies] == [11, 12, 13, 14, 15]
        assert [b[4] for b in bodies] == [ev(i).text for i in range(5)]
        assert owner.out.published == 5 and owner.out.messages == 1

        got.clear()
        reply: Any = await owner._answer_state(KEY, json.dumps({"node": "old"}).encode())
        assert json.loads(reply)["seq"] == 15 and own.legacy
        for i in range(3):
            owner.tap(sub, ev(i))  # type: ignore[arg-type]
        for _ in range(100):
            if len(got) == 3:
                break
            await asyncio.sleep(0.01)
        assert [json.loads(m)[1] for m in got] == [16, 17, 18]  # v1: one JSON list each

    asyncio.run(asyncio.wait_for(scenario(), 10))
