"""Fan-out: one ticker feed to K sessions, wsgate versus a plain websockets broadcast.

Baseline (``direct``): a websockets server process broadcasting the stamped frames to
K raw clients (``websockets.broadcast`` with explicit backpressure).

wsgate: a Bitfinex-speaking feed process is the upstream of a real daemon
(``wsgate run``) on a ``bitfinex`` route; K raw clients subscribe to the same ticker
through the daemon, which holds one upstream subscription and fans out.

Receivers always run in a third process. For each K two pushes are measured:
saturation (the feed pushes flat out for a bounded time; aggregate delivered/s over
the receivers' first-to-last span) and fixed load (feed rate = 20000/K, so 20k
deliveries/s; p50/p99/p99.9 one-way latency from the stamp in the frame).
The daemon runs on asyncio (``WSGATE_NO_UVLOOP=1``) and, when uvloop is importable,
again on uvloop; the baseline is asyncio in both comparisons.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from typing import Any

from bench.daemon import BenchDaemon, cpu_seconds, run_daemon
from bench.procs import Child, feed_main, measure, recv_main

__all__ = ["run"]

FIXED_DELIVERIES = 20_000
SUBSCRIBE = b'{"event":"subscribe","channel":"ticker","symbol":"tBTCUSD"}'
ROUTE = """
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
strategy = "round_robin"
min_connections = 1
max_connections = 1
[[routes.bfx.endpoints]]
url = "ws://127.0.0.1:{port}"
"""
# Saturation runs must measure throughput, not the slow-consumer policy.
GATEWAY = "max_sessions = 20000\nsend_buffer_bytes = 67108864"


def has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


@contextlib.contextmanager
def _wsgate(fast: bool, metrics: str = "") -> Iterator[tuple[Child, BenchDaemon]]:
    with Child(feed_main, "bitfinex", False) as feed:
        port = feed.expect("ready")["port"]
        with run_daemon(ROUTE.format(port=port), fast=fast, gateway=GATEWAY, metrics=metrics) as d:
            yield feed, d


def run_analytics(quick: bool = False) -> dict[str, Any]:
    """Fan-out with per-message analytics on vs off (same run, same K, asyncio both)."""
    k = 100
    seconds = 1.5 if quick else 3.0
    out: dict[str, Any] = {"name": "analytics", "k": k}
    with contextlib.ExitStack() as stack:
        gates = {
            "on": stack.enter_context(_wsgate(False)),
            "off": stack.enter_context(_wsgate(False, "per_message = false")),
        }
        for name, (feed, d) in gates.items():
            out[name] = _one(feed, d.port, "/bfx", k, seconds, True, d.pid)
    on, off = out["on"]["saturation"]["rate"], out["off"]["saturation"]["rate"]
    out["rate_on_vs_off"] = _ratio(on, off)
    out["cost_percent"] = None if not off else round(100.0 * (off - on) / off, 1)
    out["goal_met"] = out["cost_percent"] is not None and out["cost_percent"] < 5.0
    return out


def _one(
    feed: Child, port: int, path: str, k: int, seconds: float, wsgate: bool, pid: int | None
) -> dict[str, Any]:
    on_open = SUBSCRIBE if wsgate else None
    marker = b'"subscribed"' if wsgate else None
    with Child(recv_main, port, path, k, on_open, marker, False, True) as recv:
        recv.expect("ready", 120)
        if not wsgate:
            deadline = time.monotonic() + 10
            while feed.ask("targets", reply="targets") < k and time.monotonic() < deadline:
                time.sleep(0.05)
        rate = FIXED_DELIVERIES / k
        measure(feed, recv, rate, 0.5, 10**6, k)  # warm-up, discarded
        fixed = measure(feed, recv, rate, seconds, int(rate * seconds) + 1, k)
        cpu0 = cpu_seconds(pid) if pid else 0.0
        sat = measure(feed, recv, 0, seconds, max(2000, 3_000_000 // k), k)
        cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
        sat["server_cpu_us_per_delivery"] = (
            1e6 * cpu / sat["delivered"] if pid and sat["delivered"] else None
        )
        return {"fixed": fixed, "saturation": sat}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or a != a or b != b:
        return None
    return a / b


def run(quick: bool = False) -> dict[str, Any]:
    ks = (1, 100) if quick else (1, 10, 100, 1000)
    seconds = 1.5 if quick else 3.0
    modes = [("wsgate_asyncio", False)] + ([("wsgate_uvloop", True)] if has_uvloop() else [])
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        direct = stack.enter_context(Child(feed_main, "direct", False))
        direct_port = direct.expect("ready")["port"]
        gates = {name: stack.enter_context(_wsgate(fast)) for name, fast in modes}
        for k in ks:
            row: dict[str, Any] = {"k": k}
            row["direct"] = _one(direct, direct_port, "/", k, seconds, False, direct.proc.pid)
            for name, (feed, d) in gates.items():
                row[name] = _one(feed, d.port, "/bfx", k, seconds, True, d.pid)
            for name in gates:
                w, b = row[name], row["direct"]
                row[f"{name}_vs_direct"] = {
                    "rate": _ratio(w["saturation"]["rate"], b["saturation"]["rate"]),
                    "p50": _ratio(w["fixed"]["p50_us"], b["fixed"]["p50_us"]),
                    "p99": _ratio(w["fixed"]["p99_us"], b["fixed"]["p99_us"]),
                    "p999": _ratio(w["fixed"]["p999_us"], b["fixed"]["p999_us"]),
                }
            rows.append(row)
    goals = []
    for row in rows:
        r = row["wsgate_asyncio_vs_direct"]
        need = 0.75 if row["k"] == 1 else 1.0
        goals.append(
            {
                "k": row["k"],
                "rate_goal": need,
                "rate_met": r["rate"] is not None and r["rate"] >= need,
                "p99_goal": 1.5,
                "p99_met": r["p99"] is not None and r["p99"] <= 1.5,
            }
        )
    return {
        "name": "fanout",
        "quick": quick,
        "seconds_per_push": seconds,
        "fixed_deliveries_per_s": FIXED_DELIVERIES,
        "rows": rows,
        "goals": goals,
    }
