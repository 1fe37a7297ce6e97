"""A relayed frame leaves in the same callback that read it, both ways.

Order entry pays for every loop iteration between the socket becoming readable and the
write to the other side, so the relay's shape is the contract: the bytes one
``data_received`` call brings are written to the other socket before that call returns
(no queue, no ``call_soon``, no task woken), and relaying creates no task per frame.
Real sockets throughout: an exchange server, the gateway and a bot on 127.0.0.1; the
checks read the gateway's own counters around the real ``data_received`` calls.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.simstack import daemon_head
from wsgate import Gateway, _relayfast
from wsgate.config import parse_config
from wsgate.runtime import relaypipe
from wsgate.runtime.downstream.wsserver import LeanServerConnection
from wsgate.runtime.upstream.wsclient import LeanClientConnection

N = 200
TICK = '{"e":"24hrTicker","s":"BTCUSDT","c":"43000.10"}'


def _config(port: int) -> str:
    tmp = tempfile.mkdtemp(dir="/tmp")
    return (
        daemon_head(tmp)
        + f"""
[routes.raw]
dialect = "raw"
type = "trading"
min_connections = 0
[[routes.raw.endpoints]]
url = "ws://127.0.0.1:{port}"
"""
    )


class Reads:
    """Every real ``data_received`` call on one side, with what the gateway wrote meanwhile."""

    def __init__(self, written: Callable[[], int]) -> None:
        self.written = written
        self.calls: list[tuple[bytes, int]] = []  # (the read, bytes written in the call)


class Observed:
    """The transport's protocol (the relay protocol once a relay runs, C when built),
    wrapped: every read the transport hands over, with what was written meanwhile."""

    def __init__(self, inner: Any, reads: Reads) -> None:
        self.inner = inner
        self.reads = reads

    def data_received(self, data: bytes) -> None:
        before = self.reads.written()
        self.inner.data_received(data)
        self.reads.calls.append((data, self.reads.written() - before))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _observe(transport: Any, reads: Reads) -> Any:
    inner = transport.get_protocol()
    transport.set_protocol(Observed(inner, reads))
    return inner


def _python_reads(monkeypatch: pytest.MonkeyPatch, cls: type[Any], got: list[bytes]) -> None:
    """Record the reads that reach the connection's Python ``data_received``."""
    original = cls.data_received

    def data_received(self: Any, data: bytes) -> None:
        got.append(data)
        original(self, data)

    monkeypatch.setattr(cls, "data_received", data_received)


def _data_bytes(read: bytes) -> int:
    """Bytes of the whole data frames (text, binary, continuation) in one read: what a
    relay must write on; control frames (a pong to the gateway's ping) stay behind."""
    pos, total = 0, 0
    while len(read) - pos >= 2:
        b1 = read[pos + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(read[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            length, head = int.from_bytes(read[pos + 2 : pos + 10], "big"), 10
        end = pos + head + (4 if b1 & 0x80 else 0) + length
        if read[pos] & 0x0F < 8:
            total += end - pos
        pos = end
    return total


def _run(made: list[str], main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on a loop whose task factory records every task created."""

    async def counted() -> None:
        loop = asyncio.get_running_loop()

        def factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
        ) -> asyncio.Task[Any]:
            made.append(getattr(coro, "__qualname__", repr(coro)))
            return asyncio.Task(coro, loop=loop, **kw)

        loop.set_task_factory(factory)  # type: ignore[arg-type]
        await main()

    asyncio.run(counted())


def test_frames_leave_inside_the_read_that_brought_them_both_ways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks: list[str] = []
    created: list[str] = []
    seen: dict[str, list[tuple[bytes, int]]] = {}

    async def main() -> None:
        orders: list[str | bytes] = []
        push = asyncio.Event()

        async def exchange(ws: ServerConnection) -> None:
            async for msg in ws:
                orders.append(msg)
                if msg == "push":
                    for _ in range(N):
                        await ws.send(TICK)
                        await asyncio.sleep(0.001)  # one frame per read, as at 1k msg/s
                    push.set()

        async with serve(exchange, "127.0.0.1", 0, compression=None) as up:
            port = up.sockets[0].getsockname()[1]
            cfg = parse_config(_config(port))
            async with Gateway(cfg, seed=1) as gw, connect(gw.url("raw"), compression=None) as bot:
                await bot.send("hello")
                async with asyncio.timeout(10):
                    while not orders:  # noqa: ASYNC110 - the exchange's own record
                        await asyncio.sleep(0.01)
                (session,) = gw.daemon.gateway.sessions
                (upstream,) = gw.daemon.routes["raw"].relays.values()
                assert isinstance(session.ws, LeanServerConnection) and session.ws.relaying
                assert isinstance(upstream.ws, LeanClientConnection)

                # Both sockets send small frames at once (Nagle off).
                for transport in (session.ws.transport, upstream.ws.transport):
                    sock = transport.get_extra_info("socket")
                    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

                to_bot = Reads(lambda: session.bytes_out)
                to_exchange = Reads(lambda: upstream.metrics.bytes_out)
                inner_up = _observe(upstream.ws.transport, to_bot)
                inner_down = _observe(session.ws.transport, to_exchange)
                if relaypipe.Pipe is not None:  # built: the transports call the C protocol
                    assert type(inner_up) is _relayfast.PipedProtocol
                    assert type(inner_down) is _relayfast.PipedProtocol
                else:
                    assert inner_up is upstream.ws and inner_down is session.ws
                python_up: list[bytes] = []
                python_down: list[bytes] = []
                _python_reads(monkeypatch, LeanClientConnection, python_up)
                _python_reads(monkeypatch, LeanServerConnection, python_down)
                before = len(tasks)

                await bot.send("push")
                got = 0
                async with asyncio.timeout(30):
                    while got < N:
                        assert await bot.recv() == TICK
                        got += 1
                for i in range(N):
                    await bot.send(f"o {i}")
                    await asyncio.sleep(0.001)
                async with asyncio.timeout(10):
                    while len(orders) < N + 2:  # noqa: ASYNC110 - the exchange's own record
                        await asyncio.sleep(0.01)
                if relaypipe.Pipe is not None:  # built: the C step took the reads both ways
                    to_bot_pipe, to_exchange_pipe = upstream.ws._pipe, session.ws._pipe
                    assert to_bot_pipe is not None and to_bot_pipe.frames >= N
                    assert to_exchange_pipe is not None and to_exchange_pipe.frames >= N
                    # ... with no Python frame: no read of data frames reached Python.
                    assert not [r for r in python_up if _data_bytes(r)], python_up
                    assert not [r for r in python_down if _data_bytes(r)], python_down
                else:
                    assert sum(map(_data_bytes, python_up)) >= N * 8
                    assert sum(map(_data_bytes, python_down)) >= N * 8
                # Nothing observable is lost to the lazy counting: the session's and the
                # upstream's statistics (status, metrics) include the pipes' frames.
                sst = session.statistics()
                assert sst.frames_out >= N and sst.messages_in == N + 2
                ust = upstream.statistics()
                assert ust.messages_in >= N and ust.messages_out == N + 2
                assert ust.last_message_age is not None and ust.last_message_age < 5
                assert ust.msg_rate > 0
                created.extend(tasks[before:])
                seen["to_bot"], seen["to_exchange"] = list(to_bot.calls), list(to_exchange.calls)
                monkeypatch.undo()  # the closing handshake is not what is checked
                upstream.ws.transport.set_protocol(inner_up)
                session.ws.transport.set_protocol(inner_down)

        assert orders[2:] == [f"o {i}" for i in range(N)]
        for side in ("to_bot", "to_exchange"):
            calls = seen[side]
            # Every data frame read was written on, whole, before its read's call returned.
            assert sum(_data_bytes(read) for read, _ in calls) >= N * 8
            assert all(written == _data_bytes(read) for read, written in calls), calls
        # Relaying makes no task per frame (what runs meanwhile is the test's own
        # exchange and bot, and the gateway's timers).
        assert len(created) < N // 10, created

    _run(tasks, main)
