"""Cluster data plane on a real nats-server: what idle shared keys cost each node.

Three nodes (three NATS connections in this process, like three daemons), each running
one route's data plane (:class:`~wsgate.cluster.data_plane.RouteShare`) with the hub's
side played by :class:`tests.cluster.share_hub.ShareHub`: no frames flow, so what is
left is the lease traffic. ``N`` keys are wanted by the nodes of a layout; once each key
has one owner and its other nodes follow it, the bench counts for ``seconds`` the lease
watch entries each node receives (``lease_events``), and the lease writes.

Layouts: ``all`` (every node has bots on every key, the usual case); ``two`` (nodes a
and b have bots on every key, c on none of the route's: a node that serves other routes).
The spread is kept out (no membership view): a move would be a few writes more.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from tests.cluster.rig import NatsServer
from tests.cluster.share_hub import ShareHub
from wsgate.cluster.data_plane import RouteShare
from wsgate.cluster.nats_engine import NatsEngine
from wsgate.config.schema import ClusterConfig

__all__ = ["render", "run"]

LEASE_TTL = 3.0
LAYOUTS = {"all": ("a", "b", "c"), "two": ("a", "b")}


async def _until(cond: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - the shares' state, polled
            await asyncio.sleep(0.05)


async def _layout(url: str, layout: str, n: int, seconds: float) -> dict[str, Any]:
    cfg = ClusterConfig(engine="nats", servers=(url,), name=f"idle{n}{layout}", lease_ttl=LEASE_TTL)
    keys = [f"bitfinex:trades:t{i:05d}USD" for i in range(n)]
    wanting = LAYOUTS[layout]
    shares: dict[str, RouteShare] = {}
    for node in "abc":
        engine = NatsEngine(cfg, f"bench {node}")
        assert await engine.connect(5.0)
        hub = ShareHub(keys if node in wanting else [])
        shares[node] = RouteShare(cfg, node, "bfx", engine, hub, peer_states=lambda: {})
    async with asyncio.TaskGroup() as tg:
        runs = [tg.create_task(s.run()) for s in shares.values()]
        await _until(lambda: all(s._tg is not None for s in shares.values()), 10)
        for node in wanting:  # the first node's keys first: it owns them, the others follow
            share = shares[node]
            for key in keys:
                share.gate(share.hub.registry[key])
            await _until(lambda s=share: not s._deciding, 120)  # type: ignore[misc]
        owners = {
            node: len(s.owned) for node, s in shares.items() if s.statistics().owned or s.owned
        }
        followed = {node: len(s.followed) for node, s in shares.items()}
        await asyncio.sleep(LEASE_TTL)  # past the decisions' own writes
        before = {node: s.lease_events for node, s in shares.items()}
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        took = time.monotonic() - t0
        per_node = {node: (s.lease_events - before[node]) / took for node, s in shares.items()}
        for task in runs:
            task.cancel()
    for s in shares.values():
        await s.engine.close()
    return {
        "layout": layout,
        "keys": n,
        "owned": owners,
        "followed": followed,
        "events_per_s": {node: round(v, 1) for node, v in per_node.items()},
        "renewals_per_s": round(n / (LEASE_TTL / 3), 1),  # every owned key, every ttl/3
    }


def run(quick: bool) -> dict[str, Any]:
    sizes = (100,) if quick else (100, 1000)
    seconds = 3.0 if quick else 6.0
    rows = []
    with NatsServer() as nats:
        for n in sizes:
            for layout in LAYOUTS:
                rows.append(asyncio.run(_layout(nats.url, layout, n, seconds)))
    return {
        "name": "cluster_idle",
        "rows": rows,
        "lease_ttl": LEASE_TTL,
        "seconds": seconds,
        "loadavg": os.getloadavg(),
    }


def render(res: dict[str, Any]) -> list[str]:
    load = ", ".join(f"{x:.1f}" for x in res["loadavg"])
    out = [
        f"### Idle shared keys: lease watch entries per node (3 nodes, lease_ttl "
        f"{res['lease_ttl']:g} s, {res['seconds']:g} s each; load average {load})",
        "",
        "| keys | nodes with bots | events/s a | events/s b | events/s c |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in res["rows"]:
        ev = r["events_per_s"]
        who = "a, b, c" if r["layout"] == "all" else "a, b (c: none)"
        out.append(f"| {r['keys']} | {who} | {ev['a']:g} | {ev['b']:g} | {ev['c']:g} |")
    out.append("")
    return out


if __name__ == "__main__":
    import json
    import sys

    result = run("--quick" in sys.argv)
    print(json.dumps(result, indent=1))
    print("\n".join(render(result)))
