"""Cluster: CPU of an idle node in a 10-node cluster, and `wsgate cluster nodes` wall time.

Ten daemons on this machine share one real nats-server (JetStream on, file store), with
the production defaults (heartbeat every 2 s, node_down_after 10 s, jobs at their default
intervals) and no bots. Once every node sees the nine others up, the CPU time of one
node (user + system, /proc) is sampled over a window: goal < 1% of a core. Then the
wall time of `wsgate cluster nodes --json` is compared with `wsgate status --json` on
the same node (fresh processes, median of interleaved runs): goal <= 3x.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.daemon import cpu_seconds, wall
from tests.cluster.rig import NatsServer, Nodes, states
from tests.e2e.harness import wait_until

__all__ = ["run"]

NODES = 10
CPU_GOAL = 1.0  # percent of one core
WALL_GOAL = 3.0


def _body(nats_url: str | None) -> str:
    cluster = f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "bench"
"""
    return (
        (cluster if nats_url else "")
        + """
[routes.r]
dialect = "raw"
type = "market_data"
min_connections = 0
[[routes.r.endpoints]]
url = "ws://127.0.0.1:9"
"""
    )


def run(quick: bool = False) -> dict[str, Any]:
    window = 15.0 if quick else 40.0
    reps = 3 if quick else 7
    ids = [f"n{i:02d}" for i in range(NODES)]
    with NatsServer() as nats, Nodes() as nodes:
        procs = [nodes.start(i, _body(nats.url)) for i in ids]
        lone = nodes.start("lone", _body(None))  # the same daemon on a single node: baseline
        probe = procs[0]
        wait_until(lambda: all(states(probe).get(i) == "up" for i in ids), 60, "10 nodes up")
        time.sleep(5.0)  # let start-up work (first health run, imports) finish
        assert nats.proc is not None
        t0 = time.monotonic()
        cpu0 = {d.proc.pid: cpu_seconds(d.proc.pid) for d in [*procs, lone]}
        nats_cpu0 = cpu_seconds(nats.proc.pid)
        time.sleep(window)
        elapsed = time.monotonic() - t0
        per_node = [100.0 * (cpu_seconds(d.proc.pid) - cpu0[d.proc.pid]) / elapsed for d in procs]
        lone_pct = 100.0 * (cpu_seconds(lone.proc.pid) - cpu0[lone.proc.pid]) / elapsed
        nats_pct = 100.0 * (cpu_seconds(nats.proc.pid) - nats_cpu0) / elapsed
        script = Path(sys.executable).parent / "wsgate"
        exe = [str(script)] if script.exists() else [sys.executable, "-m", "wsgate"]
        cmds = {
            "status_json": [*exe, "status", "--json", "--socket", probe.socket],
            "cluster_nodes_json": [*exe, "cluster", "nodes", "--json", "--socket", probe.socket],
        }
        for cmd in cmds.values():
            wall(cmd)  # warm the page cache
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(reps):
            for name, cmd in cmds.items():
                times[name].append(wall(cmd))
        seen_all = all(states(probe).get(i) == "up" for i in ids)
    med = {k: statistics.median(v) for k, v in times.items()}
    idle = statistics.median(per_node)
    ratio = med["cluster_nodes_json"] / med["status_json"]
    return {
        "name": "cluster",
        "quick": quick,
        "nodes": NODES,
        "window_s": round(elapsed, 1),
        "idle_node_cpu_percent_median": round(idle, 3),
        "idle_node_cpu_percent_max": round(max(per_node), 3),
        "single_node_cpu_percent": round(lone_pct, 3),
        "nats_server_cpu_percent": round(nats_pct, 3),
        "all_up_at_end": seen_all,
        "median_s": med,
        "cluster_nodes_vs_status": round(ratio, 2),
        "cpu_goal_percent": CPU_GOAL,
        "cpu_goal_met": idle < CPU_GOAL,
        "wall_goal": WALL_GOAL,
        "wall_goal_met": ratio <= WALL_GOAL,
    }
