"""Alert engine throughput: evaluations per second over snapshots of 10/100/1000 connections.

Each snapshot has about 5% of connections breaching something (latency, errors, anomaly)
so the state machines, grouping and inhibition do real work, not only the fast path.
Run: ``python -m bench.core_alerts`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from wsgate.core.alerts import (
    AlertEngine,
    AlertInputs,
    ChannelRoute,
    ConnInput,
    RouteInput,
    SystemInput,
)
from wsgate.core.types import ConnectionType, Severity

__all__ = ["run"]

SIZES = (10, 100, 1000)


def _snapshot(n: int, now: float, rng: random.Random) -> AlertInputs:
    routes = max(1, n // 50)
    conns = []
    for i in range(n):
        bad = rng.random() < 0.05
        conns.append(
            ConnInput(
                id=f"c{i}",
                route=f"r{i % routes}",
                type=ConnectionType.MARKET_DATA,
                state_up=not (bad and i % 7 == 0),
                seconds_down=30.0 if bad and i % 7 == 0 else 0.0,
                latency=0.8 if bad else 0.05 + rng.random() * 0.1,
                error_rate=0.1 if bad and i % 3 == 0 else 0.0,
                reconnects_recent=0,
                msg_rate=10.0,
                baseline_rate=10.0,
                baseline_latency=0.1,
                subscriptions=10,
                capacity=25,
                anomaly_rate=bad and i % 2 == 0,
            )
        )
    route_inputs = tuple(
        RouteInput(f"r{r}", ConnectionType.MARKET_DATA, 50, 50, 100, 10000) for r in range(routes)
    )
    system = SystemInput(
        health_score=90.0,
        connections_total=n,
        max_connections=n * 2,
        sessions_total=100,
        max_sessions=10000,
    )
    return AlertInputs(now, "node-1", tuple(conns), route_inputs, system)


def _measure(n: int, iterations: int) -> dict[str, Any]:
    rng = random.Random(n)
    snapshots = [_snapshot(n, 0.0, rng) for _ in range(8)]
    engine = AlertEngine(
        {},
        [ChannelRoute("log"), ChannelRoute("pager", Severity.CRITICAL)],
        group_wait=30.0,
    )
    notifications = 0
    start = time.perf_counter()
    for i in range(iterations):
        snap = snapshots[i % len(snapshots)]
        inputs = AlertInputs(i * 30.0, snap.node_id, snap.connections, snap.routes, snap.system)
        notifications += len(engine.evaluate(inputs).notifications)
    elapsed = time.perf_counter() - start
    stats = engine.statistics()
    return {
        "connections": n,
        "iterations": iterations,
        "evaluations_per_s": round(iterations / elapsed, 1),
        "ms_per_evaluation": round(elapsed / iterations * 1000, 3),
        "observations_per_evaluation": stats.observations,
        "firing": stats.firing,
        "groups": stats.groups,
        "notifications": notifications,
    }


_ITERATIONS = {10: 400, 100: 60, 1000: 12}
_QUICK_ITERATIONS = {10: 20, 100: 5, 1000: 2}


def run(quick: bool = False) -> dict[str, Any]:
    table = _QUICK_ITERATIONS if quick else _ITERATIONS
    results = [_measure(n, table[n]) for n in SIZES]
    return {"name": "core_alerts", "quick": quick, "results": results}


if __name__ == "__main__":
    json.dump(run(quick="--quick" in sys.argv[1:]), sys.stdout, indent=2)
    sys.stdout.write("\n")
