"""Scale: N idle downstream sessions held by wsgate versus a plain websockets server.

Clients are raw instrument connections in a second process, opened 100 handshakes at
a time in steps of 500 (both processes raise RLIMIT_NOFILE to the hard limit). RSS
comes from /proc/<pid>/status VmRSS before and after; KiB/session is the marginal
cost. With the sessions attached, ``wsgate status --json`` is timed (median of 3).
Both servers run on asyncio. The sessions connect to a ``bitfinex`` route (an info
event each, no subscription), which is what an idle bot looks like.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from typing import Any

from bench.daemon import rss_kib, run_daemon, wall
from bench.fanout import GATEWAY, ROUTE
from bench.procs import Child, feed_main, raise_nofile, recv_main

__all__ = ["run"]

GOAL_KIB = 20.0


def _target(quick: bool) -> int:
    soft = raise_nofile()
    # Each side needs one fd per session plus its own files; keep a margin.
    possible = max(100, soft - 200)
    return min(1000 if quick else 10_000, possible)


def _hold(port: int, path: str, pid: int, n: int) -> dict[str, Any]:
    time.sleep(0.5)
    before = rss_kib(pid)
    t0 = time.monotonic()
    recv = Child(recv_main, port, path, n, None, None, True, False)
    try:
        info = recv.expect("ready", 300)
        ramp = time.monotonic() - t0
        time.sleep(2.0)
        open_now = recv.ask("open", reply="open")
        after = rss_kib(pid)
        return {
            "target": n,
            "opened": info["opened"],
            "open_after_2s": open_now,
            "errors": info["errors"],
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_session": (after - before) / max(1, info["opened"]),
            "handshakes_per_s": info["opened"] / ramp if ramp else None,
            "recv": recv,
        }
    except BaseException:
        recv.close()
        raise


def run(quick: bool = False) -> dict[str, Any]:
    n = _target(quick)
    out: dict[str, Any] = {
        "name": "scale",
        "quick": quick,
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "target": n,
    }
    with contextlib.ExitStack() as stack:
        feed = stack.enter_context(Child(feed_main, "bitfinex", False))
        port = feed.expect("ready")["port"]
        d = stack.enter_context(run_daemon(ROUTE.format(port=port), fast=False, gateway=GATEWAY))
        idle_status = statistics.median(wall(d.status_cmd()) for _ in range(3))
        w = _hold(d.port, "/bfx", d.pid, n)
        recv = w.pop("recv")
        try:
            w["status_wall_s"] = statistics.median(
                wall(d.status_cmd(), timeout=60) for _ in range(3)
            )
        finally:
            recv.close()
        w["status_wall_idle_s"] = idle_status
        out["wsgate"] = w
    with Child(feed_main, "direct", False) as plain:
        port = plain.expect("ready")["port"]
        p = _hold(port, "/", plain.proc.pid or 0, n)
        p.pop("recv").close()
        out["websockets"] = p
    out["ratio_kib"] = (
        out["wsgate"]["kib_per_session"] / out["websockets"]["kib_per_session"]
        if out["websockets"]["kib_per_session"] > 0
        else None
    )
    out["goal_kib"] = GOAL_KIB
    out["goal_met"] = out["wsgate"]["kib_per_session"] <= GOAL_KIB and out["wsgate"]["opened"] >= n
    return out
