"""A Bybit v5 public WebSocket server (spot and linear) written from Bybit's documentation
(not wsgate.sim).

* ``/v5/public/spot`` and ``/v5/public/linear``.
* ``{"req_id"?,"op":"ping"}`` is answered in the category's shape: spot
  ``{"success":true,"ret_msg":"pong","conn_id":..,"op":"ping"}``, linear the same with
  ``"req_id"`` (``""`` when the ping had none).
* ``{"req_id"?,"op":"subscribe"|"unsubscribe","args":[topics]}``: one reply per request,
  spot ``"ret_msg":"subscribe"``, linear ``"ret_msg":""``; spot takes at most 10 args; a
  request with an unknown topic is refused as a whole (``success:false``, the topic in
  ``ret_msg``) and none of its topics is subscribed; a topic subscribed twice on one
  connection is refused (``error:already subscribed,topic:..``).
* ``orderbook.{1,50,200,1000}.{symbol}``: a snapshot on subscribe then deltas with ``u``
  (+1 a push here) and ``seq``; ``restart`` sends a snapshot with ``u = 1`` (the service
  restarted). ``publicTrade.{symbol}`` frames are ``"type":"snapshot"`` with trade ids ``i``
  as strings. Spot ``tickers`` are snapshots; linear ``tickers`` a snapshot then deltas.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from tests.venues.base import VenueServer

__all__ = ["BybitServer"]

DEPTHS = ("1", "50", "200", "1000")


@dataclass
class _Book:
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    u: int = 4000
    seq: int = 700_000

    def levels(self, side: str, depth: int) -> list[list[str]]:
        book = self.bids if side == "b" else self.asks
        prices = sorted(book, key=Decimal, reverse=side == "b")[:depth]
        return [[p, book[p]] for p in prices]


@dataclass
class _Conn:
    ws: ServerConnection
    category: str
    conn_id: str
    topics: set[str] = field(default_factory=set)


class BybitServer(VenueServer):
    def __init__(
        self, style: str = "compact", *, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    ) -> None:
        super().__init__(style)
        self.symbols = symbols
        self.books = {(c, s): _Book() for c in ("spot", "linear") for s in symbols}
        for (_c, s), book in self.books.items():
            base = 100 if s.startswith("BTC") else 10
            for k in range(1, 8):
                book.bids[f"{base - k}.5"] = f"{k}.125"
                book.asks[f"{base + k}.5"] = f"{k}.875"
        self.live: list[_Conn] = []
        self.trade_seq = itertools.count(900_001)
        self.pings = 0
        self.ts = 1_700_000_000_000

    def subscribers(self, category: str, topic: str) -> list[_Conn]:
        return [c for c in self.live if c.category == category and topic in c.topics]

    def requests(self, op: str) -> list[dict[str, Any]]:
        """Every request with this ``op`` any connection sent, parsed."""
        out = []
        for texts in self.received.values():
            for t in texts:
                msg = json.loads(t)
                if msg.get("op") == op:
                    out.append(msg)
        return out

    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path.rstrip("/") if ws.request else ""
        category = path.removeprefix("/v5/public/")
        if category not in ("spot", "linear"):
            await ws.close(1008, "wrong path")
            return
        conn = _Conn(ws, category, str(uuid.uuid4()))
        self.live.append(conn)
        try:
            async for text in ws:
                assert isinstance(text, str)
                self.received[id(ws)].append(text)
                await self._on_message(conn, text)
        except ConnectionClosed:
            pass
        finally:
            self.live.remove(conn)

    def _reply(self, conn: _Conn, op: str, req_id: object, ok: bool, msg: str) -> dict[str, Any]:
        body: dict[str, Any] = {"success": ok, "ret_msg": msg, "conn_id": conn.conn_id}
        if conn.category == "linear" or req_id is not None:
            body["req_id"] = "" if req_id is None else req_id
        body["op"] = op
        return body

    def _valid(self, category: str, topic: object) -> bool:
        if not isinstance(topic, str):
            return False
        parts = topic.split(".")
        if len(parts) == 2 and parts[0] in ("publicTrade", "tickers"):
            return parts[1] in self.symbols
        return (
            len(parts) == 3
            and parts[0] == "orderbook"
            and parts[1] in DEPTHS
            and parts[2] in self.symbols
        )

    async def _on_message(self, conn: _Conn, text: str) -> None:
        msg = json.loads(text)
        op, req_id = msg.get("op"), msg.get("req_id")
        if op == "ping":
            self.pings += 1
            await self.send(conn.ws, self._reply(conn, "ping", req_id, True, "pong"))
            return
        args = msg.get("args") or []
        if op not in ("subscribe", "unsubscribe"):
            await self.send(conn.ws, self._reply(conn, str(op), req_id, False, "error:op"))
            return
        if conn.category == "spot" and len(args) > 10:
            await self.send(conn.ws, self._reply(conn, op, req_id, False, "args size >10"))
            return
        for topic in args:
            if not self._valid(conn.category, topic):
                reason = f"error:handler not found,topic:{topic}"
                await self.send(conn.ws, self._reply(conn, op, req_id, False, reason))
                return
            if op == "subscribe" and topic in conn.topics:
                reason = f"error:already subscribed,topic:{topic}"
                await self.send(conn.ws, self._reply(conn, op, req_id, False, reason))
                return
        ok = "subscribe" if conn.category == "spot" else ""
        await self.send(conn.ws, self._reply(conn, op, req_id, True, ok))
        for topic in args:
            if op == "unsubscribe":
                conn.topics.discard(topic)
                continue
            conn.topics.add(topic)
            if topic.startswith("orderbook."):
                _, depth, symbol = topic.split(".")
                await self.send(conn.ws, self._book_frame(conn.category, symbol, depth))
            elif topic.startswith("tickers."):
                await self.send(conn.ws, self._ticker(conn.category, topic[8:], "snapshot"))

    def _book_frame(
        self, category: str, symbol: str, depth: str, delta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        book = self.books[(category, symbol)]
        n = int(depth)
        if delta is None or depth == "1":
            data = {"s": symbol, "b": book.levels("b", n), "a": book.levels("a", n)}
            kind = "snapshot"
        else:
            data, kind = {"s": symbol, **delta}, "delta"
        data.update({"u": book.u, "seq": book.seq})
        topic = f"orderbook.{depth}.{symbol}"
        if category == "spot" or depth == "1":  # Bybit: ts before type here, after elsewhere
            return {"topic": topic, "ts": self.ts, "type": kind, "data": data, "cts": self.ts}
        return {"topic": topic, "type": kind, "ts": self.ts, "data": data, "cts": self.ts}

    def _ticker(self, category: str, symbol: str, kind: str) -> dict[str, Any]:
        book = self.books[(category, symbol)]
        bid, ask = book.levels("b", 1)[0], book.levels("a", 1)[0]
        data: dict[str, Any] = {"symbol": symbol, "lastPrice": bid[0]}
        if kind == "snapshot":
            data.update({"bid1Price": bid[0], "bid1Size": bid[1], "ask1Price": ask[0]})
            data.update({"ask1Size": ask[1], "volume24h": "12.5"})
        else:
            data.update({"bid1Price": bid[0], "bid1Size": bid[1]})
        frame: dict[str, Any] = {"topic": f"tickers.{symbol}", "type": kind, "data": data}
        if category == "linear":
            frame["cs"] = book.seq
        frame["ts"] = self.ts
        return frame

    async def _push(self, category: str, topic: str, frame: dict[str, Any]) -> None:
        text = self.dump(frame)
        for conn in self.subscribers(category, topic):
            try:
                await conn.ws.send(text)
            except ConnectionClosed:
                pass

    async def book_delta(
        self,
        category: str,
        symbol: str,
        bids: list[tuple[str, str]] = (),  # type: ignore[assignment]
        asks: list[tuple[str, str]] = (),  # type: ignore[assignment]
        *,
        u: int | None = None,
    ) -> None:
        """Apply and push one delta to every depth's subscribers (size "0" deletes)."""
        book = self.books[(category, symbol)]
        for target, levels in ((book.bids, bids), (book.asks, asks)):
            for px, sz in levels:
                if Decimal(sz) == 0:
                    target.pop(px, None)
                else:
                    target[px] = sz
        book.u = book.u + 1 if u is None else u
        book.seq += 5
        self.ts += 20
        delta = {"b": [list(b) for b in bids], "a": [list(a) for a in asks]}
        for depth in DEPTHS:
            topic = f"orderbook.{depth}.{symbol}"
            await self._push(category, topic, self._book_frame(category, symbol, depth, delta))
        kind = "snapshot" if category == "spot" else "delta"
        await self._push(category, f"tickers.{symbol}", self._ticker(category, symbol, kind))

    async def restart(self, category: str, symbol: str) -> None:
        """The order book service restarted: a snapshot with ``u = 1`` on every depth."""
        book = self.books[(category, symbol)]
        book.u, book.seq = 1, book.seq + 100
        self.ts += 20
        for depth in DEPTHS:
            topic = f"orderbook.{depth}.{symbol}"
            await self._push(category, topic, self._book_frame(category, symbol, depth))

    async def trade(self, category: str, symbol: str, price: str, size: str) -> str:
        tid = str(uuid.uuid4())
        self.ts += 1
        trade = {"T": self.ts, "s": symbol, "S": "Buy", "v": size, "p": price, "L": "PlusTick"}
        trade.update({"i": tid, "BT": False, "RPI": False, "seq": next(self.trade_seq)})
        frame = {"topic": f"publicTrade.{symbol}", "type": "snapshot", "ts": self.ts}
        frame["data"] = [trade]
        await self._push(category, f"publicTrade.{symbol}", frame)
        return tid

    async def settle(self) -> None:
        await asyncio.sleep(0)
