"""Fan-out: one ticker feed to K sessions, wsgate versus a minimal broadcaster.

Both sides get the same input and the same rules:

* **Feed**: a Bitfinex-speaking feed process (one per side) pushes stamped ticker frames
  on the one channel its single subscriber holds.
* **Baseline** (``direct``): a separate broadcaster process (:func:`bench.procs.broadcaster_main`)
  subscribes to its feed, encodes each frame once and writes it to K raw clients; a client
  over wsgate's ``send_buffer_bytes`` is aborted, nobody waits (wsgate's slow-consumer rule).
* **wsgate**: a real daemon (``wsgate run``) on a ``bitfinex`` route, same feed, K raw
  clients subscribed through it (one upstream subscription, fan-out).
* **CPU**: user + system time of every server-side process of the side (its feed and its
  broadcaster or daemon) per delivery; the receivers (client side) are not counted.
* **Repeats**: each cell runs ``REPS`` times, interleaved (baseline, wsgate, baseline, ...);
  the table shows the median and the min..max spread. A goal is ``met`` only when the
  ranges do not overlap on the right side of the goal, ``missed`` when they do not overlap
  on the wrong side, and ``within spread`` otherwise: a difference smaller than the
  run-to-run spread is not claimed.

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
import statistics
import time
from collections.abc import Iterator
from typing import Any

from bench.daemon import BenchDaemon, cpu_seconds, run_daemon
from bench.procs import Child, broadcaster_main, feed_main, measure, recv_main

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


REPS = 3
SEND_BUFFER = 67108864  # the daemon's gateway.send_buffer_bytes below, for both sides


def _spread(values: list[float]) -> dict[str, float | None]:
    vals = sorted(v for v in values if v is not None and v == v)
    if not vals:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1]}


def _verdict(ours: dict[str, Any], base: dict[str, Any], factor: float, higher: bool) -> str:
    """``met`` / ``missed`` only when the two ranges, scaled by the goal, do not overlap."""
    if None in (ours["min"], ours["max"], base["min"], base["max"]):
        return "n/a"
    if higher:  # ours >= factor * base
        if ours["min"] >= factor * base["max"]:
            return "met"
        if ours["max"] < factor * base["min"]:
            return "missed"
    else:  # ours <= factor * base
        if ours["max"] <= factor * base["min"]:
            return "met"
        if ours["min"] > factor * base["max"]:
            return "missed"
    return "within spread"


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median cell (what the table prints) plus the spread of the figures that matter."""
    rates = [r["saturation"]["rate"] for r in runs]
    mid = sorted(range(len(runs)), key=lambda i: rates[i])[len(runs) // 2]
    out = dict(runs[mid])
    out["spread"] = {
        "rate": _spread(rates),
        "p99_us": _spread([r["fixed"]["p99_us"] for r in runs]),
        "cpu_us_per_delivery": _spread(
            [r["saturation"]["server_cpu_us_per_delivery"] for r in runs]
        ),
    }
    out["runs"] = len(runs)
    return out


@contextlib.contextmanager
def _baseline() -> Iterator[tuple[Child, Child, int]]:
    with Child(feed_main, "bitfinex", False) as feed:
        port = feed.expect("ready")["port"]
        with Child(broadcaster_main, port, SEND_BUFFER, False) as bc:
            bc_port = bc.expect("ready")["port"]
            deadline = time.monotonic() + 10
            while feed.ask("targets", reply="targets") < 1:  # its one subscription
                if time.monotonic() > deadline:
                    raise RuntimeError("the baseline broadcaster did not subscribe")
                time.sleep(0.05)
            yield feed, bc, bc_port


def run_analytics(quick: bool = False) -> dict[str, Any]:
    """Fan-out with per-message analytics on vs off (same run, same K, asyncio both)."""
    k = 100
    seconds = 1.5 if quick else 3.0
    out: dict[str, Any] = {"name": "analytics", "k": k, "reps": REPS}
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    with contextlib.ExitStack() as stack:
        gates = {
            "on": stack.enter_context(_wsgate(False)),
            "off": stack.enter_context(_wsgate(False, "per_message = false")),
        }
        for _ in range(REPS):
            for name, (feed, d) in gates.items():
                runs[name].append(_one(feed, d.port, "/bfx", k, seconds, [feed.proc.pid, d.pid]))
    for name in runs:
        out[name] = _summary(runs[name])
    on, off = out["on"]["spread"]["rate"], out["off"]["spread"]["rate"]
    out["rate_on_vs_off"] = _ratio(on["median"], off["median"])
    out["cost_percent"] = (
        None
        if not off["median"]
        else round(100.0 * (off["median"] - on["median"]) / off["median"], 1)
    )
    # "cost < 5%": on >= 0.95 x off, claimed only when the ranges say so.
    out["verdict"] = _verdict(on, off, 0.95, higher=True)
    out["goal_met"] = out["verdict"] == "met"
    return out


def _one(
    feed: Child,
    port: int,
    path: str,
    k: int,
    seconds: float,
    pids: list[int],
    gate: Child | None = None,
) -> dict[str, Any]:
    """One cell: K receivers; fixed-rate latency, then saturation with server-side CPU.

    ``gate`` is the baseline broadcaster (its clients need no subscribe); ``pids`` are all
    server-side processes of this side.
    """
    subscribe = gate is None
    on_open = SUBSCRIBE if subscribe else None
    marker = b'"subscribed"' if subscribe else None
    with Child(recv_main, port, path, k, on_open, marker, False, True) as recv:
        recv.expect("ready", 120)
        if gate is not None:
            deadline = time.monotonic() + 10
            while gate.ask("targets", reply="targets") < k and time.monotonic() < deadline:
                time.sleep(0.05)
        rate = FIXED_DELIVERIES / k
        measure(feed, recv, rate, 0.5, 10**6, k)  # warm-up, discarded
        fixed = measure(feed, recv, rate, seconds, int(rate * seconds) + 1, k)
        cpu0 = sum(cpu_seconds(p) for p in pids)
        sat = measure(feed, recv, 0, seconds, max(2000, 3_000_000 // k), k)
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        sat["server_cpu_us_per_delivery"] = (
            1e6 * cpu / sat["delivered"] if sat["delivered"] else None
        )
        return {"fixed": fixed, "saturation": sat}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or a != a or b != b:
        return None
    return a / b


def run(quick: bool = False) -> dict[str, Any]:
    ks = (1, 100) if quick else (1, 10, 100, 1000)
    seconds = 1.0 if quick else 3.0
    modes = [("wsgate_asyncio", False)] + ([("wsgate_uvloop", True)] if has_uvloop() else [])
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        bfeed, bc, bport = stack.enter_context(_baseline())
        gates = {name: stack.enter_context(_wsgate(fast)) for name, fast in modes}
        for k in ks:
            runs: dict[str, list[dict[str, Any]]] = {"direct": [], **{n: [] for n in gates}}
            for _ in range(REPS):  # interleaved, so drift in the machine's load hits all sides
                runs["direct"].append(
                    _one(bfeed, bport, "/", k, seconds, [bfeed.proc.pid, bc.proc.pid], bc)
                )
                for name, (feed, d) in gates.items():
                    runs[name].append(
                        _one(feed, d.port, "/bfx", k, seconds, [feed.proc.pid, d.pid])
                    )
            row: dict[str, Any] = {"k": k}
            for name, cells in runs.items():
                row[name] = _summary(cells)
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
        need = 0.75 if row["k"] == 1 else 1.0
        w, b = row["wsgate_asyncio"]["spread"], row["direct"]["spread"]
        rate_v = _verdict(w["rate"], b["rate"], need, higher=True)
        p99_v = _verdict(w["p99_us"], b["p99_us"], 1.5, higher=False)
        goals.append(
            {
                "k": row["k"],
                "rate_goal": need,
                "rate_verdict": rate_v,
                "rate_met": rate_v == "met",
                "p99_goal": 1.5,
                "p99_verdict": p99_v,
                "p99_met": p99_v == "met",
            }
        )
    return {
        "name": "fanout",
        "quick": quick,
        "reps": REPS,
        "seconds_per_push": seconds,
        "fixed_deliveries_per_s": FIXED_DELIVERIES,
        "rows": rows,
        "goals": goals,
    }
