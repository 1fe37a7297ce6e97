"""Fan-out per venue dialect: K sessions on one stream, wsgate versus a plain broadcast.

For each dialect a feed process speaks just enough of the venue's protocol for wsgate's
upstream side (Binance ``SUBSCRIBE``/``{"result":null}``, OKX per-arg acks and text ping,
Bybit acks by ``req_id`` and JSON ping) and pushes stamped trade frames as the venue writes
them (``aggTrade`` in the combined wrapper, OKX ``trades``, Bybit ``publicTrade``). The
baseline is the same feed process in ``direct`` mode: a ``websockets.broadcast`` of the same
frames to K raw clients, with the same backpressure as the fan-out scenario's baseline. wsgate
runs as a real daemon (``wsgate run``, asyncio) with one route of the dialect; its K clients
connect to the venue's own session path and subscribe (Binance ``/ws``: plain payloads, the
dialect slices ``data`` out of every frame; OKX and Bybit: the frame as written).

Reported per dialect, at K=100: the saturation delivery rate of wsgate over its baseline's
(the fan-out ratio) and the daemon's CPU microseconds per delivery. ``binance`` (spot) is the
reference the other dialects are held to (within 20%).
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

DIALECTS = ("binance", "binance_usdm", "okx", "bybit")
K = 100
FIXED_DELIVERIES = 20_000
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
# One trade event per venue as the venue writes it; ``%d`` the trade id, then the stamp,
# which sits before the frame's only ``]]`` (what the receivers count).
_FRAMES = {
    "binance": (
        b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1700000000000,"s":"BTCUSDT",'
        b'"a":%d,"p":"30000.10","q":"0.012","f":100,"l":105,"T":1700000000000,"m":true,'
        b'"x":[[0,%d]]}}'
    ),
    "okx": (
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        b'"tradeId":"%d","px":"30000.1","sz":"0.012","side":"buy","ts":"1700000000000",'
        b'"count":"1","x":[[0,%d]]}]}'
    ),
    "bybit": (
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1700000000000,"data":[{"i":"%d",'
        b'"T":1700000000000,"p":"30000.10","v":"0.012","S":"Buy","s":"BTCUSDT","BT":false,'
        b'"x":[[0,%d]]}]}'
    ),
}
_FRAMES["binance_usdm"] = _FRAMES["binance"]
# dialect -> (session path under the route, the bot's subscribe, the reply that means "live")
_SESSIONS = {
    "binance": (
        "/ws",
        b'{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":1}',
        b'"result"',
    ),
    "okx": (
        "/ws/v5/public",
        b'{"id":"1","op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}',
        b'"event":"subscribe"',
    ),
    "bybit": (
        "/v5/public/linear",
        b'{"req_id":"1","op":"subscribe","args":["publicTrade.BTCUSDT"]}',
        b'"success":true',
    ),
}
_SESSIONS["binance_usdm"] = ("/market/ws", *_SESSIONS["binance"][1:])


def trade_frame(dialect: str, seq: int) -> bytes:
    from bench.net import TS_BASE

    return _FRAMES[dialect] % (seq, TS_BASE + time.monotonic_ns())


def _reply(req: Any) -> tuple[list[str], str]:
    """What an upstream subscribe asks for and the venue's answer to it."""
    if not isinstance(req, dict):
        return [], "{}"
    if "method" in req:  # Binance
        return list(req.get("params", [])), json.dumps({"result": None, "id": req.get("id")})
    if "req_id" in req or ("args" in req and all(isinstance(a, str) for a in req["args"])):
        ok = {"success": True, "ret_msg": "", "conn_id": "c", "req_id": req.get("req_id", "")}
        return list(req.get("args", [])), json.dumps({**ok, "op": req.get("op")})
    arg = (req.get("args") or [{}])[0]
    ack = {"id": req.get("id"), "event": req.get("op"), "arg": arg, "connId": "c"}
    return [json.dumps(arg)], json.dumps(ack)


async def _feed(conn: multiprocessing.connection.Connection, mode: str, dialect: str) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    clients: set[ServerConnection] = set()
    subs: dict[ServerConnection, list[str]] = {}
    seq = iter(range(1, 10**12))

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            async for msg in ws:
                if msg == "ping":
                    await ws.send("pong")
                    continue
                req = json.loads(msg)
                if req.get("op") == "ping":
                    await ws.send(json.dumps({"success": True, "ret_msg": "pong", "op": "ping"}))
                    continue
                wanted, reply = _reply(req)
                if req.get("method") == "SUBSCRIBE" or req.get("op") == "subscribe":
                    subs.setdefault(ws, []).extend(wanted)
                else:
                    subs[ws] = [s for s in subs.get(ws, []) if s not in set(wanted)]
                await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            clients.discard(ws)
            subs.pop(ws, None)

    async def push_direct(rate: float, seconds: float, max_count: int) -> int:
        targets = list(clients)

        async def one() -> None:
            broadcast(targets, trade_frame(dialect, next(seq)).decode())
            if max(t.transport.get_write_buffer_size() for t in targets) > HIGH_WATER:
                while max(t.transport.get_write_buffer_size() for t in targets) > LOW_WATER:  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)

        return await _pace(rate, seconds, max_count, one)

    async def push_streams(rate: float, seconds: float, max_count: int) -> int:
        targets = [ws for ws, streams in subs.items() for _ in streams]

        async def one() -> None:
            frame = trade_frame(dialect, next(seq))
            for ws in targets:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame, text=True)

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


def venue_feed_main(conn: multiprocessing.connection.Connection, mode: str, dialect: str) -> None:
    _run(conn, _feed(conn, mode, dialect), False)


def _one(
    feed: Child, port: int, dialect: str, seconds: float, pid: int, route: str | None
) -> dict[str, Any]:
    """``route``: the sessions go through wsgate's route; None: straight to the broadcaster."""
    path, subscribe, marker = _SESSIONS[dialect]
    on_open = subscribe if route else None
    ready = marker if route else None
    url_path = f"/{route}{path}" if route else "/"
    with Child(recv_main, port, url_path, K, on_open, ready, False, False) as recv:
        recv.expect("ready", 120)
        if route is None:
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
    """Per dialect: a plain broadcast of its frames, then wsgate's route of that dialect."""
    seconds = 1.5 if quick else 3.0
    rows: list[dict[str, Any]] = []
    for name in DIALECTS:
        with Child(venue_feed_main, "direct", name) as direct:
            port = direct.expect("ready")["port"]
            base = _one(direct, port, name, seconds, direct.proc.pid, None)
        with Child(venue_feed_main, "streams", name) as feed:
            port = feed.expect("ready")["port"]
            with run_daemon(ROUTE.format(name=name, port=port), fast=False, gateway=GATEWAY) as d:
                gate = _one(feed, d.port, name, seconds, d.pid, name)
        rows.append(
            {
                "dialect": name,
                "k": K,
                "direct": base,
                "wsgate": gate,
                "rate_vs_direct": _ratio(gate["saturation"]["rate"], base["saturation"]["rate"]),
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
    return {"name": "venues", "quick": quick, "seconds_per_push": seconds, "rows": rows}
