"""Relay: one raw session, wsgate versus direct versus HAProxy (when installed).

A push server process sends stamped ticker frames to its client once the client says
``go <rate> <seconds> <max>``. The same raw instrument client (another process)
connects directly, through wsgate's ``raw`` route (one dedicated upstream connection
per session, frames relayed 1:1), through HAProxy (``nbthread 1``, tunnel timeout 1 h,
in the foreground; ``mode http``, the WebSocket-aware setup wsgate is compared with,
and ``mode tcp``, a blind byte pipe) or through a minimal Python byte pipe on asyncio
and on uvloop (``pipe_*``: a read written to the other socket in the same callback,
nothing else -- the floor any Python relay starts from), so the paths differ only by
the hop. ``wsgate_uvloop_py`` is wsgate on uvloop without the relay's C step
(``WSGATE_PURE_PYTHON=1``; only when the extension is built). ``WSGATE_BENCH_BASE=<a
source tree>`` adds ``wsgate_uvloop_base``: wsgate on uvloop run from that tree (another
commit, its extension built in place), in the same rounds -- a paired before/after.

Figures: throughput at saturation (the push server sends flat out for a bounded time)
and one-way latency at 1000 msg/s, both ways: exchange to bot (the stamped tickers)
and bot to exchange ("orders": the bot sends stamped frames, the push server stamps
their arrival). "Added" latency is path minus direct in the same round (the paths are
measured in interleaved rounds, so slow drifts of a shared machine hit all alike), and
the table shows the median over rounds. ``cpu_us`` is the relay process's CPU time
(user + system, from /proc/<pid>/task/*/schedstat) per relayed frame in the steady
state, i.e. between the client's connect and its result.
"""

from __future__ import annotations

import contextlib
import os
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
from bench.procs import Child, has_uvloop, orders_main, pipe_main, push_main, recv_main
from wsgate.runtime import relaypipe

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
    mode {mode}
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
def _haproxy(up_port: int, mode: str = "http") -> Iterator[tuple[int, int] | None]:
    """HAProxy in front of ``up_port``: (listen port, pid), or None when not installed."""
    exe = shutil.which("haproxy")
    if exe is None:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="wsb-hap-", dir="/tmp"))
    listen = free_port()
    cfg = directory / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(listen=listen, port=up_port, mode=mode))
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
        yield listen, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


# A relay may still be opening its upstream when the client is ready (wsgate opens one per
# raw session): the CPU window starts after that, so it holds frames only.
SETTLE = 0.3


def _cpu_ns(pid: int | None) -> int:
    """CPU time (ns, every thread) of ``pid`` so far; 0 without a relay process."""
    if pid is None:
        return 0
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total


def _measure(
    port: int, path: str, rate: float, seconds: float, max_count: int, pid: int | None = None
) -> dict[str, Any]:
    with Child(recv_main, port, path, 1, None, None, False, True) as recv:
        recv.expect("ready", 30)
        if pid is not None:
            time.sleep(SETTLE)
        cpu0 = _cpu_ns(pid)
        trigger = f"go {rate} {seconds} {max_count}".encode()
        recv.ask("measure", seconds + 30.0, 1.0, 1, trigger, reply="started")
        res = recv.expect("result", seconds + 60)
        cpu = _cpu_ns(pid) - cpu0
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
        "cpu_us": cpu / 1000 / res["count"] if pid is not None and res["count"] else None,
    }


def _measure_orders(
    port: int, path: str, rate: float, seconds: float, pid: int | None = None
) -> dict[str, Any]:
    """The other direction: a bot's frames to the exchange (order entry), one-way."""
    with Child(orders_main, port, path, rate, seconds) as bot:
        bot.expect("ready", 30)
        if pid is not None:
            time.sleep(SETTLE)
        cpu0 = _cpu_ns(pid)
        bot.conn.send(("measure",))
        res = bot.expect("result", seconds + 60)
        cpu = _cpu_ns(pid) - cpu0
    samples = array("q")
    samples.frombytes(res["samples"])
    p50, p99 = percentiles(samples, (50, 99))
    n = len(samples)
    return {
        "sent": res["sent"],
        "received": n,
        "p50_us": p50,
        "p99_us": p99,
        "cpu_us": cpu / 1000 / n if pid is not None and n else None,
    }


def _median(values: list[float | None]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    return vals[len(vals) // 2] if vals else None


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1.5 if quick else 2.0
    reps = 1 if quick else 3
    out: dict[str, Any] = {"name": "relay", "quick": quick, "haproxy": shutil.which("haproxy")}
    rounds: dict[str, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        push = stack.enter_context(Child(push_main, False))
        up = push.expect("ready")["port"]
        asy = stack.enter_context(run_daemon(ROUTE.format(port=up), fast=False))
        # name -> (port, path, relay pid, measure saturation)
        targets: dict[str, tuple[int, str, int | None, bool]] = {
            "direct": (up, "/", None, True),
            "wsgate": (asy.port, "/raw", asy.pid, True),
        }
        if has_uvloop():
            fast = stack.enter_context(run_daemon(ROUTE.format(port=up), fast=True))
            targets["wsgate_uvloop"] = (fast.port, "/raw", fast.pid, True)
            if relaypipe.Pipe is not None:
                # The same daemon without the relay's C step (wsgate._relayfast), in the
                # same rounds: what the extension buys, paired.
                py = stack.enter_context(
                    run_daemon(
                        ROUTE.format(port=up), fast=True, extra_env={"WSGATE_PURE_PYTHON": "1"}
                    )
                )
                targets["wsgate_uvloop_py"] = (py.port, "/raw", py.pid, False)
            base = os.environ.get("WSGATE_BENCH_BASE")
            if base:
                # PYTHONSAFEPATH: the daemon imports wsgate from PYTHONPATH, not the cwd.
                env = {"PYTHONPATH": base, "PYTHONSAFEPATH": "1"}
                old = stack.enter_context(
                    run_daemon(ROUTE.format(port=up), fast=True, extra_env=env)
                )
                targets["wsgate_uvloop_base"] = (old.port, "/raw", old.pid, False)
        for mode, name in (("http", "haproxy"), ("tcp", "haproxy_tcp")):
            hap = stack.enter_context(_haproxy(up, mode))
            if hap is not None:
                targets[name] = (hap[0], "/", hap[1], mode == "http")
        for loop_name, on_uvloop in (("asyncio", False), ("uvloop", True)):
            if on_uvloop and not has_uvloop():
                continue
            pipe = stack.enter_context(Child(pipe_main, up, on_uvloop))
            targets[f"pipe_{loop_name}"] = (pipe.expect("ready")["port"], "/", pipe.proc.pid, False)
        _measure(up, "/", 1000, 0.5, 500)  # warm-up
        for _ in range(reps):
            # Interleaved so slow drifts of a shared machine hit every path alike.
            for name, (port, path, pid, saturate) in targets.items():
                fixed = _measure(port, path, 1000, seconds, int(1000 * seconds) + 1, pid)
                sat = _measure(port, path, 0, seconds, 1_000_000) if saturate else None
                orders = _measure_orders(port, path, 1000, seconds, pid)
                rounds.setdefault(name, []).append(
                    {"fixed": fixed, "saturation": sat, "orders": orders}
                )
    out["loadavg_after"] = os.getloadavg()
    direct = rounds["direct"]
    table: dict[str, Any] = {}
    for name, runs in rounds.items():
        sats = [r["saturation"]["rate"] for r in runs if r["saturation"] is not None]
        drate = _median([r["saturation"]["rate"] for r in direct])
        rate = _median(sats)

        def added(key: str, field: str, runs: list[dict[str, Any]] = runs) -> float | None:
            return _median(
                [r[key][field] - d[key][field] for r, d in zip(runs, direct, strict=True)]
            )

        table[name] = {
            "rate": rate,
            "rate_vs_direct": rate / drate if rate is not None and drate else None,
            "p50_us": _median([r["fixed"]["p50_us"] for r in runs]),
            "p99_us": _median([r["fixed"]["p99_us"] for r in runs]),
            "p999_us": _median([r["fixed"]["p999_us"] for r in runs]),
            "order_p50_us": _median([r["orders"]["p50_us"] for r in runs]),
            "order_p99_us": _median([r["orders"]["p99_us"] for r in runs]),
            "added_p50_us": added("fixed", "p50_us"),
            "added_p99_us": added("fixed", "p99_us"),
            "added_order_p50_us": added("orders", "p50_us"),
            "added_order_p99_us": added("orders", "p99_us"),
            "added_p50_rounds": [
                r["fixed"]["p50_us"] - d["fixed"]["p50_us"]
                for r, d in zip(runs, direct, strict=True)
            ],
            "added_order_p50_rounds": [
                r["orders"]["p50_us"] - d["orders"]["p50_us"]
                for r, d in zip(runs, direct, strict=True)
            ],
            "cpu_us": _median([r["fixed"]["cpu_us"] for r in runs]),
            "order_cpu_us": _median([r["orders"]["cpu_us"] for r in runs]),
            "runs": runs,
        }
    out["paths"] = table
    keys = ("added_p50_us", "added_p99_us", "added_order_p50_us", "added_order_p99_us")
    ref = table.get("haproxy")
    if ref is not None:
        out["goal"] = "wsgate added p50 and p99, both directions, <= HAProxy's in the same run"
        for name in ("wsgate", "wsgate_uvloop"):
            if name in table:
                w = table[name]
                out[f"goal_{name}"] = {k: w[k] <= ref[k] for k in keys}
        out["goal_met"] = all(out["goal_wsgate"].values())
    else:
        w = table["wsgate"]
        out["goal"] = "wsgate added p50 <= 50 µs (HAProxy not installed)"
        out["goal_met"] = w["added_p50_us"] <= 50.0
    return out
