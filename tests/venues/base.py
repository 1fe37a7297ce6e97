"""The common part of the independent venue servers: a WebSocket server on 127.0.0.1:0
that writes JSON the way a venue may (compact, pretty-printed, keys reordered, strings
escaped) and lets a test push frames and cut connections.

These servers are written from the venues' documentation, not from ``wsgate.sim``: they
share no code with the gateway or its simulator, so the gateway is tested against a
second reading of each protocol.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

__all__ = ["STYLES", "VenueServer", "dump"]

STYLES = ("compact", "pretty", "reordered", "escaped")


def _reorder(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reorder(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reorder(v) for v in obj]
    return obj


def dump(obj: Any, style: str = "compact") -> str:
    """``obj`` as JSON in one of :data:`STYLES` (every one valid JSON of the same value)."""
    if style == "compact":
        return json.dumps(obj, separators=(",", ":"))
    if style == "pretty":
        return json.dumps(obj, indent=2) + "\n"
    if style == "reordered":
        return json.dumps(_reorder(obj), separators=(", ", " : "))
    if style == "escaped":
        # ensure_ascii plus escaped slashes and letters: "\u0062ooks" is "books"
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")
        return text.replace('"channel"', '"\\u0063hannel"').replace('"topic"', '"\\u0074opic"')
    raise ValueError(f"unknown style {style!r}; styles: {', '.join(STYLES)}")


class VenueServer:
    """Base class: ``async with Server(style=...) as srv`` serves ``srv.url``.

    Subclasses implement :meth:`handle` (one connection) and keep their own state.
    ``received`` holds every text frame each connection sent, in order.
    """

    def __init__(self, style: str = "compact") -> None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}")
        self.style = style
        self.port = 0
        self.conns: list[ServerConnection] = []
        self.received: dict[int, list[str]] = {}
        self.paths: dict[int, str] = {}
        self.connects = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def dump(self, obj: Any) -> str:
        return dump(obj, self.style)

    async def __aenter__(self) -> VenueServer:
        self._server = await serve(self._run, "127.0.0.1", 0, compression=None, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0
        for sock in self._server.sockets:
            self.port = sock.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _run(self, ws: ServerConnection) -> None:
        self.connects += 1
        self.conns.append(ws)
        self.received[id(ws)] = []
        self.paths[id(ws)] = ws.request.path if ws.request else ""
        try:
            await self.handle(ws)
        finally:
            self.conns.remove(ws)

    async def handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def send(self, ws: ServerConnection, obj: Any) -> None:
        await ws.send(obj if isinstance(obj, str) else self.dump(obj))

    async def drop_all(self, code: int = 1001) -> None:
        """Close every connection (a restart, a 24 h cut, a deploy)."""
        for ws in list(self.conns):
            await ws.close(code)

    @staticmethod
    async def until(cond: Callable[[], bool], limit: float = 10.0, what: str = "") -> None:
        try:
            async with asyncio.timeout(limit):
                while not cond():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"timed out after {limit}s waiting for {what or cond}") from None


Handler = Callable[[ServerConnection], Awaitable[None]]
