"""The per-upstream-connection metrics record, as pure arithmetic over ``now``.

The windows it is built from (rings, EWMAs, rate counters) live in
:mod:`wsgate.core.windows` and are re-exported here.

Nothing here reads a clock: every method that depends on time takes ``now`` (float
seconds from one monotonic clock). Memory is bounded by construction: ring buffers
are preallocated ``array('d')`` blocks and rate counters keep a fixed set of buckets.

Memory per :class:`ConnectionMetrics` with ``history_points=1000`` (six history rings,
two 128-sample latency rings, a 64-entry reconnect ring, two rate counters), measured
with tracemalloc by ``python -m bench.core_metrics``: 58,018 bytes (56.7 KiB), under the
64 KiB goal. The six history rings are 48,000 bytes of that; ``memory_bytes()``
estimates 57,224 bytes from ``sys.getsizeof``.

Hot-path cost, same bench on the shared 2-vCPU reference box (Python 3.11, other jobs
running): ``on_message_in`` 0.35 µs per call including the ~0.07 µs call itself at load
average 2, 0.8 µs with the box oversubscribed (load 3.4); ``on_message_out`` 0.18-0.36 µs.
Small next to the ~10 µs a relayed frame costs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from wsgate.core.windows import Ewma, PeakEwma, RateCounter, RingBuffer, quantiles

__all__ = [
    "ConnectionMetrics",
    "ConnectionStats",
    "Ewma",
    "FrameCounts",
    "HistoryPoint",
    "PeakEwma",
    "RateCounter",
    "RingBuffer",
    "quantiles",
]

# Error kinds are a small vocabulary chosen by callers; past this many distinct kinds
# new ones are counted under "other" so a buggy caller cannot grow the dict forever.
_MAX_ERROR_KINDS = 32
_RECONNECT_WINDOW = 600.0  # "recent" reconnects: the last 10 minutes
_RECONNECT_MEMORY = 64  # timestamps kept; more than 64 in 10 min is flapping anyway


@dataclass(frozen=True)
class HistoryPoint:
    """One analytics roll-up: the state of a connection at ``ts``."""

    ts: float
    latency: float | None  # ws-ping EWMA, else app-ping EWMA, else None
    msg_rate: float
    bytes_rate: float
    errors: int  # errors since the previous roll-up
    queue_depth: int


@dataclass(frozen=True)
class ConnectionStats:
    """A point-in-time view of one upstream connection; feeds CLI, metrics and health."""

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    msg_rate_in: float
    bytes_rate_in: float
    latency_ewma: float | None
    latency_app_ewma: float | None
    latency_peak: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    errors_total: int
    errors_by_kind: tuple[tuple[str, int], ...]
    error_rate: float  # errors per second over the rate window
    error_ratio: float  # errors per inbound message over the rate window
    reconnects_total: int
    reconnects_recent: int  # in the last 10 minutes
    state: str | None
    uptime: float
    downtime: float
    availability: float | None  # uptime / (uptime + downtime); None before any state
    last_message_age: float | None
    # Reconnects an operator asked for (``connections reconnect``/``enable``): not a sign
    # of trouble, so never in ``reconnects_recent``, health or alerts.
    operator_reconnects: int = 0


class FrameCounts(Protocol):
    """Running totals kept by someone else (a relay's C pipe)."""

    @property
    def frames(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class _Lazy:
    __slots__ = ("bytes", "counter", "frames", "inbound")

    def __init__(self, counter: FrameCounts, inbound: bool) -> None:
        self.counter = counter
        self.inbound = inbound
        self.frames = counter.frames  # what was booked already
        self.bytes = counter.bytes


class ConnectionMetrics:
    """Everything wsgate measures about one upstream connection.

    Hot-path methods (``on_message_in``/``on_message_out``) are O(1): a few integer
    additions and one bucket update. ``roll_up`` is called by the analytics job and
    appends one :class:`HistoryPoint` to per-field rings of ``history_points`` capacity.
    Latency quantiles are exact over the last ``latency_samples`` ws-ping RTTs (app-ping
    RTTs when the dialect has no ws pings).
    """

    __slots__ = (
        "_bytes_out",
        "_downtime",
        "_err_rate",
        "_errors_at_rollup",
        "_errors_by_kind",
        "_h_bytes_rate",
        "_h_errors",
        "_h_latency",
        "_h_msg_rate",
        "_h_queue",
        "_h_ts",
        "_lat_app_ring",
        "_lat_ws_ring",
        "_lazy",
        "_messages_out",
        "_rate_in",
        "_reconnect_times",
        "_state_since",
        "_uptime",
        "errors_total",
        "history_points",
        "is_up",
        "last_message_at",
        "latency_app",
        "latency_peak",
        "latency_sink",
        "latency_ws",
        "operator_reconnects",
        "rate_window",
        "reconnects_total",
        "state",
    )

    def __init__(
        self,
        history_points: int = 1000,
        rate_window: float = 10.0,
        *,
        latency_samples: int = 128,
        latency_half_life: float = 30.0,
        peak_half_life: float = 10.0 * math.log(2),
    ) -> None:
        self.history_points = history_points
        self.rate_window = rate_window
        self._messages_out = 0
        self._bytes_out = 0
        self._lazy: list[_Lazy] = []  # counted elsewhere, folded in when read
        self.last_message_at: float | None = None
        self._rate_in = RateCounter(rate_window, 10)
        self._err_rate = RateCounter(rate_window, 10)
        self.latency_ws = Ewma(latency_half_life)
        self.latency_app = Ewma(latency_half_life)
        self.latency_peak = PeakEwma(peak_half_life)
        self._lat_ws_ring = RingBuffer(latency_samples)
        self._lat_app_ring = RingBuffer(latency_samples)
        self.errors_total = 0
        self._errors_by_kind: dict[str, int] = {}
        self._errors_at_rollup = 0
        self.reconnects_total = 0
        self.operator_reconnects = 0
        self._reconnect_times = RingBuffer(_RECONNECT_MEMORY)
        self.state: str | None = None
        self.is_up = False
        self._state_since: float | None = None
        self._uptime = 0.0
        self._downtime = 0.0
        self._h_ts = RingBuffer(history_points)
        self._h_latency = RingBuffer(history_points)
        self._h_msg_rate = RingBuffer(history_points)
        self._h_bytes_rate = RingBuffer(history_points)
        self._h_errors = RingBuffer(history_points)
        self._h_queue = RingBuffer(history_points)
        # The route's latency histograms (wsgate_upstream_rtt_seconds): every sample of
        # every connection of the route, so the export aggregates across connections.
        self.latency_sink: Callable[[str, float], None] | None = None

    def set_history_points(self, history_points: int) -> None:
        """Resize the history rings, keeping the newest points (``metrics.history_points``)."""
        if history_points == self.history_points:
            return
        self.history_points = history_points
        for name in (
            "_h_ts",
            "_h_latency",
            "_h_msg_rate",
            "_h_bytes_rate",
            "_h_errors",
            "_h_queue",
        ):
            setattr(self, name, getattr(self, name).resized(history_points))

    # -- hot path ---------------------------------------------------------------------

    # The inbound totals live in the rate counter so a frame costs one call, not three.
    @property
    def messages_in(self) -> int:
        return self._rate_in.total + self._unfolded(True, True)

    @property
    def bytes_in(self) -> int:
        return self._rate_in.total_bytes + self._unfolded(True, False)

    @property
    def messages_out(self) -> int:
        return self._messages_out + self._unfolded(False, True)

    @property
    def bytes_out(self) -> int:
        return self._bytes_out + self._unfolded(False, False)

    def msg_rate(self, now: float) -> float:
        """Inbound messages per second over the rate window (cheap: no snapshot)."""
        self.fold(now)
        return self._rate_in.rate(now)

    def error_rate(self, now: float) -> float:
        """Errors per second over the rate window."""
        return self._err_rate.rate(now)

    def count_lazily(self, counter: FrameCounts, *, inbound: bool) -> None:
        """Frames ``counter`` counts (a relay's C pipe: no Python runs per frame) are this
        connection's too, inbound or outbound: every read of these metrics includes them,
        and :meth:`fold` books them as of its ``now`` (the rate window's bucket, the last
        message time), so a rate is exact over any span longer than the folds' spacing."""
        self._lazy.append(_Lazy(counter, inbound))

    def fold(self, now: float) -> bool:
        """Book what the lazy counters counted since the last fold; True if any frame."""
        moved = False
        for lazy in self._lazy:
            frames, nbytes = lazy.counter.frames, lazy.counter.bytes
            if frames == lazy.frames:
                continue
            count, size = frames - lazy.frames, nbytes - lazy.bytes
            lazy.frames, lazy.bytes = frames, nbytes
            moved = True
            if lazy.inbound:
                self.on_message_in(now, size, count)
            else:
                self.on_message_out(now, size, count)
        return moved

    def settle(self, now: float) -> None:
        """Book the lazy counters one last time and forget them (their socket closed)."""
        self.fold(now)
        self._lazy.clear()

    def _unfolded(self, inbound: bool, frames: bool) -> int:
        total = 0
        for lazy in self._lazy:
            if lazy.inbound == inbound:
                if frames:
                    total += lazy.counter.frames - lazy.frames
                else:
                    total += lazy.counter.bytes - lazy.bytes
        return total

    def on_message_in(self, now: float, nbytes: int, count: int = 1) -> None:
        self.last_message_at = now
        self._rate_in.add(now, nbytes, count)

    def on_message_out(self, now: float, nbytes: int, count: int = 1) -> None:
        self._messages_out += count
        self._bytes_out += nbytes

    # -- events -----------------------------------------------------------------------

    def on_latency(self, now: float, rtt: float, kind: Literal["ws", "app"] = "ws") -> None:
        if self.latency_sink is not None:
            self.latency_sink(kind, rtt)
        if kind == "ws":
            self.latency_ws.update(now, rtt)
            self._lat_ws_ring.append(rtt)
            self.latency_peak.update(now, rtt)
        elif kind == "app":
            self.latency_app.update(now, rtt)
            self._lat_app_ring.append(rtt)
            # The balancer needs a latency even on dialects without ws pings.
            if self.latency_ws.value is None:
                self.latency_peak.update(now, rtt)
        else:
            raise ValueError(f"latency kind must be 'ws' or 'app', got {kind!r}")

    def on_error(self, now: float, kind: str) -> None:
        self.errors_total += 1
        self._err_rate.add(now)
        if kind not in self._errors_by_kind and len(self._errors_by_kind) >= _MAX_ERROR_KINDS:
            kind = "other"
        self._errors_by_kind[kind] = self._errors_by_kind.get(kind, 0) + 1

    def on_reconnect(self, now: float, *, operator: bool = False) -> None:
        """A reopen after a close. One an operator asked for is counted apart: it says
        nothing about the connection's health."""
        if operator:
            self.operator_reconnects += 1
            return
        self.reconnects_total += 1
        self._reconnect_times.append(now)

    def on_state(self, now: float, state_name: str, is_up: bool) -> None:
        """Record a state change; time since the previous one counts as up or down."""
        if self._state_since is None:
            self._rate_in.mark_start(now)
            self._err_rate.mark_start(now)
        self._account(now)
        self.state = state_name
        self.is_up = is_up

    def _account(self, now: float) -> None:
        if self._state_since is not None:
            elapsed = max(now - self._state_since, 0.0)
            if self.is_up:
                self._uptime += elapsed
            else:
                self._downtime += elapsed
        self._state_since = now if self._state_since is None else max(now, self._state_since)

    # -- analytics --------------------------------------------------------------------

    def _latency(self) -> float | None:
        return self.effective_latency()

    def effective_latency(self) -> float | None:
        """The worse of the ws-ping and app-ping EWMAs (either alone when only one exists).

        A WebSocket pong measures the network; an application pong also measures the
        exchange's own processing, so a slow or stalled engine shows only there. Health
        and alerts judge what a bot would experience: the worse of the two.
        """
        ws, app = self.latency_ws.value, self.latency_app.value
        if ws is None:
            return app
        return ws if app is None else max(ws, app)

    def roll_up(self, now: float, queue_depth: int = 0) -> HistoryPoint:
        self.fold(now)
        latency = self._latency()
        msg_rate = self._rate_in.rate(now)
        bytes_rate = self._rate_in.bytes_rate(now)
        errors = self.errors_total - self._errors_at_rollup
        self._errors_at_rollup = self.errors_total
        self._h_ts.append(now)
        self._h_latency.append(math.nan if latency is None else latency)
        self._h_msg_rate.append(msg_rate)
        self._h_bytes_rate.append(bytes_rate)
        self._h_errors.append(errors)
        self._h_queue.append(queue_depth)
        return HistoryPoint(now, latency, msg_rate, bytes_rate, errors, queue_depth)

    def history(self) -> list[HistoryPoint]:
        """All retained roll-ups, oldest first."""
        columns = zip(
            self._h_ts.values(),
            self._h_latency.values(),
            self._h_msg_rate.values(),
            self._h_bytes_rate.values(),
            self._h_errors.values(),
            self._h_queue.values(),
            strict=True,
        )
        return [
            HistoryPoint(ts, None if math.isnan(lat) else lat, mr, br, int(err), int(q))
            for ts, lat, mr, br, err, q in columns
        ]

    def reconnects_recent(self, now: float) -> int:
        cutoff = now - _RECONNECT_WINDOW
        return sum(1 for t in self._reconnect_times.values() if t > cutoff)

    def snapshot(self, now: float) -> ConnectionStats:
        self.fold(now)
        ring = self._lat_ws_ring if len(self._lat_ws_ring) else self._lat_app_ring
        samples = ring.values()
        p50, p95, p99 = quantiles(samples) if samples else (None, None, None)
        uptime, downtime = self._uptime, self._downtime
        if self._state_since is not None:
            running = max(now - self._state_since, 0.0)
            if self.is_up:
                uptime += running
            else:
                downtime += running
        total = uptime + downtime
        msgs_in_window = self._rate_in.count(now)
        errs_in_window = self._err_rate.count(now)
        return ConnectionStats(
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            msg_rate_in=self._rate_in.rate(now),
            bytes_rate_in=self._rate_in.bytes_rate(now),
            latency_ewma=self.latency_ws.value,
            latency_app_ewma=self.latency_app.value,
            latency_peak=self.latency_peak.value,
            latency_p50=p50,
            latency_p95=p95,
            latency_p99=p99,
            errors_total=self.errors_total,
            errors_by_kind=tuple(sorted(self._errors_by_kind.items())),
            error_rate=self._err_rate.rate(now),
            error_ratio=errs_in_window / max(msgs_in_window, 1.0),
            reconnects_total=self.reconnects_total,
            reconnects_recent=self.reconnects_recent(now),
            state=self.state,
            uptime=uptime,
            downtime=downtime,
            availability=uptime / total if total > 0 else None,
            last_message_age=(
                None if self.last_message_at is None else max(now - self.last_message_at, 0.0)
            ),
            operator_reconnects=self.operator_reconnects,
        )

    def memory_bytes(self) -> int:
        """Estimated footprint in bytes: this object, its rings, counters and EWMAs."""
        rings = (
            self._lat_ws_ring,
            self._lat_app_ring,
            self._reconnect_times,
            self._h_ts,
            self._h_latency,
            self._h_msg_rate,
            self._h_bytes_rate,
            self._h_errors,
            self._h_queue,
        )
        total = sys.getsizeof(self)
        total += sum(r.memory_bytes() for r in rings)
        total += self._rate_in.memory_bytes() + self._err_rate.memory_bytes()
        total += sum(sys.getsizeof(e) for e in (self.latency_ws, self.latency_app))
        total += sys.getsizeof(self.latency_peak) + sys.getsizeof(self._errors_by_kind)
        return total

    def __repr__(self) -> str:
        return (
            f"ConnectionMetrics(state={self.state!r}, up={self.is_up}, in={self.messages_in}, "
            f"out={self.messages_out}, errors={self.errors_total}, "
            f"reconnects={self.reconnects_total}, history={len(self._h_ts)}/{self.history_points})"
        )
