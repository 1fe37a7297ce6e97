"""Metric windows: ring buffers, EWMAs, peak EWMA, quantiles and bucketed rate counters.

Pure arithmetic over ``now`` (float seconds from one monotonic clock); memory bounded by
construction (preallocated ``array('d')`` rings, a fixed set of rate buckets). The
per-connection record built from them is :mod:`wsgate.core.metrics`.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence

__all__ = ["Ewma", "PeakEwma", "RateCounter", "RingBuffer", "quantiles"]


class RingBuffer:
    """Fixed-capacity ring of floats; the oldest value is overwritten when full."""

    __slots__ = ("_buf", "_capacity", "_len", "_next")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"RingBuffer capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._buf = array("d", bytes(8 * capacity))
        self._next = 0
        self._len = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def append(self, x: float) -> None:
        self._buf[self._next] = x
        self._next = (self._next + 1) % self._capacity
        if self._len < self._capacity:
            self._len += 1

    def __len__(self) -> int:
        return self._len

    @property
    def last(self) -> float | None:
        """The newest value, or None when empty."""
        if self._len == 0:
            return None
        return self._buf[self._next - 1]  # index -1 wraps to the end, which is right

    def values(self) -> list[float]:
        """All stored values, oldest first."""
        if self._len < self._capacity:
            return self._buf[: self._len].tolist()
        return self._buf[self._next :].tolist() + self._buf[: self._next].tolist()

    def resized(self, capacity: int) -> RingBuffer:
        """A ring of ``capacity`` holding the newest values of this one (a reload's resize)."""
        ring = RingBuffer(capacity)
        for x in self.values()[-capacity:]:
            ring.append(x)
        return ring

    def memory_bytes(self) -> int:
        return sys.getsizeof(self) + sys.getsizeof(self._buf)

    def __repr__(self) -> str:
        return f"RingBuffer(len={self._len}, capacity={self._capacity}, last={self.last!r})"


class Ewma:
    """Time-decayed exponentially weighted moving average.

    On a sample ``x`` arriving ``dt`` seconds after the previous one, the old value keeps
    weight ``w = 2 ** (-dt / half_life)`` and ``x`` gets ``1 - w``. So after a step change
    the value has covered half the step after one half-life, however the samples were
    spaced. Samples sharing one timestamp (or arriving with a clock step backwards) are
    averaged together instead of all but the first being dropped with weight zero.
    """

    __slots__ = ("_base", "_last", "_n", "_sum", "_value", "_w", "half_life")

    def __init__(self, half_life: float) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        self.half_life = half_life
        self._value: float | None = None
        self._last = 0.0
        # Value before the current instant, that instant's weight, and its sample mean.
        self._base: float | None = None
        self._w = 1.0
        self._sum = 0.0
        self._n = 0

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def last_update(self) -> float | None:
        return None if self._value is None else self._last

    def update(self, now: float, value: float) -> float:
        if self._value is not None and now <= self._last:
            self._sum += value
            self._n += 1
            mean = self._sum / self._n
            self._value = (
                mean if self._base is None else self._base * self._w + mean * (1 - self._w)
            )
            return self._value
        if self._value is None:
            self._base, self._w, self._value = None, 1.0, value
        else:
            self._base = self._value
            self._w = 2.0 ** (-(now - self._last) / self.half_life)
            self._value = self._base * self._w + value * (1 - self._w)
        self._last, self._sum, self._n = now, value, 1
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(half_life={self.half_life}, value={self._value!r})"


class PeakEwma:
    """Latency estimate that jumps up to a new peak at once and decays down slowly.

    Finagle/Envoy "peak EWMA": a slow sample is believed immediately (a connection that
    just got slow must lose traffic now), a fast one only pulls the value down with the
    half-life. Finagle's 10 s decay time constant is a half-life of about 6.93 s.
    """

    __slots__ = ("_last", "_value", "half_life")

    def __init__(self, half_life: float) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        self.half_life = half_life
        self._value: float | None = None
        self._last = 0.0

    @property
    def value(self) -> float | None:
        return self._value

    def update(self, now: float, value: float) -> float:
        if self._value is None or value >= self._value:
            self._value = value
        else:
            w = 2.0 ** (-max(now - self._last, 0.0) / self.half_life)
            self._value = self._value * w + value * (1 - w)
        self._last = max(now, self._last)
        return self._value

    def __repr__(self) -> str:
        return f"PeakEwma(half_life={self.half_life}, value={self._value!r})"


def quantiles(
    values: Sequence[float], qs: Sequence[float] = (0.5, 0.95, 0.99)
) -> tuple[float, ...]:
    """Exact quantiles with linear interpolation between order statistics.

    Same as numpy's default ``method='linear'``: position ``q * (n - 1)`` in the sorted
    values. Raises ValueError on an empty input or a q outside [0, 1].
    """
    if not values:
        raise ValueError("quantiles of an empty sequence")
    s = sorted(values)
    top = len(s) - 1
    out: list[float] = []
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        pos = q * top
        lo = int(pos)
        hi = min(lo + 1, top)
        frac = pos - lo
        out.append(s[lo] + (s[hi] - s[lo]) * frac if frac else s[lo])
    return tuple(out)


class RateCounter:
    """Events and bytes per second over a sliding window of fixed-width buckets.

    The window is ``buckets`` buckets of ``window / buckets`` seconds, the newest being the
    one ``now`` falls in. ``rate(now)`` divides the events in those buckets by the time
    they actually cover: from the start of the oldest bucket (or, for a counter younger
    than the window, of the bucket of the first event or of :meth:`mark_start`) to
    ``now``, and at least one bucket width.
    Events older than the window when they arrive are dropped.
    """

    __slots__ = (
        "_bytes",
        "_closed_bytes",
        "_closed_count",
        "_counts",
        "_cur_bytes",
        "_cur_count",
        "_cur_end",
        "_cur_idx",
        "_cur_start",
        "_epochs",
        "_n",
        "_origin",
        "_width",
        "window",
    )

    def __init__(self, window: float = 10.0, buckets: int = 10) -> None:
        if not window > 0 or buckets < 1:
            raise ValueError(
                f"RateCounter needs window > 0 and buckets >= 1, got {window}, {buckets}"
            )
        self.window = window
        self._n = buckets
        self._width = window / buckets
        # Closed buckets; the current one lives in plain attributes so the hot path
        # touches no array. An epoch of -1 marks a slot that never held a bucket.
        self._epochs = array("q", [-1] * buckets)
        self._counts = array("d", bytes(8 * buckets))
        self._bytes = array("d", bytes(8 * buckets))
        self._cur_idx = -1
        self._cur_start = math.inf
        self._cur_end = -math.inf
        self._cur_count = 0
        self._cur_bytes = 0
        self._closed_count = 0  # all-time totals of events outside the current bucket
        self._closed_bytes = 0
        self._origin: float | None = None

    @property
    def total(self) -> int:
        """Events counted since creation, including those that left the window."""
        return self._closed_count + self._cur_count

    @property
    def total_bytes(self) -> int:
        return self._closed_bytes + self._cur_bytes

    def add(self, now: float, nbytes: int = 0, count: int = 1) -> None:
        if self._cur_start <= now < self._cur_end:
            self._cur_count += count
            self._cur_bytes += nbytes
            return
        self._add_slow(now, nbytes, count)

    def _add_slow(self, now: float, nbytes: int, count: int) -> None:
        idx = math.floor(now / self._width)
        if idx > self._cur_idx:
            self._close_current()
            self._cur_idx = idx
            self._cur_start = idx * self._width
            self._cur_end = (idx + 1) * self._width
            self._cur_count, self._cur_bytes = count, nbytes
            if self._origin is None:
                self._origin = self._cur_start
            return
        if idx == self._cur_idx:  # float rounding at the bucket edge
            self._cur_count += count
            self._cur_bytes += nbytes
            return
        self._closed_count += count
        self._closed_bytes += nbytes
        # A late event for an already closed bucket (clock stepped back a little).
        if idx <= self._cur_idx - self._n:
            return
        if self._origin is not None:
            self._origin = min(self._origin, idx * self._width)
        slot = idx % self._n
        if self._epochs[slot] == idx:
            self._counts[slot] += count
            self._bytes[slot] += nbytes
        else:  # the slot holds a bucket older than the window: reuse it
            self._epochs[slot] = idx
            self._counts[slot] = count
            self._bytes[slot] = nbytes

    def mark_start(self, now: float) -> None:
        """Declare that counting began at ``now`` even if no event came yet.

        Without it a young counter measures from its first event, which overstates the
        rate of sparse events (one error 4 s after connecting is not one error per 4 s
        of a 10 s-old connection, but it is if the connection is only 4 s old).
        """
        start = math.floor(now / self._width) * self._width
        self._origin = start if self._origin is None else min(self._origin, start)

    def _close_current(self) -> None:
        if self._cur_end == -math.inf:  # no bucket opened yet
            return
        self._closed_count += self._cur_count
        self._closed_bytes += self._cur_bytes
        slot = self._cur_idx % self._n
        self._epochs[slot] = self._cur_idx
        self._counts[slot] = self._cur_count
        self._bytes[slot] = self._cur_bytes

    def _totals(self, now: float) -> tuple[float, float, float]:
        """(events, bytes, seconds covered) in the window ending at ``now``."""
        if self._origin is None:
            return 0.0, 0.0, self._width
        idx = math.floor(now / self._width)
        lo = idx - self._n + 1
        events = 0.0
        nbytes = 0.0
        if lo <= self._cur_idx <= idx:
            events += self._cur_count
            nbytes += self._cur_bytes
        for slot in range(self._n):
            epoch = self._epochs[slot]
            if epoch != self._cur_idx and lo <= epoch <= idx:
                events += self._counts[slot]
                nbytes += self._bytes[slot]
        span = now - max(lo * self._width, self._origin)
        return events, nbytes, max(span, self._width)

    def rate(self, now: float) -> float:
        events, _, span = self._totals(now)
        return events / span

    def bytes_rate(self, now: float) -> float:
        _, nbytes, span = self._totals(now)
        return nbytes / span

    def count(self, now: float) -> float:
        """Events inside the window ending at ``now``."""
        return self._totals(now)[0]

    def memory_bytes(self) -> int:
        arrays = (self._epochs, self._counts, self._bytes)
        return sys.getsizeof(self) + sum(sys.getsizeof(a) for a in arrays)

    def __repr__(self) -> str:
        return f"RateCounter(window={self.window}, buckets={self._n}, current={self._cur_count})"
