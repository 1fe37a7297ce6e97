"""NATS restarts while trades flow between an owner and a follower (real nats-server, real
daemons, the simulator): whatever each node noticed of the outage, a bot never gets a
jump in trade ids that no fresh snapshot announced, and never a trade twice (issue 13:
a missing sequence number or an owner change is a gap, announced once).

Short outages are the hard case: a node may notice one (fall back to its own upstream
subscription, then follow again) while another does not (its link to NATS was replaced
between two looks), so the owner's stream and a follower's idea of it can diverge.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import pytest
import websockets

from tests.cluster.test_data_plane_e2e import owner_and_follower
from tests.e2e.harness import wait_until


@dataclass
class Tape:
    """What one bot got, in order: ``("s", first id, last id)`` per snapshot and
    ``("u", id)`` per trade update."""

    port: int
    events: list[tuple[str, int, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with websockets.connect(f"ws://127.0.0.1:{self.port}/bfx") as ws:
            sub = {"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"}
            await ws.send(json.dumps(sub))
            async for raw in ws:
                msg = json.loads(raw)
                if not isinstance(msg, list) or len(msg) < 2:
                    continue
                if isinstance(msg[1], list):  # newest first
                    ids = [int(t[0]) for t in msg[1]]
                    if ids:
                        self.events.append(("s", min(ids), max(ids)))
                elif msg[1] == "te":
                    i = int(msg[2][0])
                    self.events.append(("u", i, i))

    def updates(self) -> int:
        return sum(1 for e in self.events if e[0] == "u")

    def silent_jumps(self) -> list[str]:
        """Updates whose id is not the one after the last id the bot had, with no snapshot
        announcing it; and any trade id delivered again."""
        out: list[str] = []
        last: int | None = None
        seen: set[int] = set()
        for kind, first, end in self.events:
            if kind == "s":
                last = end if last is None else max(last, end)
                seen.update(range(first, end + 1))
                continue
            if first in seen:
                out.append(f"{first} again")
            elif last is not None and first != last + 1:
                out.append(f"{first} after {last}")
            seen.add(first)
            last = first if last is None else max(last, first)
        return out


@pytest.mark.timeout(240)
def test_short_nats_outages_never_make_a_silent_gap_on_owner_or_follower() -> None:
    rng = random.Random(13)
    with owner_and_follower() as (lt, nats, _sim, a, b, _ba, _bb):
        tapes = [Tape(a.port), Tape(b.port)]

        async def start() -> None:
            for t in tapes:
                t.task = asyncio.get_running_loop().create_task(t.run())

        lt.run(start())
        wait_until(lambda: all(t.updates() > 5 for t in tapes), 15, "trades on both")
        try:
            for _ in range(16):
                nats.stop()
                time.sleep(rng.uniform(0.05, 0.8))  # the outage itself
                nats.start()
                # Both nodes linked again and trades flow (bounded: each node falls back,
                # rejoins, maybe takes the key over).
                n = [t.updates() for t in tapes]
                wait_until(
                    lambda n=n: all(t.updates() > k + 40 for t, k in zip(tapes, n, strict=True)),
                    30,
                    "trades on both after the outage",
                )
        finally:

            async def stop() -> None:
                for t in tapes:
                    if t.task is not None:
                        t.task.cancel()
                await asyncio.gather(*(t.task for t in tapes if t.task), return_exceptions=True)

            lt.run(stop())
        problems = {name: t.silent_jumps() for name, t in zip("ab", tapes, strict=True)}
        assert problems == {"a": [], "b": []}, (problems, a.logs()[-3000:], b.logs()[-3000:])
