"""wsgate (the embedded ``Gateway``) in front of one independent venue server, and the
bot-side helpers the venue tests share."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection

from wsgate import Gateway
from wsgate.config import parse_config

__all__ = ["FAST", "Inbox", "gateway"]

# reconnect quickly in tests; the app ping stays the route default unless a test sets it
FAST: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.2, "min_uptime": 0}


def _toml(value: Any) -> str:
    return json.dumps(value)


@asynccontextmanager
async def gateway(
    dialect: str, url: str, *, kind: str = "market_data", rest_url: str = "", **options: Any
) -> AsyncIterator[Gateway]:
    """A Gateway with one route ``venue`` of ``dialect`` whose one endpoint is ``url``."""
    opts = {**FAST, **options}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        lines = [
            "[daemon]",
            f'control_socket = "{tmp}/ctl.sock"',
            f'state_dir = "{tmp}/state"',
            "[gateway]",
            'listen = "127.0.0.1:0"',
            "linger = 0.3",
            "[metrics]",
            'listen = ""',
            "[routes.venue]",
            f'dialect = "{dialect}"',
            f'type = "{kind}"',
            *([f'rest_url = "{rest_url}"'] if rest_url else []),
            *(f"{k} = {_toml(v)}" for k, v in opts.items()),
            "[[routes.venue.endpoints]]",
            f'url = "{url}"',
        ]
        async with Gateway(parse_config("\n".join(lines) + "\n"), seed=7) as gw:
            yield gw


class Inbox:
    """Every frame one bot receives, parsed (``"pong"``-like text kept as a string),
    collected by a task so a test can wait for conditions over them."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        self.closed: BaseException | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    self.frames.append(json.loads(raw))
                except ValueError:
                    self.frames.append(raw)
        except Exception as exc:  # kept for the test to look at
            self.closed = exc

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def where(self, pred: Callable[[Any], bool]) -> list[Any]:
        out = []
        for f in self.frames:
            try:
                if pred(f):
                    out.append(f)
            except (AttributeError, KeyError, TypeError, IndexError):
                continue
        return out

    async def wait(
        self, pred: Callable[[Any], bool], count: int = 1, limit: float = 10.0
    ) -> list[Any]:
        try:
            async with asyncio.timeout(limit):
                while len(self.where(pred)) < count:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {limit}s: {len(self.where(pred))}/{count} matching frames;"
                f" last frames: {self.frames[-5:]}"
            ) from None
        return self.where(pred)

    async def aclose(self) -> None:
        await self.ws.close()
        self._task.cancel()
