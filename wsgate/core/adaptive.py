"""``adaptive``: automatic choice of one of the other strategies, per route, over time.

The specification defines the seventh strategy as *automatic strategy selection*.
:class:`AdaptiveSelector` looks at the candidates a balancer is asked to choose
among and decides which of the six fixed strategies fits what it sees, in this
order of precedence (the first signal present wins):

====================  ====================================================  ======================
signal                present when                                          strategy
====================  ====================================================  ======================
unhealthy members     some usable candidate scores below ``health_enter``   ``health_based``
latency spread        slowest / fastest RTT >= ``latency_enter`` and the    ``least_latency``
                      gap is at least ``latency_floor`` seconds
uneven load           busiest message rate >= ``load_enter`` x the mean     ``least_load``
                      (and the pool carries at least ``load_floor`` msg/s)
weights configured    candidates carry different weights                    ``weighted_round_robin``
uneven placements     sessions+subscriptions differ by ``count_enter``+     ``least_connections``
otherwise             an even, idle pool                                    ``round_robin``
====================  ====================================================  ======================

The RTTs are the candidates' ``latency`` -- the connections' peak-EWMA RTT, which
rises at once when a connection slows and decays over tens of seconds: the latency
signal itself does not flap on one slow ping.

Hysteresis, so the choice does not flap: a signal that is the current choice stays
present down to a lower *exit* threshold (``health_exit``, ``latency_exit``,
``load_exit``, ``count_exit``); a different choice must be wanted continuously for
``sustain`` seconds and the current one must have been held ``min_dwell`` seconds
before the selector switches. The first evaluation of a pool of two or more chooses
at once (a pool of one has nothing to balance and says nothing). Evaluations
are cached for ``interval`` seconds, so a pick costs O(1) almost always.

Pure: callers pass ``now``; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wsgate.core.candidates import Candidate
from wsgate.core.types import StrategyName

__all__ = ["AdaptiveChoice", "AdaptiveSelector", "AdaptiveSwitch", "Signals", "observe"]


@dataclass(frozen=True, slots=True)
class Signals:
    """What the selector measured over the usable candidates at one evaluation."""

    candidates: int
    min_health: float | None
    weakest: str | None
    latency_ratio: float | None  # slowest / fastest RTT among candidates with a sample
    latency_gap: float | None  # seconds between them
    rate_ratio: float | None  # busiest rate / mean rate
    rate_total: float
    weights_differ: bool
    count_spread: float  # max - min of sessions + subscriptions + picked


@dataclass(frozen=True, slots=True)
class AdaptiveChoice:
    strategy: StrategyName
    reason: str
    since: float  # when this choice was made (caller's clock)
    switches: int  # how many times the choice changed since the first one
    pending: StrategyName | None  # a different choice waiting out the hysteresis

    def as_dict(self) -> dict[str, object]:
        return {
            "strategy": self.strategy.value,
            "reason": self.reason,
            "since": self.since,
            "switches": self.switches,
            "pending": self.pending.value if self.pending else None,
        }


@dataclass(frozen=True, slots=True)
class AdaptiveSwitch:
    old: StrategyName | None
    new: StrategyName
    reason: str
    at: float


def observe(candidates: Sequence[Candidate]) -> Signals:
    """The signals over the usable candidates (eligible, weight > 0, not full)."""
    usable = [
        c
        for c in candidates
        if c.eligible and c.weight > 0 and (c.capacity <= 0 or c.subscriptions < c.capacity)
    ]
    if not usable:
        return Signals(0, None, None, None, None, None, 0.0, False, 0.0)
    weakest = min(usable, key=lambda c: c.health)
    lats = [c.latency for c in usable if c.latency is not None]
    ratio = gap = None
    if len(lats) >= 2:
        lo, hi = min(lats), max(lats)
        ratio = hi / max(lo, 1e-4)
        gap = hi - lo
    rates = [c.message_rate for c in usable]
    total = sum(rates)
    rate_ratio = max(rates) / (total / len(rates)) if total > 0 and len(rates) >= 2 else None
    counts = [c.sessions + c.subscriptions + c.picked for c in usable]
    return Signals(
        candidates=len(usable),
        min_health=weakest.health,
        weakest=weakest.id,
        latency_ratio=ratio,
        latency_gap=gap,
        rate_ratio=rate_ratio,
        rate_total=total,
        weights_differ=len({c.weight for c in usable}) > 1,
        count_spread=max(counts) - min(counts),
    )


class AdaptiveSelector:
    """Chooses the strategy ``adaptive`` applies, with hysteresis; one per balancer."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        sustain: float = 5.0,
        min_dwell: float = 30.0,
        health_enter: float = 80.0,
        health_exit: float = 90.0,
        latency_enter: float = 1.5,
        latency_exit: float = 1.2,
        latency_floor: float = 0.002,
        load_enter: float = 1.5,
        load_exit: float = 1.2,
        load_floor: float = 1.0,
        count_enter: float = 2.0,
        count_exit: float = 1.0,
    ) -> None:
        if health_exit < health_enter or latency_exit > latency_enter or load_exit > load_enter:
            raise ValueError("exit thresholds must lie on the calm side of enter thresholds")
        if count_exit > count_enter:
            raise ValueError("count_exit must be <= count_enter")
        self.interval = interval
        self.sustain = sustain
        self.min_dwell = min_dwell
        self.health_enter, self.health_exit = health_enter, health_exit
        self.latency_enter, self.latency_exit = latency_enter, latency_exit
        self.latency_floor = latency_floor
        self.load_enter, self.load_exit = load_enter, load_exit
        self.load_floor = load_floor
        self.count_enter, self.count_exit = count_enter, count_exit
        self._current: StrategyName | None = None
        self._reason = ""
        self._since = 0.0
        self._switches = 0
        self._pending: tuple[StrategyName, float, str] | None = None
        self._evaluated_at: float | None = None
        self.last_signals: Signals | None = None

    @property
    def current(self) -> StrategyName | None:
        return self._current

    def choice(self) -> AdaptiveChoice | None:
        if self._current is None:
            return None
        pending = self._pending[0] if self._pending else None
        return AdaptiveChoice(self._current, self._reason, self._since, self._switches, pending)

    def select(
        self, candidates: Sequence[Candidate], now: float
    ) -> tuple[StrategyName, AdaptiveSwitch | None]:
        """The strategy to apply now, and the switch when this call changed it."""
        current = self._current
        at = self._evaluated_at
        if current is not None and at is not None and 0.0 <= now - at < self.interval:
            return current, None
        self._evaluated_at = now
        sig = self.last_signals = observe(candidates)
        if sig.candidates < 2:
            # One candidate or none: nothing to balance and nothing to learn from.
            # Keep the choice, or make none yet.
            if current is None:
                self._evaluated_at = None
                return StrategyName.ROUND_ROBIN, None
            return current, None
        wanted, reason = self.desired(sig)
        if current is None:
            return self._switch(wanted, reason, now)
        if wanted is current:
            self._pending = None
            self._reason = reason  # same choice, fresher words
            return current, None
        if self._pending is None or self._pending[0] is not wanted:
            self._pending = (wanted, now, reason)
        started = self._pending[1]
        if now - started >= self.sustain and now - self._since >= self.min_dwell:
            return self._switch(wanted, reason, now)
        return current, None

    def _switch(
        self, new: StrategyName, reason: str, now: float
    ) -> tuple[StrategyName, AdaptiveSwitch]:
        old = self._current
        if old is not None:
            self._switches += 1
        self._current, self._reason, self._since, self._pending = new, reason, now, None
        return new, AdaptiveSwitch(old, new, reason, now)

    def desired(self, sig: Signals) -> tuple[StrategyName, str]:
        """The strategy the signals call for, with exit thresholds for the current choice."""
        cur = self._current
        S = StrategyName
        h_limit = self.health_exit if cur is S.HEALTH_BASED else self.health_enter
        if sig.min_health is not None and sig.min_health < h_limit:
            return S.HEALTH_BASED, (
                f"unhealthy member: {sig.weakest} scores {sig.min_health:.0f} (< {h_limit:g})"
            )
        l_limit = self.latency_exit if cur is S.LEAST_LATENCY else self.latency_enter
        gap_floor = self.latency_floor / 2 if cur is S.LEAST_LATENCY else self.latency_floor
        if (
            sig.latency_ratio is not None
            and sig.latency_gap is not None
            and sig.latency_ratio >= l_limit
            and sig.latency_gap >= gap_floor
        ):
            return S.LEAST_LATENCY, (
                f"latency spread {sig.latency_ratio:.1f}x"
                f" ({sig.latency_gap * 1000:.1f} ms between fastest and slowest)"
            )
        r_limit = self.load_exit if cur is S.LEAST_LOAD else self.load_enter
        if (
            sig.rate_ratio is not None
            and sig.rate_total >= self.load_floor
            and sig.rate_ratio >= r_limit
        ):
            return S.LEAST_LOAD, (
                f"uneven load: busiest at {sig.rate_ratio:.1f}x the mean"
                f" of {sig.rate_total / sig.candidates:.1f} msg/s"
            )
        if sig.weights_differ:
            return S.WEIGHTED_ROUND_ROBIN, "weights configured"
        c_limit = self.count_exit if cur is S.LEAST_CONNECTIONS else self.count_enter
        if sig.count_spread >= c_limit:
            return S.LEAST_CONNECTIONS, (
                f"uneven placements: {sig.count_spread:g} between most and least placed"
            )
        return S.ROUND_ROBIN, "even pool: no latency, load, health or weight differences"

    def __repr__(self) -> str:
        cur = self._current.value if self._current else None
        return f"<AdaptiveSelector {cur} switches={self._switches} reason={self._reason!r}>"
