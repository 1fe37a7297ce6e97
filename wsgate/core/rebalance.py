"""Budgeted, hysteretic planner for moving existing subscriptions between connections.

Long-lived subscriptions stay where they were placed; after a recovery or a
scale-out the new connection would sit idle for ever (the failure behind
Envoy #15283 and NATS/etcd "24/24/24 -> 45/27/0" reports). The runtime calls
:meth:`Rebalancer.plan` periodically with the current assignment; the planner
returns a short list of :class:`Move` to execute make-before-break.

Imbalance is ``max(load / weight) / (sum(load) / sum(weight))`` over the eligible
connections (equal weights: max/mean of subscription counts). Three states:

* ``BALANCED`` -- ratio below ``imbalance_ratio``; nothing planned.
* ``PENDING`` -- the ratio reached ``imbalance_ratio`` at ``since``; waiting for it
  to hold ``sustain`` seconds.
* ``ACTIVE`` -- sustained; up to ``max_moves_per_run`` moves per call, at most one
  planning run per ``min_interval`` seconds.

From PENDING or ACTIVE the planner only returns to BALANCED when the ratio falls
below ``(1 + imbalance_ratio) / 2``, so a ratio wobbling around the threshold
neither restarts the clock nor toggles moves on and off. Each move goes from the
most loaded connection to the least loaded healthy target and only when it
narrows their gap (target after the move stays strictly below the source before
it), so a plan never moves a subscription back and forth.

Only eligible connections count and act as sources: subscriptions on a draining
or disabled connection are the drain path's job, not the rebalancer's. Targets
must also be healthy (``health >= unhealthy_below``), below capacity and of
positive weight.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from wsgate.core.balancer import Candidate, is_healthy

__all__ = ["Move", "RebalanceState", "RebalanceStats", "Rebalancer"]

log = logging.getLogger("wsgate.rebalance")


@dataclass(frozen=True, slots=True)
class Move:
    subscription: str
    source: str
    target: str


class RebalanceState(StrEnum):
    BALANCED = "balanced"
    PENDING = "pending"
    ACTIVE = "active"


@dataclass(frozen=True)
class RebalanceStats:
    state: RebalanceState
    ratio: float  # imbalance ratio at the last plan() call
    imbalanced_since: float | None
    runs: int  # planning runs (sustained and not rate limited)
    moves_planned: int
    deferred: int  # calls that were sustained but inside min_interval
    last_run: float | None


class Rebalancer:
    def __init__(
        self,
        *,
        imbalance_ratio: float = 1.5,
        sustain: float = 60.0,
        max_moves_per_run: int = 5,
        min_interval: float = 30.0,
        unhealthy_below: float = 50.0,
    ) -> None:
        if imbalance_ratio <= 1.0:
            raise ValueError(f"imbalance_ratio must be > 1, got {imbalance_ratio!r}")
        if sustain < 0 or min_interval < 0 or max_moves_per_run < 0:
            raise ValueError("sustain, min_interval and max_moves_per_run must be >= 0")
        self.imbalance_ratio = imbalance_ratio
        self.reset_ratio = (1.0 + imbalance_ratio) / 2.0
        self.sustain = sustain
        self.max_moves_per_run = max_moves_per_run
        self.min_interval = min_interval
        self.unhealthy_below = unhealthy_below
        self._state = RebalanceState.BALANCED
        self._since: float | None = None
        self._ratio = 0.0
        self._runs = 0
        self._moves = 0
        self._deferred = 0
        self._last_run: float | None = None

    @property
    def state(self) -> RebalanceState:
        return self._state

    def _set_state(self, state: RebalanceState, now: float) -> None:
        if state is self._state:
            return
        log.info(
            "rebalance %s -> %s (ratio %.2f at %.1f)",
            self._state.value,
            state.value,
            self._ratio,
            now,
        )
        self._state = state
        self._since = now if state is RebalanceState.PENDING else self._since
        if state is RebalanceState.BALANCED:
            self._since = None

    def plan(
        self, loads: Mapping[str, Sequence[str]], candidates: Sequence[Candidate], now: float
    ) -> list[Move]:
        """Moves to execute now (possibly none). ``loads``: connection id -> subscription keys."""
        pool = [c for c in candidates if c.eligible and c.weight > 0]
        counts = {c.id: len(loads.get(c.id, ())) for c in pool}
        weights = {c.id: c.weight for c in pool}
        self._ratio = ratio = _imbalance(counts, weights)

        if ratio >= self.imbalance_ratio:
            if self._state is RebalanceState.BALANCED:
                self._set_state(RebalanceState.PENDING, now)
        elif ratio < self.reset_ratio:
            self._set_state(RebalanceState.BALANCED, now)
        if self._state is RebalanceState.BALANCED:
            return []
        if self._state is RebalanceState.PENDING:
            assert self._since is not None
            if now - self._since < self.sustain:
                return []
            self._set_state(RebalanceState.ACTIVE, now)
        if self._last_run is not None and now - self._last_run < self.min_interval:
            self._deferred += 1
            return []

        self._runs += 1
        self._last_run = now
        moves = self._greedy(loads, pool, counts, weights)
        self._moves += len(moves)
        if moves:
            log.info("rebalance plan: %d move(s) at ratio %.2f", len(moves), ratio)
        return moves

    def _greedy(
        self,
        loads: Mapping[str, Sequence[str]],
        pool: list[Candidate],
        counts: dict[str, int],
        weights: dict[str, float],
    ) -> list[Move]:
        targets = {c.id: c for c in pool if is_healthy(c, self.unhealthy_below)}
        # Keys are taken from the end of the sorted list so the plan is deterministic.
        queues = {cid: sorted(loads.get(cid, ())) for cid in counts}
        moves: list[Move] = []
        while len(moves) < self.max_moves_per_run:
            # Ties broken by id so the same input always yields the same plan.
            source = max(counts, key=lambda k: (counts[k] / weights[k], k), default=None)
            open_targets = [
                k
                for k, c in targets.items()
                if k != source and (c.capacity <= 0 or counts[k] < c.capacity)
            ]
            if source is None or not open_targets or not queues[source]:
                break
            target = min(open_targets, key=lambda k: (counts[k] / weights[k], k))
            if (counts[target] + 1) / weights[target] >= counts[source] / weights[source]:
                break
            key = queues[source].pop()
            counts[source] -= 1
            counts[target] += 1
            moves.append(Move(key, source, target))
        return moves

    def statistics(self) -> RebalanceStats:
        return RebalanceStats(
            state=self._state,
            ratio=self._ratio,
            imbalanced_since=self._since,
            runs=self._runs,
            moves_planned=self._moves,
            deferred=self._deferred,
            last_run=self._last_run,
        )

    def __repr__(self) -> str:
        return (
            f"<Rebalancer {self._state.value} ratio={self._ratio:.2f}"
            f" threshold={self.imbalance_ratio}/{self.reset_ratio} runs={self._runs}"
            f" moves={self._moves}>"
        )


def _imbalance(counts: Mapping[str, int], weights: Mapping[str, float]) -> float:
    if len(counts) < 2:
        return 0.0
    total = sum(counts.values())
    if total == 0:
        return 0.0
    mean = total / sum(weights.values())
    return max(counts[k] / weights[k] for k in counts) / mean
