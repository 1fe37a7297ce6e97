"""CLI: wall time of ``wsgate status --json`` against a running daemon.

Baselines in the same run, each a fresh process like the CLI: ``python -c pass``
(interpreter start) and a bare stdlib client making the same control call (Unix
socket, one JSON line out, one back). Median of several runs each, interleaved.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from bench.daemon import run_daemon, wall
from bench.fanout import ROUTE
from bench.procs import Child, feed_main

__all__ = ["run"]

BARE = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"v":1,"id":1,"method":"status","params":{}}\\n')
buf = b""
while not buf.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
sys.stdout.write(json.dumps(json.loads(buf)["result"]))
"""
GOAL = 3.0


def run(quick: bool = False) -> dict[str, Any]:
    reps = 3 if quick else 7
    script = Path(sys.executable).parent / "wsgate"
    with Child(feed_main, "bitfinex", False) as feed:
        port = feed.expect("ready")["port"]
        with run_daemon(ROUTE.format(port=port), fast=False) as d:
            status = [str(script), *d.status_cmd()[3:]] if script.exists() else d.status_cmd()
            cmds = {
                "python_pass": [sys.executable, "-c", "pass"],
                "bare_client": [sys.executable, "-c", BARE, d.socket],
                "wsgate_status": status,
            }
            for cmd in cmds.values():
                wall(cmd)  # warm the page cache
            times: dict[str, list[float]] = {k: [] for k in cmds}
            for _ in range(reps):
                for name, cmd in cmds.items():
                    times[name].append(wall(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "name": "cli",
        "quick": quick,
        "runs": reps,
        "median_s": med,
        "status_vs_python_pass": med["wsgate_status"] / med["python_pass"],
        "status_vs_bare_client": med["wsgate_status"] / med["bare_client"],
        "goal_vs_bare": GOAL,
        "goal_met": med["wsgate_status"] / med["bare_client"] <= GOAL,
    }
