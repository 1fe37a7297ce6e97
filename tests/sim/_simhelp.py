"""Helpers shared by the simulator tests: bounded waits only."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_json(ws: ClientConnection, within: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), within))


async def recv_until(
    ws: ClientConnection, pred: Callable[[Any], bool], within: float = 5.0, limit: int = 5000
) -> Any:
    """Next message satisfying ``pred`` (messages before it are discarded)."""

    async def loop() -> Any:
        for _ in range(limit):
            msg = json.loads(await ws.recv())
            if pred(msg):
                return msg
        raise AssertionError(f"no matching message in {limit} messages")

    return await asyncio.wait_for(loop(), within)


async def wait_for(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a cheap in-process condition; bounded."""

    async def loop() -> None:
        # The simulator's state has no event to await; a short poll bounded by `within`.
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    await asyncio.wait_for(loop(), within)


async def assert_silent(ws: ClientConnection, window: float) -> None:
    """No frame arrives within ``window`` seconds: a bounded wait for what must not happen."""
    try:
        msg = await asyncio.wait_for(ws.recv(), window)
    except TimeoutError:
        return
    raise AssertionError(f"expected silence, got {msg!r}")


def is_chan(chan_id: int, kind: str | None = None) -> Callable[[Any], bool]:
    def pred(msg: Any) -> bool:
        if not (isinstance(msg, list) and msg and msg[0] == chan_id):
            return False
        return kind is None or msg[1] == kind

    return pred


def event(name: str) -> Callable[[Any], bool]:
    return lambda msg: isinstance(msg, dict) and msg.get("event") == name


def independent_checksum(bids: list[list[Any]], asks: list[list[Any]]) -> int:
    """Bitfinex's documented algorithm, written independently of the simulator."""
    values: list[str] = []
    for i in range(25):
        if i < len(bids):
            values += [str(bids[i][0]), str(bids[i][2])]
        if i < len(asks):
            values += [str(asks[i][0]), str(asks[i][2])]
    crc = zlib.crc32(":".join(values).encode()) & 0xFFFFFFFF
    return crc - 0x100000000 if crc & 0x80000000 else crc


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*aws))
