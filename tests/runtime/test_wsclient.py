"""LeanClientConnection against a hand-written loopback WebSocket server.

The server speaks raw bytes, so every test decides exactly which frames (valid or not)
reach the client and how they are split into TCP writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Frame, Opcode

from tests.runtime.drill import run, wait_for
from wsgate._relayfast import Pipe
from wsgate.runtime.framing import encode_binary, encode_text
from wsgate.runtime.relaypipe import PyPipe
from wsgate.runtime.upstream.connection import HostBudgets, UpstreamConnection, UpstreamSettings
from wsgate.runtime.upstream.wsclient import LeanClientConnection

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 5.0

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = False
) -> bytes:
    """A server frame, built by hand so tests can also build invalid ones."""
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if mask:
        key = b"\x01\x02\x03\x04"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def text(s: str, **kw: Any) -> bytes:
    return frame(1, s.encode(), **kw)


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(8, struct.pack("!H", code) + reason.encode())


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(opcode, unmasked payload, was masked) of one client frame."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    masked = bool(b1 & 0x80)
    key = await reader.readexactly(4) if masked else b"\0\0\0\0"
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data)), masked


class RawServer:
    """Accepts one WebSocket handshake, then runs ``script`` on the raw streams."""

    def __init__(self, script: Script, *, first: bytes = b"", status: bytes = b"") -> None:
        self.script = script
        self.first = first  # written in the same write as the 101 response
        self.status = status  # a full non-101 HTTP response instead of the handshake
        self.done = asyncio.Event()
        self.error: BaseException | None = None
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if self.status:
                writer.write(self.status)
                await writer.drain()
                return
            key = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.first
            )
            await writer.drain()
            await self.script(reader, writer)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc
        finally:
            self.done.set()
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def lean_connect(url: str, **kw: Any) -> LeanClientConnection:
    opts: dict[str, Any] = {"ping_interval": None, "compression": None, "proxy": None}
    opts.update(kw)
    ws = await asyncio.wait_for(
        connect(url, create_connection=LeanClientConnection, **opts), TIMEOUT
    )
    assert isinstance(ws, LeanClientConnection)
    return ws


async def receive_all(ws: LeanClientConnection) -> list[str | bytes]:
    got: list[str | bytes] = []
    ws.set_handler(got.append)
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return got


# ---------------------------------------------------------------------------- data frames
def test_lengths_kinds_and_frames_sent_with_the_handshake_arrive_in_order() -> None:
    big = "x" * 70_000  # 64-bit length
    mid = "é" * 200  # 16-bit length, multi-byte UTF-8
    stream = text('{"event":"info"}') + text(mid) + frame(2, b"\x00\xff") + text(big)

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(close_frame(1000))
        await w.drain()
        await read_client_frame(r)  # the close echo

    async def main() -> None:
        srv = RawServer(script, first=stream)  # frames in the same TCP write as the 101
        async with srv as url:
            ws = await lean_connect(url)
            assert ws.lean
            got = await receive_all(ws)
            assert got == ['{"event":"info"}', mid, b"\x00\xff", big]
            assert isinstance(ws.protocol.close_exc, ConnectionClosedOK)
            st = ws.statistics()
            assert st.messages == 4 and st.mode == "passthrough" and st.control_frames == 1

    run(main())


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_frames_split_across_reads(chunk: int) -> None:
    msgs = [f"m{i}:" + "y" * (i * 37 % 300) for i in range(40)]
    data = b"".join(text(m) for m in msgs) + frame(1, b"frag-", fin=False) + frame(0, b"end")

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(0, len(data), chunk):
            w.write(data[i : i + chunk])
            await w.drain()
        w.write(close_frame(1000))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url)
            got = await receive_all(ws)
            assert got == [*msgs, "frag-end"]

    run(main())


def test_fragmented_message_with_a_ping_in_between_gets_a_masked_pong() -> None:
    pongs: list[tuple[int, bytes, bool]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(frame(1, "hé".encode()[:2], fin=False))  # split inside a UTF-8 sequence
        w.write(frame(9, b"abc"))
        w.write(frame(0, "hé".encode()[2:] + b"-", fin=False))
        w.write(frame(0, b"done"))
        await w.drain()
        pongs.append(await read_client_frame(r))
        w.write(close_frame(1000))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url)
            got = await receive_all(ws)
            assert got == ["hé-done"]
            assert pongs == [(0xA, b"abc", True)]  # RFC 6455 §5.3: client frames are masked

    run(main())


def test_client_frames_are_masked_and_own_pings_measure_rtt() -> None:
    seen: list[tuple[int, bytes, bool]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await read_client_frame(r))  # the text message
        op, payload, _ = await read_client_frame(r)  # our ping
        seen.append((op, b"", True))
        w.write(frame(10, payload))
        await w.drain()
        seen.append(await read_client_frame(r))  # the close
        w.write(close_frame(1000))
        await w.drain()

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url)
            ws.set_handler(lambda m: None)
            await ws.send('{"event":"subscribe"}')
            waiter = await ws.ping()
            rtt = await asyncio.wait_for(waiter, TIMEOUT)
            assert rtt >= 0.0
            await asyncio.wait_for(ws.close(), TIMEOUT)
            assert seen[0] == (1, b'{"event":"subscribe"}', True)
            assert seen[1][0] == 9
            assert seen[2][0] == 8 and seen[2][2]
            assert isinstance(ws.protocol.close_exc, ConnectionClosedOK)

    run(main())


# ---------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(1, b"\xff\xfe"), 1007),  # invalid UTF-8
        (frame(1, b"hi", mask=True), 1002),  # servers must not mask
        (frame(1, b"hi", rsv=0x40), 1002),  # no extension negotiated
        (frame(0, b"orphan"), 1002),  # continuation without a start
        (frame(1, b"a", fin=False) + frame(1, b"b"), 1002),  # new message inside one
        (frame(3, b"?"), 1002),  # reserved data opcode
        (frame(2, b"z" * 2000), 1009),  # over max_size
    ],
)
def test_protocol_violations_fail_with_the_websockets_close_code(bad: bytes, code: int) -> None:
    closes: list[tuple[int, bytes, bool]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text("before") + bad + text("after"))
        await w.drain()
        closes.append(await read_client_frame(r))
        w.write(close_frame(struct.unpack("!H", closes[0][1][:2])[0]))  # echo the code
        await w.drain()

    async def main() -> None:
        srv = RawServer(script)
        async with srv as url:
            ws = await lean_connect(url, max_size=1024)
            got = await receive_all(ws)
            await asyncio.wait_for(srv.done.wait(), TIMEOUT)
            assert srv.error is None
            assert got == ["before"]  # nothing after the violation is processed
            op, payload, masked = closes[0]
            assert op == 8 and masked
            assert struct.unpack("!H", payload[:2])[0] == code
            exc = ws.protocol.close_exc
            assert isinstance(exc, ConnectionClosedError)
            assert exc.sent is not None and exc.sent.code == code

    run(main())


def test_peer_close_code_is_reported_like_websockets() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text("x") + close_frame(4001, "bye") + text("ignored"))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url)
            got = await receive_all(ws)
            assert got == ["x"]
            exc = ws.protocol.close_exc
            assert isinstance(exc, ConnectionClosedError)
            assert exc.rcvd is not None and exc.rcvd.code == 4001 and exc.rcvd.reason == "bye"

    run(main())


def test_abrupt_eof_mid_frame_is_an_abnormal_closure() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text("whole") + text("cut short")[:5])
        await w.drain()

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url)
            got = await receive_all(ws)
            assert got == ["whole"]
            exc = ws.protocol.close_exc
            assert isinstance(exc, ConnectionClosedError) and exc.rcvd is None

    run(main())


def test_rejected_handshake_keeps_websockets_errors() -> None:
    response = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow"

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise AssertionError("not reached")

    async def main() -> None:
        async with RawServer(script, status=response) as url:
            with pytest.raises(InvalidStatus) as info:
                await lean_connect(url)
            assert info.value.response.status_code == 429
            assert info.value.response.headers["Retry-After"] == "7"
            assert info.value.response.body == b"slow"

    run(main())


# ---------------------------------------------------------------------------- handler, fairness
def test_handler_errors_are_counted_and_do_not_stop_the_stream() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text("a") + text("boom") + text("b") + close_frame(1000))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        got: list[str | bytes] = []

        def handler(m: str | bytes) -> None:
            if m == "boom":
                raise ValueError("sink bug")
            got.append(m)

        async with RawServer(script) as url:
            ws = await lean_connect(url)
            ws.set_handler(handler)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert got == ["a", "b"]
            assert ws.statistics().handler_errors == 1

    run(main())


def test_reader_yields_to_the_loop_between_slices() -> None:
    count = 3000
    data = b"".join(text(str(i)) for i in range(count))
    ticks: list[int] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(data)
        await w.drain()
        await read_client_frame(r)  # the client closes once it has everything
        w.write(close_frame(1000))
        await w.drain()

    async def main() -> None:
        got: list[str | bytes] = []
        async with RawServer(script) as url:
            ws = await lean_connect(url)
            ws.slice_seconds = 0.0  # yield after every message

            async def ticker() -> None:
                while True:
                    ticks.append(len(got))
                    await asyncio.sleep(0)

            t = asyncio.get_running_loop().create_task(ticker())
            ws.set_handler(got.append)
            await wait_for(lambda: len(got) == count)
            t.cancel()
            await asyncio.wait_for(ws.close(), TIMEOUT)
            assert got == [str(i) for i in range(count)]
            assert ws.statistics().yields > 0
            # Another task ran while the backlog was being parsed, not only after it.
            assert any(0 < n < count for n in ticks)

    run(main())


def test_unclaimed_backlog_pauses_reading_until_a_handler_is_set() -> None:
    payload = os.urandom(32 * 1024)
    total = 48  # 1.5 MiB: over the unclaimed limit

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for _ in range(total):
            w.write(frame(2, payload))
        await w.drain()
        await read_client_frame(r)
        w.write(close_frame(1000))
        await w.drain()

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url, max_size=2**20)
            await wait_for(lambda: ws.statistics().buffered > 2**20)
            got: list[str | bytes] = []
            ws.set_handler(got.append)
            await wait_for(lambda: len(got) == total)
            assert all(m == payload for m in got)
            await asyncio.wait_for(ws.close(), TIMEOUT)

    run(main())


# ---------------------------------------------------------------------------- parity
class _Sink:
    def __init__(self) -> None:
        self.frames: list[str | bytes] = []
        self.closed: list[str] = []

    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        pass

    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None:
        self.frames.append(data)

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        self.closed.append(reason)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(("code", "reason"), [(1000, "closed by peer"), (4001, "code 4001")])
def test_upstream_connection_reports_alike(fast: bool, code: int, reason: str) -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text("one") + frame(2, b"two") + close_frame(code))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        async with RawServer(script) as url:
            settings = UpstreamSettings(
                route="r", endpoint="e", url=url, fast_reader=fast, reconnect=False
            )
            sink = _Sink()
            conn = UpstreamConnection("r-c1", settings, sink, HostBudgets(), random.Random(1))
            await asyncio.wait_for(conn.run(), TIMEOUT)
            assert sink.frames == ["one", b"two"]
            assert len(sink.closed) == 1 and sink.closed[0].endswith(reason)
            st = conn.statistics()
            assert st.messages_in == 2
            assert st.errors == (0 if code == 1000 else 1)

    run(main())


def test_batch_hooks_bracket_every_delivery() -> None:
    log: list[str] = []

    class Hooks:
        depth = 0

        def begin(self) -> None:
            self.depth += 1
            log.append("begin")

        def end(self) -> None:
            self.depth -= 1
            log.append("end")

    hooks = Hooks()

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text("a") + text("b"))
        await w.drain()
        await read_client_frame(r)  # the client's ping: the first batch was delivered
        w.write(text("c") + close_frame(1000))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        async with RawServer(script) as url:
            ws = await lean_connect(url)

            def handler(m: str | bytes) -> None:
                assert hooks.depth == 1  # always inside a batch
                log.append(str(m))

            ws.set_handler(handler, hooks)
            await wait_for(lambda: "b" in log)
            await ws.ping()
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert hooks.depth == 0
            assert [x for x in log if x not in ("begin", "end")] == ["a", "b", "c"]
            assert log[0] == "begin" and log[-1] == "end"
            assert log.count("begin") == log.count("end") >= 2

    run(main())


# ---------------------------------------------------------------------------- server framing
@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 70_000])
def test_pre_encoded_server_frames_match_websockets(n: int) -> None:
    data = b"a" * n
    assert encode_text(data) == Frame(Opcode.TEXT, data).serialize(mask=False)
    assert encode_binary(data) == Frame(Opcode.BINARY, data).serialize(mask=False)
    text_ = "é" * (n // 2)
    assert encode_text(text_) == Frame(Opcode.TEXT, text_.encode()).serialize(mask=False)


@pytest.mark.parametrize("chunk", [1, 5, 4096, 200_000])
def test_relay_frames_are_offered_verbatim_and_the_rest_takes_the_message_path(
    chunk: int,
) -> None:
    """A relay gets whole data frames as the bytes on the wire (no decode, no re-encode);
    fragmented messages and frames it declines arrive as messages; pings are still
    answered here."""
    big = frame(1, b"b" * 70_000)
    declined = text("declined")
    wire = [text("one"), frame(2, b"\x00\x01"), big, declined, text('{"x": 1}')]
    data = b"".join(wire) + frame(9, b"p") + frame(1, b"fr", fin=False) + frame(0, b"ag")
    pongs: list[tuple[int, bytes, bool]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(0, len(data), chunk):
            w.write(data[i : i + chunk])
            await w.drain()
        pongs.append(await read_client_frame(r))
        w.write(close_frame(1000))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        frames: list[bytes] = []
        messages: list[str | bytes] = []

        counts: list[int] = []

        def on_frame(raw: bytes, count: int) -> bool:
            if declined in raw:
                return False  # then offered again frame by frame, by the parser
            frames.append(raw)
            counts.append(count)
            return True

        async with RawServer(script) as url:
            ws = await lean_connect(url)
            ws.set_handler(messages.append, None, on_frame)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert b"".join(frames) == b"".join(w for w in wire if w != declined)
        assert sum(counts) == 4
        assert messages == ["declined", "frag"]
        assert pongs == [(0xA, b"p", True)]
        assert ws.statistics().messages == 6

    run(main())


class PipeOut:
    """The bot side of a relay pipe: its writes, in order, with the frame handler's."""

    def __init__(self, out: list[bytes]) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.mark.parametrize("pipe_cls", [PyPipe, Pipe], ids=["py-pipe", "c-pipe"])
@pytest.mark.parametrize("chunk", [1, 5, 4096, 200_000])
def test_a_relay_pipe_takes_whole_reads_and_the_python_path_the_rest(
    chunk: int, pipe_cls: Any
) -> None:
    """With a pipe the transport calls the relay protocol: reads of whole data frames
    leave through the pipe, a partial frame, a ping or a fragment through this class,
    in order either way; the pipe's frames count in :meth:`statistics`."""
    wire = [text("one"), frame(2, b"\x00\x01"), frame(1, b"b" * 70_000), text('{"x": 1}')]
    data = b"".join(wire) + frame(9, b"p") + frame(1, b"fr", fin=False) + frame(0, b"ag")
    data += text("after")
    pongs: list[tuple[int, bytes, bool]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(0, len(data), chunk):
            w.write(data[i : i + chunk])
            await w.drain()
        pongs.append(await read_client_frame(r))
        await asyncio.sleep(0.05)
        w.write(text("last"))  # a read of its own, after everything: the pipe's
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(close_frame(1000))
        await w.drain()
        await read_client_frame(r)

    async def main() -> None:
        out: list[bytes] = []
        messages: list[str | bytes] = []

        def on_frame(raw: bytes, count: int) -> bool:
            out.append(raw)
            return True

        async with RawServer(script) as url:
            ws = await lean_connect(url)
            pipe = pipe_cls(PipeOut(out), ws.protocol, ws.protocol.state, 1 << 20, None, False)
            ws.set_handler(messages.append, None, on_frame, pipe)
            assert ws.transport.get_protocol() is not ws  # the relay protocol
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert b"".join(out) == b"".join(wire) + text("after") + text("last")
        assert messages == ["frag"]
        assert pongs == [(0xA, b"p", True)]
        assert pipe.frames >= 1  # "last" at least
        assert ws.statistics().messages == 7

    run(main())


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(1, b"hi", mask=True), 1002),  # servers must not mask
        (frame(1, b"hi", rsv=0x40), 1002),  # no extension negotiated
        (frame(0, b"orphan"), 1002),  # continuation without a start
        (frame(3, b"?"), 1002),  # reserved data opcode
        (frame(2, b"z" * 100), 1009),  # over max_size, in a 7-bit length
        (frame(1, b"a" * 60)[:30], 1006),  # a frame cut short by the peer's EOF
    ],
)
def test_a_relay_is_never_offered_a_frame_websockets_refuses(bad: bytes, code: int) -> None:
    """The one-frame shortcut of the relay path reads a lone frame's header only; a read
    holding one frame websockets would refuse still fails the connection as before."""
    closes: list[tuple[int, bytes, bool]] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for chunk in (text("before"), bad):  # one read each
            w.write(chunk)
            await w.drain()
            await asyncio.sleep(0.05)
        if code == 1006:
            w.close()
            return
        closes.append(await read_client_frame(r))
        w.write(close_frame(struct.unpack("!H", closes[0][1][:2])[0]))
        await w.drain()

    async def main() -> None:
        offered: list[bytes] = []

        def on_frame(raw: bytes, count: int) -> bool:
            offered.append(raw)
            return True

        srv = RawServer(script)
        async with srv as url:
            ws = await lean_connect(url, max_size=64)
            ws.set_handler(lambda msg: None, None, on_frame)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert offered == [text("before")]
        exc = ws.protocol.close_exc
        assert isinstance(exc, ConnectionClosedError)
        if code == 1006:
            assert exc.rcvd is None and exc.sent is None
        else:
            assert closes[0][0] == 8 and struct.unpack("!H", closes[0][1][:2])[0] == code
            assert exc.sent is not None and exc.sent.code == code

    run(main())
