"""A minimal, hand-written Bitfinex v2 exchange for fault drills.

Deliberately independent of :mod:`wsgate.sim`: it shares no code with the simulator, so
a simulator bug cannot hide a gateway bug. It speaks just enough of the protocol:
``info`` on connect, ``conf``, ``ping``/``pong`` with ``cid``, ``subscribe`` /
``unsubscribe`` for ``trades`` and ``ticker`` with per-connection ``chanId``s, error
codes 10300 (unknown symbol) and 10305 (channel limit), a snapshot as the first data
message, ``te`` trades with consecutive ids from one global tape, heartbeats, and the
info codes 20051/20060/20061.

Faults are plain method calls and attributes: :meth:`drop_all`, :meth:`stall`
(withhold data and heartbeats on some or all channels while still answering pings),
:meth:`info`, ``reject`` (HTTP status for the next handshakes), ``channel_limit``,
``accept_and_drop``. Every handshake attempt is timestamped in :attr:`handshakes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

__all__ = ["FakeBitfinex"]

SYMBOLS = ("tBTCUSD", "tETHUSD", "tLTCUSD")


@dataclass(eq=False)
class _Sub:
    chan_id: int
    channel: str
    symbol: str
    last_sent: float = 0.0


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    subs: dict[int, _Sub] = field(default_factory=dict)
    next_chan: int = 100
    pings: int = 0
    out: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class FakeBitfinex:
    """``async with FakeBitfinex() as ex:`` serves on 127.0.0.1:0 (``ex.url``)."""

    def __init__(
        self,
        *,
        trade_interval: float = 0.05,
        heartbeat: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trade_interval = trade_interval
        self.heartbeat = heartbeat
        self.clock = clock
        self.conns: list[_Conn] = []
        self.handshakes: list[float] = []  # every upgrade request, accepted or not
        self.accepted = 0
        self.reject: tuple[int, int, float | None] | None = None  # status, count, retry-after
        self.channel_limit = 25
        self.accept_and_drop = False
        self.stalled: set[str] | None = None  # None: nothing stalled; empty set: everything
        self.maintenance = False
        self.published: list[int] = []  # every trade id of the tape
        self.subscribe_requests = 0
        self.subscribes: list[tuple[str, str]] = []  # (channel, symbol) of every request
        self.swallowed: set[tuple[str, str]] = set()  # subscribes never answered at all
        self.pongs = 0
        self._trade_id = 5_000_000
        self._server: Server | None = None
        self._tape: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws/2"

    async def __aenter__(self) -> FakeBitfinex:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            ping_interval=None,
        )
        self._tape = asyncio.create_task(self._run_tape())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._tape is not None
        self._tape.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tape
        self._server.close()
        await self._server.wait_closed()

    def __repr__(self) -> str:
        return f"<FakeBitfinex conns={len(self.conns)} handshakes={len(self.handshakes)}>"

    # ---------------------------------------------------------------- faults
    def drop_all(self) -> int:
        """TCP abort, no close frame: what a lost network path looks like."""
        victims = list(self.conns)
        for c in victims:
            c.ws.transport.abort()
        return len(victims)

    def stall(self, *channels: str) -> None:
        """Withhold data and heartbeats on ``channels`` (``"trades:tBTCUSD"``) or on all."""
        self.stalled = set(channels)

    def resume(self) -> None:
        self.stalled = None

    def info(self, code: int, restart_grace: float = 1.0) -> None:
        """Send an info event; 20051 closes the notified connections after ``restart_grace``.

        Only the notified ones: like Bitfinex, a reconnect lands on another server.
        """
        self.maintenance = {20060: True, 20061: False}.get(code, self.maintenance)
        notified = list(self.conns)
        for c in notified:
            self._send(c, {"event": "info", "code": code, "msg": f"fake info {code}"})
        if code == 20051:
            loop = asyncio.get_running_loop()
            for c in notified:
                loop.call_later(restart_grace, c.ws.transport.abort)

    def open_channels(self) -> list[tuple[int, str]]:
        return [(id(c), f"{s.channel}:{s.symbol}") for c in self.conns for s in c.subs.values()]

    # ---------------------------------------------------------------- handshake
    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(self.clock())
        if self.reject is not None:
            status, count, retry_after = self.reject
            self.reject = (status, count - 1, retry_after) if count > 1 else None
            resp = ws.respond(status, HTTPStatus(status).phrase + "\n")
            if retry_after is not None:
                resp.headers["Retry-After"] = f"{retry_after:g}"
            return resp
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.accepted += 1
        if self.accept_and_drop:
            ws.transport.abort()
            return
        conn = _Conn(ws)
        self.conns.append(conn)
        writer = asyncio.create_task(_writer(conn))
        self._send(conn, {"event": "info", "version": 2, "platform": {"status": 1}})
        try:
            async for raw in ws:
                self._on_message(conn, json.loads(raw))
        except Exception:  # a dropped peer is the normal end of a drill
            pass
        finally:
            self.conns.remove(conn)
            writer.cancel()

    # ---------------------------------------------------------------- protocol
    def _send(self, conn: _Conn, obj: Any) -> None:
        # One writer per connection keeps frames in order and the tape loop synchronous.
        conn.out.put_nowait(json.dumps(obj))

    def _on_message(self, conn: _Conn, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if event == "ping":
            conn.pings += 1
            self.pongs += 1
            self._send(conn, {"event": "pong", "ts": int(time.time() * 1000), "cid": msg["cid"]})
        elif event == "conf":
            self._send(conn, {"event": "conf", "status": "OK", "flags": msg.get("flags", 0)})
        elif event == "subscribe":
            self._subscribe(conn, msg)
        elif event == "unsubscribe":
            sub = conn.subs.pop(int(msg.get("chanId", -1)), None)
            status = "OK" if sub is not None else "FAILED"
            self._send(conn, {"event": "unsubscribed", "status": status, "chanId": msg["chanId"]})
        else:
            self._send(conn, {"event": "error", "msg": "event: invalid", "code": 10000})

    def _subscribe(self, conn: _Conn, msg: dict[str, Any]) -> None:
        self.subscribe_requests += 1
        channel, symbol = str(msg.get("channel")), str(msg.get("symbol"))
        self.subscribes.append((channel, symbol))
        if (channel, symbol) in self.swallowed:
            return
        echo = {k: msg[k] for k in ("channel", "symbol", "subId") if k in msg}
        if symbol not in SYMBOLS:
            err = {"event": "error", "msg": "symbol: invalid", "code": 10300}
            self._send(conn, {**err, **echo})
            return
        if len(conn.subs) >= self.channel_limit:
            err = {"event": "error", "msg": "subscribe: limit", "code": 10305}
            self._send(conn, {**err, **echo})
            return
        conn.next_chan += 1
        sub = _Sub(conn.next_chan, channel, symbol, self.clock())
        conn.subs[sub.chan_id] = sub
        pair = symbol[1:]
        self._send(conn, {"event": "subscribed", "chanId": sub.chan_id, "pair": pair, **echo})
        if channel == "trades":
            recent = self.published[-3:] or [self._trade_id]
            snap = [[tid, 1_700_000_000_000, 0.01, 100.0] for tid in reversed(recent)]
            self._send(conn, [sub.chan_id, snap])
        else:
            self._send(conn, [sub.chan_id, self._ticker()])

    def _ticker(self) -> list[float]:
        p = 100.0 + (self._trade_id % 7)
        return [p - 0.5, 1.0, p + 0.5, 1.0, 0.1, 0.001, p, 10.0, p + 1, p - 1]

    def _silenced(self, sub: _Sub) -> bool:
        if self.maintenance:
            return True
        if self.stalled is None:
            return False
        return not self.stalled or f"{sub.channel}:{sub.symbol}" in self.stalled

    async def _run_tape(self) -> None:
        while True:
            await asyncio.sleep(self.trade_interval)
            self._trade_id += 1
            tid = self._trade_id
            self.published.append(tid)
            now = self.clock()
            for c in list(self.conns):
                for sub in list(c.subs.values()):
                    if self._silenced(sub):
                        continue
                    if sub.channel == "trades":
                        self._send(c, [sub.chan_id, "te", [tid, 1_700_000_000_000, 0.01, 100.0]])
                        sub.last_sent = now
                    elif sub.channel == "ticker" and tid % 4 == 0:
                        self._send(c, [sub.chan_id, self._ticker()])
                        sub.last_sent = now
                    elif now - sub.last_sent >= self.heartbeat:
                        self._send(c, [sub.chan_id, "hb"])
                        sub.last_sent = now


async def _writer(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        while True:
            await conn.ws.send(await conn.out.get())
