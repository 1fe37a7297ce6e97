"""Relay: one raw session, wsgate versus direct versus HAProxy (when installed).

A push server process sends stamped ticker frames to its client once the client says
``go <rate> <seconds> <max>``. The same raw instrument client (another process)
connects directly, through wsgate's ``raw`` route (one dedicated upstream connection
per session, frames relayed 1:1) or through HAProxy (``mode http``, ``nbthread 1``,
tunnel timeout 1 h, run in the foreground), so the three paths differ only by the hop.

Figures: throughput at saturation (the push server sends flat out for a bounded time)
and one-way latency at 1000 msg/s, both ways: exchange to bot (the stamped tickers)
and bot to exchange ("orders": the bot sends stamped frames, the push server stamps
their arrival); "added" latency is path minus direct, same run.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.daemon import free_port, run_daemon
from bench.net import percentiles
from bench.procs import Child, orders_main, push_main, recv_main

__all__ = ["run"]

ROUTE = """
[routes.raw]
dialect = "raw"
type = "market_data"
strategy = "round_robin"
min_connections = 0
[[routes.raw.endpoints]]
url = "ws://127.0.0.1:{port}"
"""
HAPROXY_CFG = """
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend bench
    bind 127.0.0.1:{listen}
    default_backend up
backend up
    server s1 127.0.0.1:{port}
"""


@contextlib.contextmanager
def _haproxy(up_port: int) -> Iterator[int | None]:
    exe = shutil.which("haproxy")
    if exe is None:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="wsb-hap-", dir="/tmp"))
    listen = free_port()
    cfg = directory / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(listen=listen, port=up_port))
    proc = subprocess.Popen(
        [exe, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start")
            time.sleep(0.05)
        yield listen
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


def _measure(port: int, path: str, rate: float, seconds: float, max_count: int) -> dict[str, Any]:
    with Child(recv_main, port, path, 1, None, None, False, True) as recv:
        recv.expect("ready", 30)
        trigger = f"go {rate} {seconds} {max_count}".encode()
        recv.ask("measure", seconds + 30.0, 1.0, 1, trigger, reply="started")
        res = recv.expect("result", seconds + 60)
    samples = array("q")
    samples.frombytes(res["samples"])
    span = (res["last_ns"] - res["first_ns"]) / 1e9
    p50, p99, p999 = percentiles(samples, (50, 99, 99.9))
    return {
        "delivered": res["count"],
        "rate": res["count"] / span if span > 0 else 0.0,
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p999,
    }


def _measure_orders(port: int, path: str, rate: float, seconds: float) -> dict[str, Any]:
    """The other direction: a bot's frames to the exchange (order entry), one-way."""
    with Child(orders_main, port, path, rate, seconds) as bot:
        bot.expect("ready", 30)
        bot.conn.send(("measure",))
        res = bot.expect("result", seconds + 60)
    samples = array("q")
    samples.frombytes(res["samples"])
    p50, p99 = percentiles(samples, (50, 99))
    return {"sent": res["sent"], "received": len(samples), "p50_us": p50, "p99_us": p99}


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1.5 if quick else 3.0
    reps = 1 if quick else 2
    out: dict[str, Any] = {"name": "relay", "quick": quick, "haproxy": shutil.which("haproxy")}
    paths: dict[str, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        push = stack.enter_context(Child(push_main, False))
        up = push.expect("ready")["port"]
        asy = stack.enter_context(run_daemon(ROUTE.format(port=up), fast=False))
        targets: dict[str, tuple[int, str]] = {"direct": (up, "/"), "wsgate": (asy.port, "/raw")}
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401

            fast = stack.enter_context(run_daemon(ROUTE.format(port=up), fast=True))
            targets["wsgate_uvloop"] = (fast.port, "/raw")
        hap = stack.enter_context(_haproxy(up))
        if hap is not None:
            targets["haproxy"] = (hap, "/")
        _measure(up, "/", 1000, 0.5, 500)  # warm-up
        for _ in range(reps):
            # Interleaved so slow drifts of a shared machine hit every path alike.
            for name, (port, path) in targets.items():
                fixed = _measure(port, path, 1000, seconds, int(1000 * seconds) + 1)
                sat = _measure(port, path, 0, seconds, 1_000_000)
                orders = _measure_orders(port, path, 1000, seconds)
                paths.setdefault(name, []).append(
                    {"fixed": fixed, "saturation": sat, "orders": orders}
                )
    table: dict[str, Any] = {}
    for name, runs in paths.items():
        best = sorted(runs, key=lambda r: r["fixed"]["p50_us"])[len(runs) // 2]
        table[name] = {
            "rate": sorted(r["saturation"]["rate"] for r in runs)[len(runs) // 2],
            "p50_us": best["fixed"]["p50_us"],
            "p99_us": best["fixed"]["p99_us"],
            "p999_us": best["fixed"]["p999_us"],
            "order_p50_us": sorted(r["orders"]["p50_us"] for r in runs)[len(runs) // 2],
            "order_p99_us": sorted(r["orders"]["p99_us"] for r in runs)[len(runs) // 2],
            "runs": runs,
        }
    d = table["direct"]
    for row in table.values():
        row["rate_vs_direct"] = row["rate"] / d["rate"] if d["rate"] else None
        row["added_p50_us"] = row["p50_us"] - d["p50_us"]
        row["added_p99_us"] = row["p99_us"] - d["p99_us"]
        row["added_order_p50_us"] = row["order_p50_us"] - d["order_p50_us"]
        row["added_order_p99_us"] = row["order_p99_us"] - d["order_p99_us"]
    out["paths"] = table
    w = table["wsgate"]
    ref = table.get("haproxy")
    if ref is not None:
        keys = ("added_p50_us", "added_p99_us", "added_order_p50_us", "added_order_p99_us")
        out["goal"] = "wsgate added p50 and p99, both directions, <= HAProxy's in the same run"
        out["goal_met"] = all(w[k] <= ref[k] for k in keys)
    else:
        out["goal"] = "wsgate added p50 <= 50 µs (HAProxy not installed)"
        out["goal_met"] = w["added_p50_us"] <= 50.0
    return out
