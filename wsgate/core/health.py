"""Health scores for connections, routes, connection types and the whole gateway.

Score of one connection, 0..100::

    score = 100 * state_factor * (1 - p_latency) * (1 - p_stale) * (1 - p_errors)
                               * (1 - p_reconnects) * (1 - p_rate)

    state_factor = 0 when down, 0.6 when degraded (e.g. exchange maintenance), else 1
    p_latency    = 0.5 * clamp((r - 1.5) / 4.5, 0, 1)      r = latency / max(ref, 5 ms)
                   ref = baseline_latency, or 200 ms when there is no baseline;
                   0 while latency is unknown. Full penalty at 6x the baseline.
    p_stale      = 0.8 * stale_fraction                    every channel silent → ≤ 20
    p_errors     = 0.6 * (1 - 0.05 / (error_rate + 0.05))  3 errors/min → 0.3
    p_reconnects = 0.6 * (1 - 3 / (reconnects_recent + 3)) 3 in 10 min → 0.3
    p_rate       = 0.5 * clamp((deficit - 0.5) / 0.5, 0, 1)
                   deficit = 1 - message_rate / expected_rate; only a shortfall of more
                   than half the expected rate counts (market rates swing a lot)

Each penalty is clamped to [0, its cap] and computed with floating-point operations
that are each monotonic, so the score is exactly (not only approximately) monotonic:
worse latency, more staleness, errors or reconnects, a lower message rate, degraded or
down never raise it.

Aggregate of several scores (:func:`aggregate_health`)::

    aggregate = mean_w - 0.25 * (mean_w - worst) = 0.75 * mean_w + 0.25 * worst

``mean_w`` is the weighted mean, ``worst`` the lowest score with a positive weight. One
dead connection among healthy ones therefore costs a quarter of the distance to zero
rather than vanishing into the average (10 connections, one at 0: 67.5, not 90).
It lies between ``worst`` and ``mean_w`` and never rises when any score falls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from wsgate.core.types import ConnectionType

__all__ = [
    "ConnectionSummary",
    "HealthBreakdown",
    "HealthInputs",
    "RouteAggregate",
    "SystemOverview",
    "TypeAggregate",
    "aggregate_health",
    "health_score",
    "overview",
]

DEGRADED_FACTOR = 0.6
DEFAULT_LATENCY_REF = 0.2  # seconds, used when no baseline has been learned yet
LATENCY_FLOOR = 0.005  # a 1 ms baseline must not turn 4 ms of jitter into a 4x slowdown
WORST_DRAG = 0.25


@dataclass(frozen=True)
class HealthInputs:
    state_up: bool
    degraded: bool
    latency: float | None  # seconds
    baseline_latency: float | None  # seconds
    stale_fraction: float  # 0..1 share of channels silent past their limit
    error_rate: float  # errors per second
    reconnects_recent: int
    message_rate: float  # messages per second
    expected_rate: float | None  # messages per second

    def __post_init__(self) -> None:
        for name in ("latency", "baseline_latency", "error_rate", "message_rate", "expected_rate"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"HealthInputs.{name} must be a finite number >= 0, got {v!r}")
        if not 0.0 <= self.stale_fraction <= 1.0:
            raise ValueError(
                f"HealthInputs.stale_fraction must be in [0, 1], got {self.stale_fraction!r}"
            )
        if self.reconnects_recent < 0:
            raise ValueError(
                f"HealthInputs.reconnects_recent must be >= 0, got {self.reconnects_recent}"
            )


@dataclass(frozen=True)
class HealthBreakdown:
    score: float  # 0..100
    state_factor: float
    latency_penalty: float
    staleness_penalty: float
    error_penalty: float
    reconnect_penalty: float
    rate_penalty: float

    def worst_component(self) -> str:
        """Name of the factor that costs the most, for "why is this feed unhealthy"."""
        if self.state_factor < 1.0:
            return "down" if self.state_factor == 0.0 else "degraded"
        penalties = {
            "latency": self.latency_penalty,
            "staleness": self.staleness_penalty,
            "errors": self.error_penalty,
            "reconnects": self.reconnect_penalty,
            "rate": self.rate_penalty,
        }
        name, value = max(penalties.items(), key=lambda kv: kv[1])
        return name if value > 0 else "none"


def _clamp01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _saturating(x: float, half: float) -> float:
    """0 at x=0, 0.5 at x=half, → 1; written as 1 - h/(x+h) so every step is monotonic."""
    return 1.0 - half / (x + half)


def health_score(inputs: HealthInputs) -> HealthBreakdown:
    """Score one connection; see the module docstring for the formula."""
    if not inputs.state_up:
        state_factor = 0.0
    elif inputs.degraded:
        state_factor = DEGRADED_FACTOR
    else:
        state_factor = 1.0

    p_latency = 0.0
    if inputs.latency is not None:
        ref = (
            inputs.baseline_latency if inputs.baseline_latency is not None else DEFAULT_LATENCY_REF
        )
        ratio = inputs.latency / max(ref, LATENCY_FLOOR)
        p_latency = 0.5 * _clamp01((ratio - 1.5) / 4.5)

    p_stale = 0.8 * inputs.stale_fraction
    p_errors = 0.6 * _saturating(inputs.error_rate, 0.05)
    p_reconnects = 0.6 * _saturating(float(inputs.reconnects_recent), 3.0)

    p_rate = 0.0
    if inputs.expected_rate is not None and inputs.expected_rate > 0:
        deficit = 1.0 - inputs.message_rate / inputs.expected_rate
        p_rate = 0.5 * _clamp01((deficit - 0.5) / 0.5)

    score = 100.0 * state_factor
    for p in (p_latency, p_stale, p_errors, p_reconnects, p_rate):
        score *= 1.0 - p
    return HealthBreakdown(
        score=min(max(score, 0.0), 100.0),
        state_factor=state_factor,
        latency_penalty=p_latency,
        staleness_penalty=p_stale,
        error_penalty=p_errors,
        reconnect_penalty=p_reconnects,
        rate_penalty=p_rate,
    )


def aggregate_health(scores: Sequence[tuple[float, float]]) -> float:
    """Combine ``(score, weight)`` pairs: weighted mean pulled a quarter of the way to the worst.

    Pairs with weight 0 are ignored. Raises ValueError when no pair has a positive weight
    (there is nothing to score) or a weight is negative.
    """
    total_w = 0.0
    acc = 0.0
    worst = math.inf
    best = -math.inf
    for score, weight in scores:
        if weight < 0:
            raise ValueError(f"aggregate_health weights must be >= 0, got {weight}")
        if weight == 0:
            continue
        total_w += weight
        acc += score * weight
        worst = min(worst, score)
        best = max(best, score)
    if total_w == 0:
        raise ValueError("aggregate_health needs at least one score with a positive weight")
    mean = min(max(acc / total_w, worst), best)  # float rounding must not leave [worst, best]
    # Written as a sum of non-negative multiples so float rounding keeps it monotonic.
    return min(max((1.0 - WORST_DRAG) * mean + WORST_DRAG * worst, worst), mean)


@dataclass(frozen=True)
class ConnectionSummary:
    """What the overview needs from one upstream connection."""

    id: str
    route: str
    type: ConnectionType
    state_up: bool
    health: float
    latency: float | None
    msg_rate: float
    errors: int
    reconnects: int


@dataclass(frozen=True)
class _Totals:
    connections: int
    up: int
    down: int
    health: float | None  # None when there is no connection to score
    msg_rate: float
    errors: int
    reconnects: int
    avg_latency: float | None


@dataclass(frozen=True)
class TypeAggregate(_Totals):
    type: ConnectionType


@dataclass(frozen=True)
class RouteAggregate(_Totals):
    route: str


@dataclass(frozen=True)
class SystemOverview(_Totals):
    """Totals plus one aggregate per connection type (all four, always) and per route."""

    by_type: tuple[TypeAggregate, ...]
    by_route: tuple[RouteAggregate, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (enums as their values) for the control API."""
        doc = asdict(self)
        for entry in doc["by_type"]:
            entry["type"] = entry["type"].value
        return doc


def _totals(conns: Sequence[ConnectionSummary]) -> dict[str, Any]:
    latencies = [c.latency for c in conns if c.latency is not None]
    up = sum(1 for c in conns if c.state_up)
    totals = _Totals(
        connections=len(conns),
        up=up,
        down=len(conns) - up,
        health=aggregate_health([(c.health, 1.0) for c in conns]) if conns else None,
        msg_rate=sum(c.msg_rate for c in conns),
        errors=sum(c.errors for c in conns),
        reconnects=sum(c.reconnects for c in conns),
        avg_latency=sum(latencies) / len(latencies) if latencies else None,
    )
    return vars(totals)


def overview(per_connection: Sequence[ConnectionSummary]) -> SystemOverview:
    """The gateway at a glance: totals, per connection type and per route.

    Every connection weighs 1 in the health aggregates; the overall score aggregates
    all connections directly, so a big route is not outvoted by many small ones.
    """
    by_route: dict[str, list[ConnectionSummary]] = {}
    by_type: dict[ConnectionType, list[ConnectionSummary]] = {t: [] for t in ConnectionType}
    for c in per_connection:
        by_route.setdefault(c.route, []).append(c)
        by_type[c.type].append(c)
    types = tuple(TypeAggregate(type=t, **_totals(cs)) for t, cs in by_type.items())
    routes = tuple(RouteAggregate(route=r, **_totals(by_route[r])) for r in sorted(by_route))
    return SystemOverview(by_type=types, by_route=routes, **_totals(per_connection))
