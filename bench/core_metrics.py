"""Cost of the metric core: hot-path ns per frame, memory per connection, anomaly updates/s.

Run ``python -m bench.core_metrics`` (add ``--quick`` for a short run). Timing numbers
depend on the machine; the memory figure does not (tracemalloc counts allocations).
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
import tracemalloc
from typing import Any

from wsgate.core.anomaly import AnomalyDetector
from wsgate.core.metrics import ConnectionMetrics

__all__ = ["run"]


class _Noop:
    def on_message_in(self, now: float, nbytes: int) -> None:
        pass


def _best_of(repeats: int, fn: Any, *args: Any) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def _feed(method: Any, times: list[float]) -> None:
    for t in times:
        method(t, 150)


def _hot_path_ns(n: int, repeats: int) -> dict[str, float]:
    times = [i * 1e-4 for i in range(n)]  # 10k msg/s, so buckets roll over as in real life
    m = ConnectionMetrics()
    total = _best_of(repeats, _feed, m.on_message_in, times)
    empty = _best_of(repeats, _feed, _Noop().on_message_in, times)
    out = _best_of(repeats, _feed, m.on_message_out, times)
    return {
        "on_message_in_ns": total / n * 1e9,
        "on_message_in_net_ns": (total - empty) / n * 1e9,
        "call_overhead_ns": empty / n * 1e9,
        "on_message_out_ns": out / n * 1e9,
    }


def _filled(history_points: int) -> ConnectionMetrics:
    rng = random.Random(1)
    m = ConnectionMetrics(history_points=history_points)
    m.on_state(0.0, "open", True)
    for k in range(history_points):
        now = 60.0 * (k + 1)
        m.on_message_in(now - 1.0, 200)
        m.on_latency(now - 0.5, rng.uniform(0.01, 0.05), "ws")
        m.on_latency(now - 0.5, rng.uniform(0.01, 0.05), "app")
        if k % 10 == 0:
            m.on_error(now - 0.2, "decode")
            m.on_reconnect(now - 0.1)
        m.roll_up(now, queue_depth=k % 7)
    return m


def _memory_per_connection(count: int, history_points: int = 1000) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [_filled(history_points) for _ in range(count)]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "memory_per_connection_bytes": (after - before) / count,
        "memory_bytes_estimate": float(keep[0].memory_bytes()),
        "history_points": float(history_points),
    }


def _anomaly_rate(n: int, repeats: int) -> dict[str, float]:
    rng = random.Random(2)
    series = [rng.gauss(100.0, 5.0) for _ in range(n)]

    def go() -> None:
        det = AnomalyDetector(min_band=1.0)
        for v in series:
            det.update(v)

    elapsed = _best_of(repeats, go)
    return {"anomaly_updates_per_s": n / elapsed}


def _snapshot_us(repeats: int) -> dict[str, float]:
    m = _filled(1000)
    n = 1000
    elapsed = _best_of(repeats, lambda: [m.snapshot(60_000.0 + i) for i in range(n)])
    return {"snapshot_us": elapsed / n * 1e6}


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the metric core; returns a flat dict of numbers (and the Python version)."""
    n = 50_000 if quick else 500_000
    repeats = 3 if quick else 5
    result: dict[str, Any] = {"python": sys.version.split()[0], "quick": quick}
    result.update(_hot_path_ns(n, repeats))
    result.update(_memory_per_connection(10 if quick else 50))
    result.update(_anomaly_rate(5_000 if quick else 50_000, repeats))
    result.update(_snapshot_us(repeats))
    return result


if __name__ == "__main__":
    out = run(quick="--quick" in sys.argv[1:])
    sys.stdout.write(json.dumps(out, indent=2, sort_keys=True) + "\n")
