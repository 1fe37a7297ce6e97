"""Cumulative bucket counts for Prometheus histograms, as plain arithmetic.

A route keeps one :class:`Histogram` per latency kind and every connection of the route
feeds it, so the exported histogram aggregates across connections and survives their
reconnects and rotations (a counter never goes backwards when a connection is retired).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["RTT_BUCKETS", "Histogram"]

# Upper bounds in seconds, from loopback (~0.1 ms) and same-region links (1-5 ms) to
# intercontinental round trips (150-300 ms) and a congested or failing path (seconds).
RTT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Histogram:
    """Observation counts per bucket (not cumulative until :meth:`buckets`), sum and count."""

    __slots__ = ("_counts", "bounds", "count", "sum")

    def __init__(self, bounds: Sequence[float] = RTT_BUCKETS) -> None:
        if list(bounds) != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"bucket bounds must be strictly increasing, got {bounds!r}")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if value != value or value < 0:  # NaN or negative: a clock glitch, not a sample
            return
        self._counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as Prometheus exposes them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} sum={self.sum:.6g}>"
