"""A Bitfinex bot that checks every frame it receives from the gateway.

Invariants, per session:

* with ``conf`` flag 65536 every channel frame ends with a sequence number that starts at 1
  and grows by exactly one (the gateway numbers each session's frames itself);
* on a trades channel, the first data frame is a snapshot, and after each snapshot the
  ``te`` trade ids continue from the newest id of that snapshot by exactly one: a repeat is
  a duplicate, a jump is a gap nobody announced. A gap is allowed only across a fresh
  snapshot, which is how Bitfinex (and wsgate) announce "start over".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = ["SEQ_ALL", "BfxCounter", "ChannelTally"]

SEQ_ALL = 65536


@dataclass
class ChannelTally:
    channel: str
    symbol: str
    frames: int = 0
    heartbeats: int = 0
    snapshots: int = 0
    trades: int = 0
    last_trade_id: int | None = None
    epoch_ids: set[int] = field(default_factory=set)


@dataclass
class BfxCounter:
    """One bot session: subscribe, then count and check every frame until stopped."""

    url: str
    subscriptions: tuple[tuple[str, str], ...]
    flags: int = SEQ_ALL
    name: str = "bot"
    seq: int = 0
    frames: int = 0
    infos: dict[int, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    channels: dict[int, ChannelTally] = field(default_factory=dict)
    closed: str | None = None
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _ws: ClientConnection | None = None

    def __repr__(self) -> str:
        return (
            f"BfxCounter({self.name}, frames={self.frames}, seq={self.seq}, "
            f"violations={len(self.violations)}, closed={self.closed!r})"
        )

    def trades_seen(self) -> int:
        return sum(c.trades for c in self.channels.values())

    def snapshots_seen(self) -> int:
        """Trades snapshots: the first one per channel plus one per announced restart."""
        return sum(c.snapshots for c in self.channels.values() if c.channel == "trades")

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with connect(self.url, open_timeout=10, max_size=None) as ws:
                self._ws = ws
                if self.flags:
                    await ws.send(json.dumps({"event": "conf", "flags": self.flags}))
                for channel, symbol in self.subscriptions:
                    await ws.send(
                        json.dumps({"event": "subscribe", "channel": channel, "symbol": symbol})
                    )
                reader = asyncio.create_task(self._read(ws))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not reader.done():
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
                else:
                    reader.result()
        except (ConnectionClosed, OSError) as exc:
            self.closed = f"{type(exc).__name__}: {exc}"

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            self.on_frame(raw if isinstance(raw, str) else raw.decode())
        self.closed = f"closed by the gateway: {ws.close_code} {ws.close_reason}"

    def on_frame(self, text: str) -> None:
        msg = json.loads(text)
        if isinstance(msg, dict):
            self._on_event(msg)
            return
        self.frames += 1
        chan_id = msg[0]
        body = msg[1:]
        if self.flags & SEQ_ALL:
            seq = body.pop()
            if seq != self.seq + 1:
                self.violations.append(f"{self.name}: seq {seq} after {self.seq} ({text[:80]})")
            self.seq = seq
        tally = self.channels.get(chan_id)
        if tally is None:
            self.violations.append(f"{self.name}: data on unknown channel {chan_id}: {text[:80]}")
            return
        tally.frames += 1
        if body == ["hb"]:
            tally.heartbeats += 1
        elif tally.channel == "trades":
            self._on_trades(tally, body, text)
        elif body and isinstance(body[0], list):
            tally.snapshots += 1

    def _on_event(self, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if event == "subscribed":
            chan_id = msg["chanId"]
            if chan_id in self.channels:
                self.violations.append(f"{self.name}: chanId {chan_id} acknowledged twice")
            self.channels[chan_id] = ChannelTally(msg["channel"], str(msg.get("symbol")))
            if len(self.channels) == len(self.subscriptions):
                self.subscribed.set()
        elif event == "info" and "code" in msg:
            self.infos[msg["code"]] = self.infos.get(msg["code"], 0) + 1
        elif event == "error":
            self.errors.append(msg)

    def _on_trades(self, tally: ChannelTally, body: list[Any], text: str) -> None:
        if body and isinstance(body[0], list):
            ids = [int(entry[0]) for entry in body[0]]
            tally.snapshots += 1
            tally.epoch_ids = set(ids)
            tally.last_trade_id = max(ids) if ids else None
            return
        kind, entry = body[0], body[1]
        trade_id = int(entry[0])
        if kind == "tu":
            if trade_id not in tally.epoch_ids:
                self.violations.append(f"{self.name}: tu {trade_id} without its te")
            return
        tally.trades += 1
        if trade_id in tally.epoch_ids:
            self.violations.append(f"{self.name}: duplicate trade {trade_id} on {tally.symbol}")
        elif tally.last_trade_id is None:
            self.violations.append(f"{self.name}: trade {trade_id} before any snapshot")
        elif trade_id != tally.last_trade_id + 1:
            self.violations.append(
                f"{self.name}: unannounced gap on {tally.symbol}: trade {trade_id} after "
                f"{tally.last_trade_id} with no fresh snapshot between"
            )
        tally.epoch_ids.add(trade_id)
        tally.last_trade_id = trade_id
