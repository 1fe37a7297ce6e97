"""A Binance USD-M futures stream server (fstream) written from Binance's documentation
(not wsgate.sim).

* Paths: ``/public`` carries ``@depth*``, ``@bookTicker`` and ``@trade``; ``/market``
  everything else (``@aggTrade``, ``@markPrice``, ...). Each takes ``/ws/<s1>/<s2>``,
  ``/ws`` and ``/stream?streams=a/b``. A stream on the wrong path is acknowledged and then
  stays silent, as fstream does.
* ``{"method":"SUBSCRIBE"|"UNSUBSCRIBE"|"LIST_SUBSCRIPTIONS","params":[...],"id":N}`` is
  answered ``{"result":null,"id":N}``; a malformed request ``{"error":{"code":2,..},"id":N}``.
* ``<s>@depth[@100ms|@500ms]``: ``depthUpdate`` with ``U``, ``u`` and ``pu`` (the previous
  event's ``u``), pushed only when the book changed; ``@depth5/10/20[@100ms|@500ms]``:
  the top levels (same fields), every push; REST ``/fapi/v1/depth`` gives ``lastUpdateId``.
* ``@aggTrade`` (``a``, ``f``, ``l``) and ``@trade`` (``t``); REST ``/fapi/v1/aggTrades`` and
  ``/fapi/v1/trades`` for the ones a client missed.
* The server sends ping frames every ``ping_every`` seconds and closes a connection that
  does not answer one within ``pong_timeout`` (fstream: 3 and 10 minutes).
"""

from __future__ import annotations

import http
import itertools
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.venues.base import VenueServer

__all__ = ["UsdmServer"]

PUBLIC_EVENTS = ("depth", "bookTicker", "trade")


def _path_of(stream: str) -> str:
    event = stream.split("@")[1] if "@" in stream else ""
    return "public" if any(event.startswith(e) for e in PUBLIC_EVENTS) else "market"


@dataclass
class _Book:
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    u: int = 5_000_000

    def levels(self, side: str, depth: int = 1000) -> list[list[str]]:
        book = self.bids if side == "b" else self.asks
        prices = sorted(book, key=Decimal, reverse=side == "b")[:depth]
        return [[p, book[p]] for p in prices]


@dataclass
class _Conn:
    ws: ServerConnection
    area: str  # public | market
    combined: bool
    streams: set[str] = field(default_factory=set)


class UsdmServer(VenueServer):
    def __init__(
        self,
        style: str = "compact",
        *,
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
        ping_every: float | None = None,
        pong_timeout: float = 10.0,
    ) -> None:
        super().__init__(style)
        self.symbols = symbols
        self.ping_every = ping_every
        self.pong_timeout = pong_timeout
        self.books = {s: _Book() for s in symbols}
        for s, book in self.books.items():
            base = 100 if s.startswith("BTC") else 10
            for k in range(1, 8):
                book.bids[f"{base - k}.10"] = f"{k}.500"
                book.asks[f"{base + k}.10"] = f"{k}.250"
        self.agg_ids = itertools.count(3_000_001)
        self.trade_ids = itertools.count(8_000_001)
        self.aggs: dict[str, list[dict[str, Any]]] = {s: [] for s in symbols}
        self.trades: dict[str, list[dict[str, Any]]] = {s: [] for s in symbols}
        self.live: list[_Conn] = []
        self.rest_calls: list[str] = []
        self.t = 1_700_000_000_000

    async def __aenter__(self) -> UsdmServer:
        self._server = await serve(
            self._run,
            "127.0.0.1",
            0,
            compression=None,
            ping_interval=self.ping_every,
            ping_timeout=self.pong_timeout,
            process_request=self._rest,
        )
        for sock in self._server.sockets:
            self.port = sock.getsockname()[1]
        return self

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fapi/v1"

    def subscribers(self, stream: str) -> list[_Conn]:
        return [c for c in self.live if stream in c.streams and c.area == _path_of(stream)]

    def requests(self, method: str) -> list[dict[str, Any]]:
        out = []
        for texts in self.received.values():
            for t in texts:
                msg = json.loads(t)
                if msg.get("method") == method:
                    out.append(msg)
        return out

    # ---------------------------------------------------------------- REST
    def _rest(self, ws: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.rest_calls.append(request.path)
        symbol = q.get("symbol", "")
        body: Any
        if url.path == "/fapi/v1/depth" and symbol in self.books:
            book = self.books[symbol]
            limit = int(q.get("limit", "500"))
            body = {"lastUpdateId": book.u, "E": self.t, "T": self.t}
            body.update({"bids": book.levels("b", limit), "asks": book.levels("a", limit)})
        elif url.path == "/fapi/v1/aggTrades" and symbol in self.aggs:
            start = int(q.get("fromId", "0"))
            body = [a for a in self.aggs[symbol] if a["a"] >= start][: int(q.get("limit", 500))]
        elif url.path == "/fapi/v1/trades" and symbol in self.trades:
            body = self.trades[symbol][-int(q.get("limit", 500)) :]
        else:
            body = {"code": -1121, "msg": "Invalid symbol."}
            return Response(
                400,
                "Bad Request",
                Headers({"Content-Type": "application/json"}),
                json.dumps(body).encode(),
            )
        data = json.dumps(body).encode()
        headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(data))})
        return Response(http.HTTPStatus.OK, "OK", headers, data)

    # ---------------------------------------------------------------- WebSocket
    async def handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "")
        parts = url.path.strip("/").split("/")
        if (
            len(parts) < 2
            or parts[0] not in ("public", "market")
            or parts[1] not in ("ws", "stream")
        ):
            await ws.close(1008, "wrong path")
            return
        conn = _Conn(ws, parts[0], parts[1] == "stream")
        if conn.combined:
            conn.streams.update(
                s for s in parse_qs(url.query).get("streams", [""])[0].split("/") if s
            )
        else:
            conn.streams.update(parts[2:])
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

    async def _on_message(self, conn: _Conn, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            await self.send(conn.ws, {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        method, params, req_id = msg.get("method"), msg.get("params"), msg.get("id")
        if method == "LIST_SUBSCRIPTIONS":
            await self.send(conn.ws, {"result": sorted(conn.streams), "id": req_id})
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list) or not params:
            err = {"code": 2, "msg": "Invalid request: streams must have non-zero length"}
            await self.send(conn.ws, {"error": err, "id": req_id})
            return
        for s in params:
            if method == "SUBSCRIBE":
                conn.streams.add(s)
            else:
                conn.streams.discard(s)
        await self.send(conn.ws, {"result": None, "id": req_id})

    def _frame(self, conn: _Conn, stream: str, data: dict[str, Any]) -> str:
        return self.dump({"stream": stream, "data": data} if conn.combined else data)

    async def _push(self, stream: str, data: dict[str, Any]) -> None:
        for conn in self.subscribers(stream):
            try:
                await conn.ws.send(self._frame(conn, stream, data))
            except ConnectionClosed:
                pass

    def _streams(self, prefix: str) -> set[str]:
        return {s for c in self.live for s in c.streams if s.startswith(prefix)}

    async def book_update(
        self,
        symbol: str,
        bids: list[tuple[str, str]] = (),  # type: ignore[assignment]
        asks: list[tuple[str, str]] = (),  # type: ignore[assignment]
    ) -> None:
        """Apply one change (quantity "0" deletes) and push it to diff and partial streams."""
        book = self.books[symbol]
        for target, levels in ((book.bids, bids), (book.asks, asks)):
            for px, q in levels:
                if Decimal(q) == 0:
                    target.pop(px, None)
                else:
                    target[px] = q
        pu, first = book.u, book.u + 1
        book.u += 4
        self.t += 100
        low = symbol.lower()
        head = {"e": "depthUpdate", "E": self.t, "T": self.t - 2, "s": symbol}
        ids = {"U": first, "u": book.u, "pu": pu}
        for stream in self._streams(f"{low}@depth"):
            levels = stream.split("@")[1][5:]
            if levels:
                n = int(levels)
                body = {**head, **ids, "b": book.levels("b", n), "a": book.levels("a", n)}
            else:
                body = {**head, **ids, "b": [list(b) for b in bids], "a": [list(a) for a in asks]}
            await self._push(stream, body)

    async def agg_trade(self, symbol: str, price: str, qty: str) -> int:
        self.t += 1
        tid = next(self.trade_ids)
        trade = {"e": "trade", "E": self.t, "T": self.t, "s": symbol, "t": tid, "p": price}
        trade.update({"q": qty, "X": "MARKET", "m": True})
        aid = next(self.agg_ids)
        agg = {"e": "aggTrade", "E": self.t, "s": symbol, "a": aid, "p": price, "q": qty}
        agg.update({"f": tid, "l": tid, "T": self.t, "m": True})
        self.aggs[symbol].append({k: agg[k] for k in ("a", "p", "q", "f", "l", "T", "m")})
        self.trades[symbol].append({"id": tid, "price": price, "qty": qty, "time": self.t})
        low = symbol.lower()
        await self._push(f"{low}@trade", trade)
        await self._push(f"{low}@aggTrade", agg)
        return aid

    async def mark_price(self, symbol: str, price: str) -> None:
        self.t += 1
        body = {"e": "markPriceUpdate", "E": self.t, "s": symbol, "p": price, "i": price}
        body.update({"P": price, "r": "0.00010000", "T": self.t + 3_600_000})
        low = symbol.lower()
        for stream in self._streams(f"{low}@markPrice"):
            await self._push(stream, body)
