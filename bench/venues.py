"""Fan-out per venue dialect: K sessions on one stream, wsgate versus a plain broadcast.

For each dialect a feed process speaks just enough of the venue's stream protocol for
wsgate's upstream side (combined-stream ``SUBSCRIBE`` with ``{"result":null,"id":N}``) and
pushes stamped ``aggTrade`` frames as the venue writes them
(``{"stream":"btcusdt@aggTrade","data":{...}}``). The baseline is the same feed process in
``direct`` mode: a ``websockets.broadcast`` of the same frames to K raw clients, with the
same backpressure as the fan-out scenario's baseline. wsgate runs as a real daemon
(``wsgate run``, asyncio) with one route of the dialect; its K clients connect to ``/ws``
(plain payloads: the dialect slices the ``data`` value out of every frame) and subscribe.

Reported per dialect, at K=100: the saturation delivery rate of wsgate over the baseline's
(the fan-out ratio) and the daemon's CPU microseconds per delivery, next to the baseline's
process CPU per delivery. ``binance`` (spot) is the reference the other dialects are held
to (within 20%).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing.connection
import time
from typing import Any

from bench.daemon import cpu_seconds, run_daemon
from bench.procs import HIGH_WATER, LOW_WATER, Child, _pace, _recv, _run, measure, recv_main

__all__ = ["DIALECTS", "run"]

DIALECTS = ("binance", "binance_usdm")
K = 100
FIXED_DELIVERIES = 20_000
STREAM = "btcusdt@aggTrade"
SUBSCRIBE = json.dumps({"method": "SUBSCRIBE", "params": [STREAM], "id": 1}).encode()
ROUTE = """
[routes.{name}]
dialect = "{name}"
type = "market_data"
strategy = "round_robin"
min_connections = 1
max_connections = 2
stale_after = 3600
[[routes.{name}.endpoints]]
url = "ws://127.0.0.1:{port}"
"""
GATEWAY = "max_sessions = 20000\nsend_buffer_bytes = 67108864"
_BODY = (
    b'{"e":"aggTrade","E":1700000000000,"s":"BTCUSDT","a":%d,"p":"30000.10","q":"0.012",'
    b'"f":100,"l":105,"T":1700000000000,"m":true,"x":[[0,%d]]}'
)


def agg_frame(stream: str, seq: int) -> bytes:
    """A combined-stream aggTrade frame; the send stamp sits before its only ``]]``."""
    from bench.net import TS_BASE

    body = _BODY % (seq, TS_BASE + time.monotonic_ns())
    return b'{"stream":"' + stream.encode() + b'","data":' + body + b"}"


async def _feed(conn: multiprocessing.connection.Connection, mode: str) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    clients: set[ServerConnection] = set()
    subs: dict[ServerConnection, list[str]] = {}
    seq = iter(range(1, 10**12))

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for msg in ws:
                req = json.loads(msg)
                if req.get("method") == "SUBSCRIBE":
                    subs.setdefault(ws, []).extend(req.get("params", []))
                elif req.get("method") == "UNSUBSCRIBE":
                    gone = set(req.get("params", []))
                    subs[ws] = [s for s in subs.get(ws, []) if s not in gone]
                await ws.send(json.dumps({"result": None, "id": req.get("id")}))
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)
            subs.pop(ws, None)

    async def push_direct(rate: float, seconds: float, max_count: int) -> int:
        targets = list(clients)

        async def one() -> None:
            broadcast(targets, agg_frame(STREAM, next(seq)).decode())
            if max(t.transport.get_write_buffer_size() for t in targets) > HIGH_WATER:
                while max(t.transport.get_write_buffer_size() for t in targets) > LOW_WATER:  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)

        return await _pace(rate, seconds, max_count, one)

    async def push_streams(rate: float, seconds: float, max_count: int) -> int:
        targets = [(ws, s) for ws, streams in subs.items() for s in streams]

        async def one() -> None:
            n = next(seq)
            for ws, stream in targets:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(agg_frame(stream, n), text=True)

        return await _pace(rate, seconds, max_count, one)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        conn.send(("ready", {"port": server.sockets[0].getsockname()[1]}))
        while True:
            cmd = await _recv(conn)
            if cmd[0] == "stop":
                break
            if cmd[0] == "targets":
                conn.send(("targets", len(clients) if mode == "direct" else len(subs)))
            elif cmd[0] == "push":
                _, rate, seconds, max_count = cmd
                push = push_direct if mode == "direct" else push_streams
                t0 = time.monotonic()
                n = await push(rate, seconds, max_count)
                conn.send(("pushed", {"sent": n, "seconds": time.monotonic() - t0}))


def venue_feed_main(conn: multiprocessing.connection.Connection, mode: str) -> None:
    _run(conn, _feed(conn, mode), False)


def _one(feed: Child, port: int, path: str, seconds: float, pid: int, gate: bool) -> dict[str, Any]:
    on_open = SUBSCRIBE if gate else None
    marker = b'"result"' if gate else None
    with Child(recv_main, port, path, K, on_open, marker, False, False) as recv:
        recv.expect("ready", 120)
        if not gate:
            deadline = time.monotonic() + 10
            while feed.ask("targets", reply="targets") < K and time.monotonic() < deadline:
                time.sleep(0.05)
        rate = FIXED_DELIVERIES / K
        measure(feed, recv, rate, 0.5, 10**6, K)  # warm-up, discarded
        fixed = measure(feed, recv, rate, seconds, int(rate * seconds) + 1, K)
        cpu0 = cpu_seconds(pid)
        sat = measure(feed, recv, 0, seconds, max(2000, 3_000_000 // K), K)
        cpu = cpu_seconds(pid) - cpu0
        sat["server_cpu_us_per_delivery"] = (
            1e6 * cpu / sat["delivered"] if sat["delivered"] else None
        )
        return {"fixed": fixed, "saturation": sat}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def run(quick: bool = False) -> dict[str, Any]:
    """One baseline (the frames are the same for every dialect), then each dialect."""
    seconds = 1.5 if quick else 3.0
    with Child(venue_feed_main, "direct") as direct:
        port = direct.expect("ready")["port"]
        base = _one(direct, port, "/", seconds, direct.proc.pid, False)
    base_rate = base["saturation"]["rate"]
    rows: list[dict[str, Any]] = []
    for name in DIALECTS:
        with Child(venue_feed_main, "streams") as feed:
            port = feed.expect("ready")["port"]
            with run_daemon(ROUTE.format(name=name, port=port), fast=False, gateway=GATEWAY) as d:
                gate = _one(feed, d.port, f"/{name}/ws", seconds, d.pid, True)
        rows.append(
            {
                "dialect": name,
                "k": K,
                "wsgate": gate,
                "rate_vs_direct": _ratio(gate["saturation"]["rate"], base_rate),
                "cpu_us_per_delivery": gate["saturation"]["server_cpu_us_per_delivery"],
            }
        )
    ref = rows[0]
    for row in rows:
        rr = _ratio(row["rate_vs_direct"], ref["rate_vs_direct"])
        cr = _ratio(row["cpu_us_per_delivery"], ref["cpu_us_per_delivery"])
        row["ratio_vs_binance"] = rr
        row["cpu_vs_binance"] = cr
        row["within_20_percent"] = rr is not None and cr is not None and rr >= 0.8 and cr <= 1.2
    return {
        "name": "venues",
        "quick": quick,
        "seconds_per_push": seconds,
        "direct": base,
        "rows": rows,
    }
