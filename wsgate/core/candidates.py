"""What the balancer sees of a connection, and the small pure helpers around it.

:class:`Candidate` is a frozen snapshot of one upstream connection (or endpoint);
:class:`Decision` is a balancer's answer. :func:`effective_weight` is slow start,
:class:`ErrorPenalty` a decaying error score and :class:`PickCounts` a decaying count
of picks for callers whose picks leave no other trace (``Gateway.get_connection``),
so least-connections and least-load see their own recent answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsgate.core.types import StrategyName

__all__ = [
    "MIN_WEIGHT_FRACTION",
    "Candidate",
    "Decision",
    "ErrorPenalty",
    "PickCounts",
    "effective_weight",
    "is_healthy",
    "is_usable",
]

MIN_WEIGHT_FRACTION = 0.1  # Envoy's min_weight_percent default: a new connection is never starved


@dataclass(frozen=True, slots=True)
class Candidate:
    """A snapshot of one upstream connection (or endpoint) as the balancer sees it."""

    id: str
    weight: float = 1.0
    sessions: int = 0
    subscriptions: int = 0
    capacity: int = 0  # max subscriptions, 0 = unlimited
    message_rate: float = 0.0  # msgs/s EWMA
    latency: float | None = None  # seconds, EWMA of ping RTT; None = no sample yet
    health: float = 100.0  # 0..100
    eligible: bool = True  # False when draining/disabled/not open: the caller decides
    connected_at: float | None = None  # for slow start
    error_penalty: float = 0.0  # decaying penalty (see ErrorPenalty), >= 0
    picked: float = 0.0  # decaying count of recent hand-outs (see PickCounts), >= 0


@dataclass(frozen=True, slots=True)
class Decision:
    candidate_id: str
    strategy: StrategyName
    fail_open: bool
    reason: str


def is_usable(c: Candidate) -> bool:
    """Eligible, positive weight and not full."""
    return c.eligible and c.weight > 0 and (c.capacity <= 0 or c.subscriptions < c.capacity)


def is_healthy(c: Candidate, unhealthy_below: float) -> bool:
    """Usable and at or above the health floor: the filter every strategy applies.

    Written out rather than calling :func:`is_usable`: it runs per candidate per pick.
    """
    return (
        c.eligible
        and c.health >= unhealthy_below
        and c.weight > 0
        and (c.capacity <= 0 or c.subscriptions < c.capacity)
    )


def effective_weight(
    c: Candidate, now: float, slow_start: float, *, aggression: float = 1.0
) -> float:
    """Weight after slow start: ``weight * max(10%, (age / window) ** (1 / aggression))``.

    Envoy's formula; the default aggression 1.0 is a linear ramp (like HAProxy's
    ``slowstart``). It is non-decreasing in ``now`` and reaches the full weight at
    ``connected_at + slow_start``. A connection with no ``connected_at`` or a
    window of 0 gets its full weight. A ``now`` before ``connected_at`` (skewed
    caller) gets the floor rather than a negative weight.
    """
    t0 = c.connected_at
    if t0 is None or slow_start <= 0:
        return c.weight
    age = now - t0
    if age >= slow_start:
        return c.weight
    f = age / slow_start if age > 0 else 0.0
    if aggression != 1.0 and f > 0:
        f = f ** (1.0 / aggression)
    return c.weight * (f if f > MIN_WEIGHT_FRACTION else MIN_WEIGHT_FRACTION)


class ErrorPenalty:
    """A penalty that halves every ``half_life`` seconds; ``add`` bumps it on an error.

    Feed ``value(now)`` into ``Candidate.error_penalty``. Time going backwards is
    treated as no time passing, so the value never grows by itself.
    """

    __slots__ = ("_stamp", "_value", "half_life")

    def __init__(self, half_life: float = 30.0) -> None:
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0, got {half_life!r}")
        self.half_life = half_life
        self._value = 0.0
        self._stamp = 0.0

    def value(self, now: float) -> float:
        if self._value == 0.0:
            return 0.0
        elapsed = now - self._stamp
        if elapsed <= 0:
            return self._value
        return self._value * float(0.5 ** (elapsed / self.half_life))

    def add(self, now: float, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"penalty amount must be >= 0, got {amount!r}")
        self._value = self.value(now) + amount
        self._stamp = max(now, self._stamp)

    def __repr__(self) -> str:
        return (
            f"<ErrorPenalty value={self._value:.3f}@{self._stamp:.3f} half_life={self.half_life}>"
        )


class PickCounts:
    """Picks per id that decay with ``half_life`` seconds: "recently handed out" load.

    A caller that hands a connection out without the pick showing up anywhere else
    (no subscription, no session) adds it here and passes :meth:`value` as the
    candidate's ``sessions``-like load, so the next pick sees it. The decay is the
    release: a handed-out connection weighs 1 at once, 0.5 after one half-life.
    Ids not seen for ``16 * half_life`` are forgotten, so the map stays bounded by
    the live ids.
    """

    __slots__ = ("_cells", "half_life")

    def __init__(self, half_life: float = 30.0) -> None:
        if half_life <= 0:
            raise ValueError(f"half_life must be > 0, got {half_life!r}")
        self.half_life = half_life
        self._cells: dict[str, ErrorPenalty] = {}

    def add(self, key: str, now: float) -> None:
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = ErrorPenalty(self.half_life)
        cell.add(now)
        if len(self._cells) > 64:
            self._prune(now)

    def value(self, key: str, now: float) -> float:
        cell = self._cells.get(key)
        return 0.0 if cell is None else cell.value(now)

    def _prune(self, now: float) -> None:
        floor = 0.5**16
        for key in [k for k, c in self._cells.items() if c.value(now) < floor]:
            del self._cells[key]

    def __len__(self) -> int:
        return len(self._cells)

    def __repr__(self) -> str:
        return f"<PickCounts ids={len(self._cells)} half_life={self.half_life}>"
