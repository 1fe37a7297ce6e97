"""LeanServerConnection: a relayed client's frames leave verbatim, in order, in one call.

A real websockets server with the gateway's connection class and a hand-written client
that sends raw bytes, so each test decides exactly which frames arrive and how they are
split into TCP reads.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.runtime.drill import run
from wsgate._relayfast import Pipe
from wsgate.runtime.downstream.wsserver import LeanServerConnection
from wsgate.runtime.relaypipe import PyPipe

TIMEOUT = 5.0


def cframe(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_server_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    return b0 & 0x0F, await r.readexactly(n)


class Rig:
    """A server whose handler starts relaying at once (or after ``pre`` messages)."""

    def __init__(
        self,
        *,
        max_size: int = 1 << 20,
        pre: int = 0,
        lower_to: int | None = None,
        pipe: Any = None,
    ) -> None:
        self.lower_to = lower_to  # the frame limit set after the relay starts (a reload)
        self.pipe_cls = pipe  # a relaypipe class writing to ``piped``, or None
        self.piped: list[bytes] = []
        self.forwarded: list[tuple[bytes, int]] = []
        self.out: list[bytes] = []  # piped and forwarded, in the order they left
        self.started: bool | None = None
        self.pre_messages: list[str | bytes] = []
        self.max_size = max_size
        self.pre = pre
        self.close_code: int | None = None
        self.conn: ServerConnection | None = None

    def write(self, data: bytes) -> None:  # the pipe's transport
        self.piped.append(data)
        self.out.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def forward(self, frames: bytes, count: int) -> bool:
        self.forwarded.append((frames, count))
        self.out.append(frames)
        return True

    async def handler(self, ws: ServerConnection) -> None:
        assert isinstance(ws, LeanServerConnection)
        self.conn = ws
        for _ in range(self.pre):
            self.pre_messages.append(await ws.recv())
        await asyncio.sleep(0.05)  # let whatever the client sent next arrive first
        pipe = None
        if self.pipe_cls is not None:
            pipe = self.pipe_cls(self, ws.protocol, ws.protocol.state, 1 << 20, self.max_size, True)
        self.started = ws.start_relay(self.forward, pipe)
        if self.lower_to is not None:
            ws.set_frame_limit(self.lower_to)
        await ws.wait_closed()
        self.close_code = ws.close_code

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, object]:
        server = await serve(
            self.handler,
            "127.0.0.1",
            0,
            create_connection=LeanServerConnection,
            compression=None,
            max_size=self.max_size,
            ping_interval=None,
        )
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        w.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        return r, w, server


@pytest.mark.parametrize("pipe", [None, PyPipe, Pipe], ids=["no-pipe", "py-pipe", "c-pipe"])
@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_data_frames_leave_verbatim_and_control_frames_stay_with_websockets(
    chunk: int, pipe: object
) -> None:
    """With a pipe, the relay protocol takes the transport's reads: whole frames go
    through the pipe, a partial frame or a ping through the Python path, in order."""
    order = cframe(1, b'{"method":"order.place","id":1}')
    frag = [cframe(1, b"par", fin=False), cframe(0, b"t-", fin=False), cframe(0, b"two")]
    big = cframe(2, b"\x00" * 70_000)
    ping = cframe(9, b"hb")
    wire = order + frag[0] + ping + frag[1] + frag[2] + big

    async def main() -> None:
        rig = Rig(pipe=pipe)
        r, w, server = await rig.open()
        await asyncio.sleep(0.1)  # relay on
        for i in range(0, len(wire), chunk):
            w.write(wire[i : i + chunk])
            await w.drain()
        assert await asyncio.wait_for(read_server_frame(r), TIMEOUT) == (0xA, b"hb")
        w.write(cframe(8, struct.pack("!H", 1000)))
        await w.drain()
        assert (await asyncio.wait_for(read_server_frame(r), TIMEOUT))[0] == 0x8
        w.close()
        server.close()  # type: ignore[attr-defined]
        assert rig.started is True
        sent = b"".join(rig.out)
        assert sent == order + frag[0] + frag[1] + frag[2] + big  # bytes as sent, in order
        ws = rig.conn
        assert isinstance(ws, LeanServerConnection)
        assert ws.relayed_frames == 5
        if pipe is None:
            assert not rig.piped
        else:
            assert ws._pipe is not None and ws._pipe.frames == ws.relayed_frames - sum(
                c for _, c in rig.forwarded
            )

    run(main())


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (cframe(1, b"x", mask=False), 1002),  # clients must mask
        (cframe(1, b"x", rsv=0x40), 1002),  # no extension negotiated
        (cframe(2, b"y" * 2000), 1009),  # over max_size
        (cframe(1, b"y" * 1001), 1009),  # just over it, in a 16-bit length
        (cframe(3, b"z"), 1002),  # reserved opcode
    ],
)
@pytest.mark.parametrize("lone", [False, True])  # True: the bad frame is a read of its own
def test_frames_websockets_refuses_fail_the_connection_as_before(
    bad: bytes, code: int, lone: bool
) -> None:
    async def main() -> None:
        rig = Rig(max_size=1000)
        r, w, server = await rig.open()
        await asyncio.sleep(0.1)
        if lone:  # the one-frame shortcut must refuse it too
            w.write(cframe(1, b"ok"))
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(bad)
        else:
            w.write(cframe(1, b"ok") + bad)
        await w.drain()
        opcode, payload = await asyncio.wait_for(read_server_frame(r), TIMEOUT)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code
        w.close()
        server.close()  # type: ignore[attr-defined]
        assert [c for _, c in rig.forwarded] == [1]  # the good frame before it went out

    run(main())


@pytest.mark.parametrize("pipe", [None, PyPipe, Pipe], ids=["no-pipe", "py-pipe", "c-pipe"])
@pytest.mark.parametrize("size", [2000, 70_000])  # a 16-bit and a 64-bit length
def test_a_lowered_frame_limit_holds_on_every_path_of_an_open_relay(
    pipe: object, size: int
) -> None:
    async def main() -> None:
        rig = Rig(max_size=1 << 20, lower_to=1000, pipe=pipe)
        r, w, server = await rig.open()
        await asyncio.sleep(0.1)
        w.write(cframe(1, b"ok"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(cframe(2, b"y" * size))  # one read of its own: shortcut or pipe
        await w.drain()
        opcode, payload = await asyncio.wait_for(read_server_frame(r), TIMEOUT)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
        w.close()
        server.close()  # type: ignore[attr-defined]
        passed = len(rig.piped) + sum(c for _, c in rig.forwarded)
        assert passed == 1  # only the small frame went out

    run(main())


def test_relay_is_refused_while_websockets_still_holds_a_message() -> None:
    async def main() -> None:
        rig = Rig(pre=1)
        _r, w, server = await rig.open()
        # Two messages in one read: the handler takes one with recv(), one stays queued.
        w.write(cframe(1, b"first") + cframe(1, b"second"))
        await w.drain()
        for _ in range(100):
            if rig.started is not None:
                break
            await asyncio.sleep(0.02)
        assert rig.pre_messages == ["first"] and rig.started is False
        w.close()
        server.close()  # type: ignore[attr-defined]

    run(main())
