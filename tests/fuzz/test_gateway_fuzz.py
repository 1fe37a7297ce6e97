"""Bad input on the gateway: broken frames, bad UTF-8, oversized frames, handshake garbage,
slowloris, unknown routes, bad exchange messages. Each gets the protocol's answer, and the
watcher bot on the same channel never notices (checked when the module's daemon stops)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from tests.fuzz.conftest import Stack, send_and_drain

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _open(stack: Stack, path: str = "/bitfinex") -> tuple[socket.socket, bytes]:
    """A raw upgraded connection and whatever followed the 101 response."""
    s = socket.create_connection(("127.0.0.1", stack.daemon.port), timeout=5)
    s.sendall(_handshake(path))
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, rest


def _frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _close_code(s: socket.socket, already: bytes = b"") -> int | None:
    """Read server frames until its close frame (its code) or EOF (None)."""
    buf = already
    while True:
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            opcode, payload, buf = buf[0] & 0x0F, buf[off : off + n], buf[off + n :]
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        buf += chunk


def _http(stack: Stack, request: bytes, *, half_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", stack.daemon.port), timeout=15) as s:
        return send_and_drain(s, request, half_close=half_close)


def test_invalid_utf8_text_frame_is_closed_1007(stack: Stack) -> None:
    s, rest = _open(stack)
    with s:
        s.sendall(_frame(0x1, b'{"event":"ping","cid":\xff\xfe}'))
        assert _close_code(s, rest) == 1007


def test_oversized_frame_is_closed_1009(stack: Stack) -> None:
    s, rest = _open(stack)
    with s:
        # Only the header announcing 2 MiB: the gateway must not wait for the payload.
        s.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, 2 * 1024 * 1024) + os.urandom(4))
        assert _close_code(s, rest) == 1009


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    st.integers(0, 15),
    st.integers(0, 7),
    st.booleans(),
    st.binary(max_size=200),
)
def test_malformed_frames_get_a_protocol_close(
    stack: Stack, opcode: int, rsv: int, fin: bool, payload: bytes
) -> None:
    s, rest = _open(stack)
    with s:
        s.sendall(_frame(opcode, payload, fin=fin, rsv=rsv))
        s.sendall(_frame(0x8, struct.pack("!H", 1000)))  # then a clean close of our own
        code = _close_code(s, rest)
    # 1011 would mean the gateway itself failed on the input.
    assert code in (None, 1000, 1002, 1005, 1007, 1009), (opcode, rsv, fin, code)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.binary(min_size=1, max_size=300))
def test_handshake_garbage_gets_4xx_or_a_close(stack: Stack, garbage: bytes) -> None:
    out = _http(stack, garbage + b"\r\n\r\n")
    assert out == b"" or out.startswith(b"HTTP/1.1 4"), out[:100]


def test_plain_http_is_refused(stack: Stack) -> None:
    out = _http(stack, b"GET /bitfinex HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", half_close=False)
    assert out.startswith(b"HTTP/1.1 426"), out[:100]


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.text(st.characters(categories=("L", "N", "P")), min_size=1, max_size=20))
def test_unknown_routes_get_404(stack: Stack, name: str) -> None:
    from urllib.parse import quote

    if name.split("/")[0] in ("bitfinex", "binance"):
        return
    out = _http(stack, _handshake("/" + quote(name)), half_close=False)
    assert out.startswith(b"HTTP/1.1 404") or out.startswith(b"HTTP/1.1 400"), out[:120]


def test_slowloris_handshakes_do_not_block_others(stack: Stack) -> None:
    """Five clients dribble a handshake at a byte per second; open_timeout (10 s) ends them."""
    request = _handshake("/bitfinex")
    lorises = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", stack.daemon.port), timeout=5)
        s.setblocking(False)
        lorises.append(s)
    served = 0
    started = time.monotonic()
    closed: set[int] = set()
    try:
        for i in range(len(request)):
            tick = time.monotonic()
            for n, s in enumerate(lorises):
                if n in closed:
                    continue
                try:
                    s.send(request[i : i + 1])
                    if s.recv(1, socket.MSG_PEEK) == b"":
                        closed.add(n)
                except BlockingIOError:
                    pass  # nothing to read: still open
                except OSError:
                    closed.add(n)
            if len(closed) == len(lorises):
                break
            assert time.monotonic() - started < 20, "slowloris connections still open after 20 s"
            # Meanwhile another bot connects and is served.
            asyncio.run(_one_subscribe(stack))
            served += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))  # the attacker's pace
    finally:
        for s in lorises:
            s.close()
    assert len(closed) == len(lorises)
    assert time.monotonic() - started >= 9, "closed before open_timeout: not a slowloris test"
    assert served >= 8


async def _one_subscribe(stack: Stack) -> None:
    async with connect(stack.ws + "/bitfinex", open_timeout=5) as ws:
        await ws.send(json.dumps({"event": "subscribe", "channel": "ticker", "symbol": "tETHUSD"}))
        async with asyncio.timeout(5):
            while True:
                msg = json.loads(await ws.recv())
                if isinstance(msg, list):
                    return  # data: served


async def _replies(url: str, frames: list[str | bytes], want: int) -> list[Any]:
    out: list[Any] = []
    async with connect(url, open_timeout=5, max_size=None) as ws:
        for f in frames:
            await ws.send(f)
        async with asyncio.timeout(5):
            while len(out) < want:
                out.append(json.loads(await ws.recv()))
        await ws.send(
            '{"event":"ping","cid":77}'
            if "bitfinex" in url
            else '{"method":"LIST_SUBSCRIPTIONS","id":77}'
        )
        async with asyncio.timeout(5):
            out.append(json.loads(await ws.recv()))  # still open, still answering
    return out


bad_client_frames = st.one_of(
    st.text(max_size=60),
    st.just("[" * 50_000),
    st.just('{"event":"subscribe","channel":"trades","symbol":' + "[" * 50_000),
    st.dictionaries(
        st.sampled_from(["event", "channel", "symbol", "key", "prec", "len", "chanId", "flags"]),
        st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2),
        max_size=5,
    ).map(json.dumps),
)


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(bad_client_frames)
def test_bad_bitfinex_frames_get_bitfinex_errors(stack: Stack, frame: str) -> None:
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError):
        msg = None
    if isinstance(msg, dict) and msg.get("event") in (
        "subscribe",
        "conf",
        "ping",
        "auth",
        "unauth",
    ):
        return  # a possibly valid request; covered by the dialect tests
    replies = asyncio.run(_replies(stack.ws + "/bitfinex", [frame], 2))
    greeting, answer, pong = replies
    assert greeting["event"] == "info"
    assert answer["event"] in ("error", "unsubscribed"), answer
    assert pong["event"] == "pong" and pong["cid"] == 77


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    st.one_of(
        st.text(max_size=60),
        st.just("[" * 50_000),
        st.dictionaries(
            st.sampled_from(["method", "params", "id"]),
            st.none() | st.integers() | st.text(max_size=8),
            max_size=3,
        ).map(json.dumps),
    )
)
def test_bad_binance_frames_get_binance_errors(stack: Stack, frame: str) -> None:
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError):
        msg = None
    if isinstance(msg, dict) and msg.get("method") in (
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "LIST_SUBSCRIPTIONS",
        "SET_PROPERTY",
        "GET_PROPERTY",
    ):
        return
    replies = asyncio.run(_replies(stack.ws + "/binance/ws", [frame], 1))
    answer, listing = replies
    assert "error" in answer and isinstance(answer["error"]["code"], int), answer
    assert listing == {"result": [], "id": 77}
