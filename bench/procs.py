"""Child processes of the benchmark: feed servers, the relay push server, receivers.

Each runs in its own process (``multiprocessing`` spawn) with its own event loop, so a
server under test never shares a loop or a core's time slice with its load generator.
The parent drives a child through a :class:`multiprocessing.connection.Connection`:
the child sends ``("ready", info)`` once it is listening (or connected), then answers
one reply per command; ``("stop",)`` ends it.

Kinds of child:

* ``feed``: a plain websockets server. Mode ``direct`` is the baseline: every client
  connection is a target and a push is ``websockets.broadcast`` of a stamped ticker
  frame (with explicit backpressure: over 256 KiB buffered on any connection, wait
  until it drains to 64 KiB). Mode ``bitfinex`` speaks enough Bitfinex v2 for wsgate's
  upstream side (info on connect, conf, ping, subscribe/unsubscribe, heartbeats); every
  subscribed channel is a target and a push is an awaited ``send`` per frame.
* ``broadcaster``: the fan-out baseline (separate process, same feed and buffer policy as
  wsgate): see :func:`broadcaster_main`.
* ``push``: the relay upstream. Each connection waits for ``go <rate> <seconds> <max>``
  from its client and then pushes stamped frames (``rate`` 0 = as fast as possible).
* ``recv``: opens N raw instrument clients and counts what they receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import resource
import time
from array import array
from collections.abc import Callable, Coroutine
from typing import Any, cast

__all__ = ["Child", "broadcaster_main", "has_uvloop", "orders_main", "pipe_main", "raise_nofile"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_SAMPLES = 400_000


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _run(
    conn: multiprocessing.connection.Connection, main: Coroutine[Any, Any, None], fast: bool
) -> None:
    raise_nofile()
    if fast:
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
    conn.close()


async def _recv(conn: multiprocessing.connection.Connection) -> Any:
    return await asyncio.to_thread(conn.recv)


async def _pace(rate: float, seconds: float, max_count: int, send: Callable[[], Any]) -> int:
    """Call ``send`` at ``rate``/s (0 = flat out) for ``seconds`` or ``max_count`` calls."""
    start = time.monotonic()
    end = start + seconds
    n = 0
    while n < max_count:
        if rate > 0:
            due = start + n / rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
        if time.monotonic() >= end:
            break
        r = send()
        if asyncio.iscoroutine(r):
            await r
        n += 1
        if rate <= 0 and n % 64 == 0:
            await asyncio.sleep(0)
    return n


# ---------------------------------------------------------------- feed servers
async def _feed(conn: multiprocessing.connection.Connection, mode: str) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    from bench.net import ticker_frame

    clients: set[ServerConnection] = set()
    chans: dict[int, tuple[ServerConnection, int]] = {}  # chanId -> (conn, chanId)
    subscribed_at: list[float] = []  # time.monotonic() of every subscribe request
    next_chan = iter(range(1000, 10**9))

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        mine: list[int] = []
        try:
            if mode == "bitfinex":
                await ws.send(
                    '{"event":"info","version":2,"serverId":"bench","platform":{"status":1}}'
                )
            async for msg in ws:
                if mode != "bitfinex":
                    continue
                req = json.loads(msg)
                ev = req.get("event")
                if ev == "subscribe":
                    subscribed_at.append(time.monotonic())
                    chan = next(next_chan)
                    chans[chan] = (ws, chan)
                    mine.append(chan)
                    reply = {**req, "event": "subscribed", "chanId": chan}
                    if req.get("channel") == "ticker":
                        reply.setdefault("pair", str(req.get("symbol", "tBTCUSD"))[1:])
                    await ws.send(json.dumps(reply))
                    await ws.send(ticker_frame(chan).decode())
                elif ev == "unsubscribe":
                    chan = int(req.get("chanId", 0))
                    chans.pop(chan, None)
                    await ws.send(
                        json.dumps({"event": "unsubscribed", "status": "OK", "chanId": chan})
                    )
                elif ev == "conf":
                    await ws.send(
                        json.dumps({"event": "conf", "status": "OK", "flags": req.get("flags", 0)})
                    )
                elif ev == "ping":
                    await ws.send(
                        json.dumps(
                            {"event": "pong", "ts": int(time.time() * 1000), "cid": req.get("cid")}
                        )
                    )
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)
            for chan in mine:
                chans.pop(chan, None)

    async def heartbeats() -> None:
        # Keeps wsgate's per-channel silence detector quiet between runs.
        while True:
            await asyncio.sleep(2.0)
            for ws, chan in list(chans.values()):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(f'[{chan},"hb"]')

    async def push_direct(rate: float, seconds: float, max_count: int) -> int:
        targets = list(clients)

        async def one() -> None:
            broadcast(targets, ticker_frame(0).decode())
            if max(t.transport.get_write_buffer_size() for t in targets) > HIGH_WATER:
                # No event fires on "buffer below N bytes": poll, as the anchors did.
                while max(t.transport.get_write_buffer_size() for t in targets) > LOW_WATER:  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)

        return await _pace(rate, seconds, max_count, one)

    async def push_bitfinex(rate: float, seconds: float, max_count: int) -> int:
        async def one() -> None:
            # Read per frame: a subscription made during the push (a failover) gets data.
            for ws, chan in list(chans.values()):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(ticker_frame(chan), text=True)

        return await _pace(rate, seconds, max_count, one)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        hb = asyncio.create_task(heartbeats()) if mode == "bitfinex" else None
        conn.send(("ready", {"port": port}))
        while True:
            cmd = await _recv(conn)
            if cmd[0] == "stop":
                break
            if cmd[0] == "targets":
                conn.send(("targets", len(clients) if mode == "direct" else len(chans)))
            elif cmd[0] == "subscribed_at":
                conn.send(("subscribed_at", list(subscribed_at)))
            elif cmd[0] == "push":
                _, rate, seconds, max_count = cmd
                push = push_direct if mode == "direct" else push_bitfinex
                t0 = time.monotonic()
                n = await push(rate, seconds, max_count)
                conn.send(("pushed", {"sent": n, "seconds": time.monotonic() - t0}))
        if hb is not None:
            hb.cancel()


def feed_main(conn: multiprocessing.connection.Connection, mode: str, fast: bool) -> None:
    _run(conn, _feed(conn, mode), fast)


# ---------------------------------------------------------------- baseline broadcaster
async def _broadcaster(
    conn: multiprocessing.connection.Connection, feed_port: int, send_buffer_bytes: int
) -> None:
    """The fan-out baseline: a separate process, fed like wsgate, with wsgate's buffer policy.

    It subscribes once to the same Bitfinex-speaking feed as wsgate (one upstream
    channel), encodes each upstream frame once and writes it to every client's transport;
    a client whose transport buffer is over ``send_buffer_bytes`` is aborted (wsgate's
    slow-consumer rule), nobody waits for anybody. No channel-id rewrite, no state: the
    least a broadcaster can do, so wsgate's ratio against it is the cost of wsgate itself.
    """
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.frames import Frame, Opcode

    clients: set[ServerConnection] = set()
    dropped = 0

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def pump() -> None:
        nonlocal dropped
        async with connect(f"ws://127.0.0.1:{feed_port}", compression=None) as up:
            await up.send('{"event":"subscribe","channel":"ticker","symbol":"tBTCUSD"}')
            async for msg in up:
                if not clients:
                    continue
                data = msg.encode() if isinstance(msg, str) else msg
                frame = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])
                for ws in list(clients):
                    t = ws.transport
                    if t.get_write_buffer_size() > send_buffer_bytes:
                        dropped += 1
                        t.abort()
                        clients.discard(ws)
                        continue
                    t.write(frame)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(pump())
        conn.send(("ready", {"port": port}))
        while True:
            cmd = await _recv(conn)
            if cmd[0] == "stop":
                break
            if cmd[0] == "targets":
                conn.send(("targets", len(clients)))
            elif cmd[0] == "dropped":
                conn.send(("dropped", dropped))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def broadcaster_main(
    conn: multiprocessing.connection.Connection,
    feed_port: int,
    send_buffer_bytes: int,
    fast: bool,
) -> None:
    _run(conn, _broadcaster(conn, feed_port, send_buffer_bytes), fast)


# ---------------------------------------------------------------- relay upstream
async def _push(conn: multiprocessing.connection.Connection) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    from bench.net import ticker_frame

    orders: list[int] = []  # one-way latency (ns) of "o <stamp>" frames from clients

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for msg in ws:
                if isinstance(msg, str) and msg.startswith("o "):
                    orders.append(time.monotonic_ns() - int(msg[2:]))
                    continue
                if msg == "orders?":
                    taken = array("q", orders)
                    orders.clear()
                    await ws.send(taken.tobytes())
                    continue
                parts = str(msg).split()
                if len(parts) != 4 or parts[0] != "go":
                    continue
                rate, seconds, max_count = float(parts[1]), float(parts[2]), int(parts[3])

                async def one() -> None:
                    await ws.send(ticker_frame(7), text=True)

                await _pace(rate, seconds, max_count, one)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        conn.send(("ready", {"port": server.sockets[0].getsockname()[1]}))
        while (await _recv(conn))[0] != "stop":
            conn.send(("unknown", None))


async def _orders(
    conn: multiprocessing.connection.Connection, port: int, path: str, rate: float, seconds: float
) -> None:
    """A bot placing orders: ``o <monotonic ns>`` text frames at ``rate``/s through ``path``;
    the push server stamps their arrival, and the latencies come back for the parent."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}{path}", compression=None) as ws:
        conn.send(("ready", None))
        await _recv(conn)  # "measure"

        async def one() -> None:
            await ws.send(f"o {time.monotonic_ns()}")

        n = await _pace(rate, seconds, int(rate * seconds) + 1, one)
        await ws.send("orders?")
        while True:
            reply = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(reply, bytes):
                break
        conn.send(("result", {"sent": n, "samples": reply}))


def orders_main(
    conn: multiprocessing.connection.Connection, port: int, path: str, rate: float, seconds: float
) -> None:
    _run(conn, _orders(conn, port, path, rate, seconds), has_uvloop())


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- the floor of a Python relay
class _Pipe(asyncio.Protocol):
    """One side of a byte pipe: what it reads is written to the other side, in the same
    callback. Nothing else: no HTTP, no frames; the least any relay on this loop does."""

    def __init__(self, loop: asyncio.AbstractEventLoop, up_port: int | None) -> None:
        self.loop = loop
        self.up_port = up_port  # set on the bot side: connect upstream on accept
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; same interface.
        self.transport = cast(asyncio.Transport, transport)
        if self.up_port is not None:
            self.transport.pause_reading()
            self.connecting = self.loop.create_task(self._connect(self.up_port))

    async def _connect(self, port: int) -> None:
        assert self.transport is not None
        back = _Pipe(self.loop, None)
        back.peer = self.transport
        up, _ = await self.loop.create_connection(lambda: back, "127.0.0.1", port)
        self.peer = up
        for data in self.early:
            up.write(data)
        self.early.clear()
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


async def _pipe(conn: multiprocessing.connection.Connection, up_port: int) -> None:
    # A fresh process's first asyncio recv() buffers (256 KiB each) come from mmap() and
    # go back with munmap() on every read until glibc raises its threshold, which a
    # long-running daemon has done (strace: wsgate makes no mmap per relayed frame);
    # one large free moves this process to the same state.
    big = bytes(1 << 20)
    del big
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Pipe(loop, up_port), "127.0.0.1", 0)
    conn.send(("ready", {"port": server.sockets[0].getsockname()[1]}))
    while (await _recv(conn))[0] != "stop":
        conn.send(("unknown", None))
    server.close()


def pipe_main(conn: multiprocessing.connection.Connection, up_port: int, fast: bool) -> None:
    """A minimal TCP relay in Python (asyncio or uvloop): the floor any Python relay
    starts from, measured in the same run as wsgate and HAProxy."""
    _run(conn, _pipe(conn, up_port), fast)


def push_main(conn: multiprocessing.connection.Connection, fast: bool) -> None:
    _run(conn, _push(conn), fast)


# ---------------------------------------------------------------- receivers
async def _receivers(
    conn: multiprocessing.connection.Connection,
    port: int,
    path: str,
    n: int,
    on_open: bytes | None,
    ready_marker: bytes | None,
    tolerant: bool,
) -> None:
    from bench.net import RawClient, client_frame, open_clients

    t0 = time.monotonic()
    clients: list[RawClient] = []
    errors = 0
    if tolerant:
        # Scale mode: open in steps and keep what succeeds.
        step = 500
        for i in range(0, n, step):
            try:
                clients += await open_clients(
                    "127.0.0.1", port, path, min(step, n - i), on_open=on_open, limit=30
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                errors += 1
                conn.send(("progress", {"error": repr(exc), "opened": len(clients)}))
                break
    else:
        try:
            clients = await open_clients(
                "127.0.0.1", port, path, n, on_open=on_open, ready_marker=ready_marker
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            conn.send(("error", repr(exc)))
            return
    conn.send(
        ("ready", {"opened": len(clients), "errors": errors, "seconds": time.monotonic() - t0})
    )
    while True:
        cmd = await _recv(conn)
        if cmd[0] == "stop":
            break
        if cmd[0] == "open":
            conn.send(("open", sum(not c.closed for c in clients)))
        elif cmd[0] == "send":
            from bench.net import client_frame

            for c in clients:
                if c.transport is not None:
                    c.transport.write(client_frame(cmd[1]))
            conn.send(("sent", None))
        elif cmd[0] == "measure":
            _, timeout, idle, sample_every, trigger = cmd
            for c in clients:
                c.start(sample_every)
                if trigger is not None and c.transport is not None:
                    # The relay upstream starts pushing when its client says so.
                    c.transport.write(client_frame(trigger))
            conn.send(("started", None))
            deadline = time.monotonic() + timeout
            total, changed = 0, time.monotonic()
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                now_total = sum(c.count for c in clients)
                if now_total != total:
                    total, changed = now_total, time.monotonic()
                elif total and time.monotonic() - changed > idle:
                    break
            samples: array[int] = array("q")
            for c in clients:
                samples.extend(c.samples)
                c.measuring = False
            if len(samples) > MAX_SAMPLES:
                samples = samples[:: len(samples) // MAX_SAMPLES + 1]
            counted = [c for c in clients if c.count]
            conn.send(
                (
                    "result",
                    {
                        "count": sum(c.count for c in clients),
                        "first_ns": min((c.first for c in counted), default=0),
                        "last_ns": max((c.last for c in counted), default=0),
                        "min_per_client": min((c.count for c in clients), default=0),
                        "closed": sum(c.closed for c in clients),
                        "max_silence_ns": max((c.max_silence for c in clients), default=0),
                        "samples": samples.tobytes(),
                    },
                )
            )
    for c in clients:
        if c.transport is not None:
            c.transport.close()


def recv_main(
    conn: multiprocessing.connection.Connection,
    port: int,
    path: str,
    n: int,
    on_open: bytes | None,
    ready_marker: bytes | None,
    tolerant: bool,
    fast: bool,
) -> None:
    _run(conn, _receivers(conn, port, path, n, on_open, ready_marker, tolerant), fast)


# ---------------------------------------------------------------- parent side
class Child:
    """A child process and its command pipe; a context manager that always reaps it."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child_conn, *args), daemon=True)
        self.proc.start()
        child_conn.close()

    def expect(self, kind: str, timeout: float = 120.0) -> Any:
        while True:
            if not self.conn.poll(timeout):
                raise TimeoutError(f"child {self.proc.pid}: no {kind!r} within {timeout}s")
            msg = self.conn.recv()
            if msg[0] == kind:
                return msg[1]
            if msg[0] == "error":
                raise RuntimeError(f"child {self.proc.pid}: {msg[1]}")
            if msg[0] == "progress":
                continue
            raise RuntimeError(f"child {self.proc.pid}: expected {kind!r}, got {msg[0]!r}")

    def ask(self, *cmd: Any, reply: str, timeout: float = 120.0) -> Any:
        self.conn.send(cmd)
        return self.expect(reply, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure(
    feed: Child, recv: Child, rate: float, seconds: float, max_count: int, k: int
) -> dict[str, Any]:
    """One push from ``feed`` received by ``recv``: rate, latency percentiles, loss."""
    from bench.net import percentiles

    sample_every = 1 if rate > 0 else 8
    # At saturation a daemon may hold one long loop turn (K=1000): allow 3 s of silence.
    idle = 1.0 if rate > 0 else 3.0
    recv.ask("measure", seconds + 30.0, idle, sample_every, None, reply="started")
    pushed = feed.ask("push", rate, seconds, max_count, reply="pushed", timeout=seconds + 60)
    res = recv.expect("result", seconds + 60)
    samples = array("q")
    samples.frombytes(res["samples"])
    span = (res["last_ns"] - res["first_ns"]) / 1e9
    p50, p99, p999 = percentiles(samples, (50, 99, 99.9))
    expected = pushed["sent"] * k
    return {
        "sent": pushed["sent"],
        "delivered": res["count"],
        "expected": expected,
        "lost": max(0, expected - res["count"]),
        "rate": res["count"] / span if span > 0 else 0.0,
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p999,
        "samples": len(samples),
        "closed": res["closed"],
    }
