"""A minimal, hand-written Binance combined-stream server (spot or USD-M market data).

Independent of :mod:`wsgate.sim` on purpose, and different from it where Binance's
documentation leaves room: a refusal is written in the documented flat form
``{"code":2,"msg":"Invalid request: ...","id":N}`` (the simulator nests it under
``"error"``), and the test decides when each answer goes out. It serves any path, takes
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` for ``<symbol>@trade`` and
``<symbol>@aggTrade`` of :data:`SYMBOLS` (any other stream refuses the whole request, as
Binance does), and sends each subscribed stream a trade every ``interval`` seconds with
contiguous ids, wrapped as ``{"stream":...,"data":...}``.

``held`` (a set of stream names) keeps the answer to any request naming one of them until
:meth:`release` is called; the streams of other requests flow meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["SYMBOLS", "FakeBinance"]

SYMBOLS = ("btcusdt", "ethusdt", "bnbusdt")


@dataclass(eq=False)
class _Conn:
    ws: ServerConnection
    streams: dict[str, None] = field(default_factory=dict)


class FakeBinance:
    """``async with FakeBinance() as ex:`` serves on 127.0.0.1:0 (``ex.url``)."""

    def __init__(self, *, interval: float = 0.02) -> None:
        self.interval = interval
        self.held: set[str] = set()
        self.requests: list[dict[str, Any]] = []  # every request received, in order
        self.conns: list[_Conn] = []
        self._parked: list[tuple[_Conn, dict[str, Any]]] = []
        self._ids: dict[str, int] = {}
        self._server: Server | None = None
        self._pump: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    def subscribed(self) -> set[str]:
        """Every stream some connection is subscribed to now."""
        return {s for c in self.conns for s in c.streams}

    def parked(self) -> int:
        return len(self._parked)

    async def __aenter__(self) -> FakeBinance:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        self._pump = asyncio.create_task(self._trades())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._pump is not None
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._server.close()
        await self._server.wait_closed()

    async def release(self) -> None:
        """Answer every held request now."""
        parked, self._parked = self._parked, []
        for conn, req in parked:
            await self._answer(conn, req)

    async def _handler(self, ws: ServerConnection) -> None:
        conn = _Conn(ws)
        self.conns.append(conn)
        try:
            async for raw in ws:
                req = json.loads(raw)
                self.requests.append(req)
                if self.held.intersection(req.get("params") or ()):
                    self._parked.append((conn, req))
                else:
                    await self._answer(conn, req)
        except ConnectionClosed:
            pass
        finally:
            self.conns.remove(conn)

    @staticmethod
    def _known(stream: str) -> bool:
        symbol, _, event = stream.partition("@")
        return symbol in SYMBOLS and event in ("trade", "aggTrade")

    async def _answer(self, conn: _Conn, req: dict[str, Any]) -> None:
        method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
        if method == "LIST_SUBSCRIPTIONS":
            reply: dict[str, Any] = {"result": list(conn.streams), "id": rid}
        elif method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            bad = [p for p in params if not self._known(p)]
            if bad:  # the whole request is refused: none of its streams is taken
                reply = {"code": 2, "msg": f"Invalid request: unknown stream {bad[0]}", "id": rid}
            else:
                for p in params:
                    if method == "SUBSCRIBE":
                        conn.streams[p] = None
                    else:
                        conn.streams.pop(p, None)
                reply = {"result": None, "id": rid}
        else:
            reply = {"code": 2, "msg": f"Invalid request: unknown variant {method}", "id": rid}
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(json.dumps(reply, separators=(",", ":")))

    async def _trades(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for conn in list(self.conns):
                for stream in list(conn.streams):
                    symbol, _, event = stream.partition("@")
                    n = self._ids[stream] = self._ids.get(stream, 0) + 1
                    ident = {"t": n} if event == "trade" else {"a": n, "f": n, "l": n}
                    data = {"e": event, "E": n, "s": symbol.upper(), **ident, "p": "1.5"}
                    frame = {"stream": stream, "data": data}
                    with contextlib.suppress(ConnectionClosed):
                        await conn.ws.send(json.dumps(frame, separators=(",", ":")))
