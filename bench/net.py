"""Load-generation primitives shared by the scenarios: frames, the raw client, statistics.

The instrument client is a bare :class:`asyncio.Protocol` with a hand-written
WebSocket handshake. A websockets client costs about as much CPU per message as the
server under test, and with two cores that would measure the client; this one counts
frames with a C-speed ``bytes.count`` and takes one latency sample per read chunk from
the *oldest* frame in it (conservative: queueing inside a chunk only makes it older).

Every frame carries its send time as a 20-digit number just before its closing
``]]``: ``10**19 + time.monotonic_ns()``. CLOCK_MONOTONIC is system wide on Linux, so
``now - ts`` across processes is a one-way latency.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
from array import array
from collections.abc import Sequence
from typing import Any, cast

__all__ = [
    "TS_BASE",
    "RawClient",
    "client_frame",
    "open_clients",
    "percentiles",
    "ticker_frame",
]

TS_BASE = 10**19  # keeps the stamp 20 digits wide without leading zeros (valid JSON)
END = b"]]"
# A ticker-sized body (Bitfinex ticker fields); the stamp is appended as an 11th field.
_TICKER = b"[%d,[29999,12.51,30001,8.25,-120.5,-0.004,30000,18456.75,30500,29500,%d]]"


def ticker_frame(chan_id: int) -> bytes:
    """A Bitfinex ticker update stamped now (about 100 bytes, like a real ticker)."""
    return _TICKER % (chan_id, TS_BASE + time.monotonic_ns())


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client-to-server frame (RFC 6455 5.3: clients must mask)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    mask = os.urandom(4)
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes(head) + mask + body


class RawClient(asyncio.Protocol):
    """One downstream connection that counts stamped frames and samples latency."""

    def __init__(self, host: str, port: int, path: str, on_open: bytes | None) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_open = on_open
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready_marker: bytes | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handshaking = True
        self._buf = b""
        self._prev_last = 0
        self.measuring = False
        self.count = 0
        self.first = 0
        self.last = 0
        self.max_silence = 0  # longest time between two data reads while measuring
        self.samples: array[int] = array("q")
        self.sample_every = 1
        self._chunks = 0
        self.closed = False
        self.seen = b""  # text seen before measuring, for readiness checks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self._handshaking:
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = self._buf[:end], self._buf[end + 4 :]
            self._buf = b""
            self._handshaking = False
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(head[:80].decode("latin-1")))
                return
            if self.on_open is not None and self.transport is not None:
                self.transport.write(client_frame(self.on_open))
            if not self.opened.done():
                self.opened.set_result(None)
            if not rest:
                return
            data = rest
        if not self.measuring:
            if self.ready_marker is not None and not self.ready.done():
                self.seen = (self.seen + data)[-4096:]
                if self.ready_marker in self.seen:
                    self.ready.set_result(None)
            self._prev_last = data[-1]
            return
        n = data.count(END)
        # A "]]" split across two reads still counts once.
        if self._prev_last == 0x5D and data[0] == 0x5D:
            n += 1
        self._prev_last = data[-1]
        if not n:
            return
        now = time.monotonic_ns()
        if not self.count:
            self.first = now
        elif now - self.last > self.max_silence:
            self.max_silence = now - self.last
        self.count += n
        self.last = now
        self._chunks += 1
        if self._chunks % self.sample_every:
            return
        p = data.find(END)
        if p >= 20:
            try:
                ts = int(data[p - 20 : p]) - TS_BASE
            except ValueError:
                return
            self.samples.append(now - ts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during handshake"))

    def start(self, sample_every: int) -> None:
        self.measuring = True
        self.count = self.first = self.last = self._chunks = self.max_silence = 0
        self.samples = array("q")
        self.sample_every = max(1, sample_every)


async def open_clients(
    host: str,
    port: int,
    path: str,
    n: int,
    *,
    on_open: bytes | None = None,
    ready_marker: bytes | None = None,
    concurrency: int = 100,
    limit: float = 60.0,
) -> list[RawClient]:
    """Open ``n`` clients, ``concurrency`` handshakes at a time; all must succeed."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    out: list[RawClient] = []

    async def one() -> None:
        async with sem:
            client = RawClient(host, port, path, on_open)
            client.ready_marker = ready_marker
            await loop.create_connection(lambda: client, host, port)
            await client.opened
            if ready_marker is not None:
                await client.ready
            out.append(client)

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), limit)
    return out


def percentiles(samples_ns: Sequence[int] | array[int], qs: Sequence[float]) -> list[float]:
    """Nearest-rank percentiles in microseconds; NaN when there are no samples."""
    if not samples_ns:
        return [math.nan for _ in qs]
    s = sorted(samples_ns)
    n = len(s)
    return [s[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))] / 1000.0 for q in qs]


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median with min and max, for repeated measurements."""
    v = sorted(x for x in values if not math.isnan(x))
    if not v:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    mid = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    return {"median": mid, "min": v[0], "max": v[-1]}
