"""An OKX v5 public WebSocket server written from OKX's documentation (not wsgate.sim).

* ``/ws/v5/public``; the literal text ``ping`` is answered with ``pong``; a connection
  with no subscription and nothing pushed (and no ping) for ``idle`` seconds is closed
  (OKX: 30 s).
* ``{"id"?,"op":"subscribe"|"unsubscribe","args":[{"channel","instId"}]}``: one ack per arg
  (``{"id"?,"event":"subscribe","arg":{...},"connId":...}``); an unknown channel or
  instrument is one ``{"id"?,"event":"error","code":"60018","msg":...,"connId":...}`` for
  the request, and none of its args is subscribed.
* ``books``: a ``snapshot`` (``prevSeqId`` -1) on subscribe, then ``update`` pushes with
  ``prevSeqId`` = the previous ``seqId``; an unchanged book may push an empty update whose
  ``seqId`` equals its ``prevSeqId``; after maintenance ``seqId`` may restart lower than
  ``prevSeqId``. ``checksum`` is 0 (deprecated) unless ``checksum=True``.
* ``books5`` (5 levels) and ``bbo-tbt`` (1 level): full snapshots every push, no ``action``.
* ``trades``: ``tradeId`` strings, no replay on subscribe.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.venues.base import VenueServer

__all__ = ["OkxBook", "OkxServer", "okx_checksum"]

CHANNELS = ("tickers", "trades", "books", "books5", "bbo-tbt")


def okx_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's signed CRC32 over the top 25 levels, ``bidPx:bidSz:askPx:askSz:...``."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass
class OkxBook:
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    seq: int = 1000

    def levels(self, side: str, depth: int = 400) -> list[list[str]]:
        book = self.bids if side == "bids" else self.asks
        prices = sorted(book, key=Decimal, reverse=side == "bids")[:depth]
        return [[p, book[p], "0", "1"] for p in prices]


@dataclass
class _Conn:
    ws: ServerConnection
    conn_id: str
    subs: set[tuple[str, str]] = field(default_factory=set)
    last: float = 0.0


class OkxServer(VenueServer):
    def __init__(
        self,
        style: str = "compact",
        *,
        instruments: tuple[str, ...] = ("BTC-USDT", "ETH-USDT"),
        idle: float = 30.0,
        checksum: bool = False,
    ) -> None:
        super().__init__(style)
        self.instruments = instruments
        self.idle = idle
        self.checksum = checksum
        self.books = {i: OkxBook() for i in instruments}
        self.trade_ids = itertools.count(500_001)
        self.live: list[_Conn] = []
        self.idle_closes = 0
        self.pings = 0
        self._ids = itertools.count(0xA000)
        for i, book in self.books.items():
            base = 100 if i.startswith("BTC") else 10
            for k in range(1, 8):
                book.bids[f"{base - k}.5"] = f"{k}.25"
                book.asks[f"{base + k}.5"] = f"{k}.75"

    def subscribers(self, channel: str, inst: str) -> list[_Conn]:
        return [c for c in self.live if (channel, inst) in c.subs]

    async def handle(self, ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path.rstrip("/") != "/ws/v5/public":
            await ws.close(1008, "wrong path")
            return
        loop = asyncio.get_running_loop()
        conn = _Conn(ws, format(next(self._ids), "08x"), last=loop.time())
        self.live.append(conn)
        watch = asyncio.create_task(self._idle_watch(conn))
        try:
            async for text in ws:
                assert isinstance(text, str)
                self.received[id(ws)].append(text)
                conn.last = loop.time()
                await self._on_message(conn, text)
        except ConnectionClosed:
            pass
        finally:
            watch.cancel()
            self.live.remove(conn)

    async def _idle_watch(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = conn.last + self.idle - loop.time()
            if wait <= 0:
                self.idle_closes += 1
                await conn.ws.close(4004, "No data received in 30s.")
                return
            await asyncio.sleep(wait)

    async def _on_message(self, conn: _Conn, text: str) -> None:
        if text == "ping":
            self.pings += 1
            await conn.ws.send("pong")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            await self._error(conn, None, "60012", f"Invalid request: {text}")
            return
        req_id = msg.get("id") if isinstance(msg, dict) else None
        op = msg.get("op") if isinstance(msg, dict) else None
        args = msg.get("args") if isinstance(msg, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            await self._error(conn, req_id, "60012", f"Invalid request: {text}")
            return
        keys: list[tuple[str, str]] = []
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            inst = arg.get("instId") if isinstance(arg, dict) else None
            if channel not in CHANNELS or inst not in self.instruments:
                shown = f"{channel},instId:{inst}"
                await self._error(
                    conn,
                    req_id,
                    "60018",
                    f"Wrong URL or channel:{shown} doesn't exist. Please use the correct URL,"
                    " channel and parameters referring to API document.",
                )
                return
            keys.append((str(channel), str(inst)))
        for channel, inst in keys:
            ack: dict[str, Any] = {} if req_id is None else {"id": req_id}
            ack.update({"event": op, "arg": {"channel": channel, "instId": inst}})
            ack["connId"] = conn.conn_id
            await self.send(conn.ws, ack)
            if op == "subscribe":
                conn.subs.add((channel, inst))
                await self._initial(conn, channel, inst)
            else:
                conn.subs.discard((channel, inst))

    async def _error(self, conn: _Conn, req_id: object, code: str, msg: str) -> None:
        body: dict[str, Any] = {} if req_id is None else {"id": req_id}
        body.update({"event": "error", "code": code, "msg": msg, "connId": conn.conn_id})
        await self.send(conn.ws, body)

    def _arg(self, channel: str, inst: str) -> dict[str, str]:
        return {"channel": channel, "instId": inst}

    def _book_frame(self, inst: str, action: str, push: dict[str, Any]) -> dict[str, Any]:
        return {"arg": self._arg("books", inst), "action": action, "data": [push]}

    def _snapshot(self, inst: str) -> dict[str, Any]:
        book = self.books[inst]
        bids, asks = book.levels("bids"), book.levels("asks")
        push = {
            "asks": asks,
            "bids": bids,
            "ts": "1700000000000",
            "checksum": okx_checksum(bids, asks) if self.checksum else 0,
            "prevSeqId": -1,
            "seqId": book.seq,
        }
        return self._book_frame(inst, "snapshot", push)

    def _top(self, channel: str, inst: str) -> dict[str, Any]:
        book = self.books[inst]
        depth = 5 if channel == "books5" else 1
        push = {
            "asks": book.levels("asks", depth),
            "bids": book.levels("bids", depth),
            "instId": inst,
            "ts": "1700000000000",
            "seqId": book.seq,
        }
        return {"arg": self._arg(channel, inst), "data": [push]}

    async def _initial(self, conn: _Conn, channel: str, inst: str) -> None:
        if channel == "books":
            await self.send(conn.ws, self._snapshot(inst))
        elif channel in ("books5", "bbo-tbt"):
            await self.send(conn.ws, self._top(channel, inst))
        elif channel == "tickers":
            await self.send(conn.ws, self._ticker(inst))

    def _ticker(self, inst: str) -> dict[str, Any]:
        book = self.books[inst]
        bid, ask = book.levels("bids", 1)[0], book.levels("asks", 1)[0]
        data = {"instType": "SPOT", "instId": inst, "last": bid[0], "bidPx": bid[0]}
        data.update({"bidSz": bid[1], "askPx": ask[0], "askSz": ask[1], "ts": "1700000000000"})
        return {"arg": self._arg("tickers", inst), "data": [data]}

    async def _push(self, channel: str, inst: str, frame: dict[str, Any]) -> None:
        text = self.dump(frame)
        loop = asyncio.get_running_loop()
        for conn in self.subscribers(channel, inst):
            conn.last = loop.time()
            try:
                await conn.ws.send(text)
            except ConnectionClosed:
                pass

    async def trade(self, inst: str, px: str, sz: str, side: str = "buy") -> int:
        tid = next(self.trade_ids)
        data = {"instId": inst, "tradeId": str(tid), "px": px, "sz": sz, "side": side}
        data.update({"ts": "1700000000001", "count": "1"})
        await self._push("trades", inst, {"arg": self._arg("trades", inst), "data": [data]})
        return tid

    async def book_update(
        self,
        inst: str,
        bids: list[tuple[str, str]] = (),  # type: ignore[assignment]
        asks: list[tuple[str, str]] = (),  # type: ignore[assignment]
        *,
        seq: int | None = None,
        prev: int | None = None,
    ) -> None:
        """Apply and push one ``books`` update (size "0" deletes); ``seq``/``prev`` override
        the chain (an empty no-change update, a seqId reset, a gap)."""
        book = self.books[inst]
        for side, levels in (("bids", bids), ("asks", asks)):
            target = book.bids if side == "bids" else book.asks
            for px, sz in levels:
                if Decimal(sz) == 0:
                    target.pop(px, None)
                else:
                    target[px] = sz
        prev_seq = book.seq if prev is None else prev
        book.seq = book.seq + 3 if seq is None else seq
        top_b, top_a = book.levels("bids", 25), book.levels("asks", 25)
        push = {
            "asks": [[p, s, "0", "1"] for p, s in asks],
            "bids": [[p, s, "0", "1"] for p, s in bids],
            "ts": "1700000000002",
            "checksum": okx_checksum(top_b, top_a) if self.checksum else 0,
            "prevSeqId": prev_seq,
            "seqId": book.seq,
        }
        await self._push("books", inst, self._book_frame(inst, "update", push))
        for channel in ("books5", "bbo-tbt"):
            await self._push(channel, inst, self._top(channel, inst))

    async def notice(self, code: str = "64008") -> None:
        msg = "The connection will soon be closed for a service upgrade. Please reconnect."
        for conn in list(self.live):
            await self.send(
                conn.ws, {"event": "notice", "code": code, "msg": msg, "connId": conn.conn_id}
            )
