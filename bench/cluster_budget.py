"""Cluster connect budgets on a real nats-server: what a connect slot costs.

* **Take latency**: one node takes slots one after another from a budget large enough
  never to refuse, with a window short enough that the ledger holds only a few slots (one
  KV get + one compare-and-set update each): p50/p99 in µs. This is
  what a connect to a ``share = "cluster"`` host waits for before it starts, next to a
  WebSocket handshake to an exchange (tens to hundreds of ms).
* **Burst**: three nodes (three NATS connections in this process, like three daemons)
  each ask for ``n`` slots at once, as pools reconnecting together would, from a budget
  of ``limit`` (Binance's 300 per 5 minutes): how long until the budget is handed out,
  how many slots were granted (goal: exactly ``limit``), how many ledger writes it took
  (slices) and how many compare-and-set writes lost to another node's.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench.net import percentiles
from tests.cluster.rig import NatsServer
from wsgate.cluster.budgets import ClusterBudgets
from wsgate.cluster.nats_engine import NatsEngine
from wsgate.config.schema import ClusterConfig

__all__ = ["run"]


async def _scenario(url: str, quick: bool) -> dict[str, Any]:
    cfg = ClusterConfig(engine="nats", servers=(url,), name="bench")
    engines = [NatsEngine(cfg, f"bench {i}") for i in range(3)]
    for e in engines:
        assert await e.connect(5.0)
    nodes = [ClusterBudgets(cfg, f"n{i}", e, live_nodes=lambda: 3) for i, e in enumerate(engines)]
    takes = 200 if quick else 1000
    samples: list[int] = []
    for _ in range(takes):
        t0 = time.perf_counter_ns()
        # A short window keeps the ledger small (a few slots): the round trips alone.
        wait = await nodes[0].take_connect("single:1", 10**6, 0.05)
        samples.append(time.perf_counter_ns() - t0)
        assert wait == 0.0
    p50, p99 = percentiles(samples, (50, 99))

    limit, per_node = 300, 150
    t0 = time.perf_counter()
    waits = await asyncio.gather(
        *(n.take_connect("burst:1", limit, 300.0) for n in nodes for _ in range(per_node))
    )
    burst_s = time.perf_counter() - t0
    docs = [n.connect_snapshot("burst:1") or {} for n in nodes]
    for e in engines:
        await e.close()
    return {
        "take_p50_us": p50,
        "take_p99_us": p99,
        "takes": takes,
        "burst": {
            "limit": limit,
            "asked": per_node * 3,
            "granted": sum(1 for w in waits if w == 0.0),
            "granted_per_node": [d.get("granted", 0) for d in docs],
            "ledger_writes": sum(d.get("slices", 0) for d in docs),
            "conflicts": sum(d.get("conflicts", 0) for d in docs),
            "seconds": burst_s,
        },
    }


def run(quick: bool) -> dict[str, Any]:
    with NatsServer() as nats:
        out = asyncio.run(_scenario(nats.url, quick))
    out["name"] = "cluster_budget"
    out["loadavg"] = os.getloadavg()
    return out


def render(res: dict[str, Any]) -> list[str]:
    b = res["burst"]
    load = ", ".join(f"{x:.1f}" for x in res["loadavg"])
    return [
        f"### Cluster connect budgets (real nats-server; load average {load})",
        "",
        f"- one slot: p50 {res['take_p50_us']:.0f} µs, p99 {res['take_p99_us']:.0f} µs "
        f"({res['takes']} takes, one node, no contention)",
        f"- burst: 3 nodes asking {b['asked']} slots at once from {b['limit']}: "
        f"{b['granted']} granted (per node {b['granted_per_node']}) in {b['seconds']:.3f} s, "
        f"{b['ledger_writes']} ledger writes, {b['conflicts']} compare-and-set conflicts",
        "",
    ]
