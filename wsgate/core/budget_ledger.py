"""A budget shared by several nodes: a sliding-window ledger of granted slices, pure.

An exchange counts what one IP does in a window (Binance: 300 connection attempts per 5
minutes; Bitfinex: 20 a minute). N nodes behind one egress IP must together stay under
that, so the budget lives in one record every node reads and rewrites with
compare-and-set (the runtime's part, :mod:`wsgate.cluster.budgets`); this module decides
what a node may take, with ``now`` passed in.

Why a window ledger and not a token bucket: a bucket with a burst of ``count`` that
refills ``count`` per ``per`` lets almost ``2 * count`` through within one window (a full
burst at the end of one refill period and another right after). The exchange counts the
window, so the ledger does too.

* A **slice** is ``count`` tokens granted to one node at ``start``, to be used before
  ``end`` (``start + hold``). A connect takes a slice of one, used at once; a node may take
  a larger slice to keep the shared record off its hot path.
* A slice **occupies** the budget until ``end + per + margin``: any window of length
  ``per`` that could hold one of its uses is covered, and ``margin`` absorbs clock skew
  between nodes (the ledger is written in wall-clock seconds).
* A new slice is granted when the slices still occupying the budget plus the new one fit
  in ``limit``. Every use then falls in a window with at most ``limit`` uses: a window
  that holds a use of the new slice starts after ``start - per``, and only slices that
  end after that can share it.

The record is small JSON (``{"v": 1, "grants": [[node, start, end, count], ...]}``),
pruned on every write, so its size is bounded by ``limit`` slices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MARGIN",
    "BudgetDecision",
    "Ledger",
    "Slice",
    "decide_take",
    "local_share",
    "slice_size",
    "window_margin",
]

DEFAULT_MARGIN = 1.0  # seconds of clock skew between nodes the ledger absorbs
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Slice:
    """``count`` tokens granted to ``node`` at ``start``, usable until ``end``."""

    node: str
    start: float
    end: float
    count: int

    def occupies_until(self, per: float, margin: float) -> float:
        return self.end + per + margin


@dataclass(frozen=True, slots=True)
class Ledger:
    """Every slice still occupying the budget (the shared record, parsed)."""

    grants: tuple[Slice, ...] = ()

    def live(self, now: float, per: float, margin: float = DEFAULT_MARGIN) -> Ledger:
        """Without the slices that no longer occupy the budget at ``now``."""
        kept = tuple(g for g in self.grants if g.occupies_until(per, margin) > now)
        return self if len(kept) == len(self.grants) else Ledger(kept)

    def used(self, now: float, per: float, margin: float = DEFAULT_MARGIN) -> int:
        return sum(g.count for g in self.live(now, per, margin).grants)

    def used_by(self, node: str, now: float, per: float, margin: float = DEFAULT_MARGIN) -> int:
        return sum(g.count for g in self.live(now, per, margin).grants if g.node == node)

    def with_grants(self, extra: tuple[Slice, ...]) -> Ledger:
        """``extra`` added, each slice once (a node re-sending what it granted offline)."""
        have = set(self.grants)
        return Ledger(self.grants + tuple(g for g in extra if g not in have))

    def to_bytes(self) -> bytes:
        rows = [[g.node, round(g.start, 3), round(g.end, 3), g.count] for g in self.grants]
        return json.dumps({"v": _VERSION, "grants": rows}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ledger:
        """The record as written by any node; ValueError when it is not one."""
        try:
            doc: Any = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"budget record is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("grants"), list):
            raise ValueError("budget record has no grants list")
        out = []
        for row in doc["grants"]:
            if (
                not isinstance(row, list)
                or len(row) != 4
                or not isinstance(row[0], str)
                or not all(isinstance(x, int | float) for x in row[1:])
            ):
                raise ValueError(f"budget record has a bad grant {row!r}")
            out.append(Slice(row[0], float(row[1]), float(row[2]), int(row[3])))
        return cls(tuple(out))


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """What a node may take now: ``granted`` tokens (0 = none) and the ledger to write
    (None: nothing to write), or how long to wait before asking again."""

    granted: int
    ledger: Ledger | None
    wait: float
    used: int  # tokens occupying the budget after this decision

    @property
    def ok(self) -> bool:
        return self.granted > 0


def decide_take(
    ledger: Ledger,
    *,
    node: str,
    want: int,
    limit: int,
    per: float,
    hold: float,
    now: float,
    margin: float = DEFAULT_MARGIN,
    at_least: int | None = None,
) -> BudgetDecision:
    """Grant up to ``want`` tokens (a slice of at least ``at_least``, default all of them)
    to ``node`` at ``now``, or say when enough of the budget frees up."""
    if want < 1 or limit < 1 or per <= 0 or hold < 0:
        raise ValueError("decide_take needs want >= 1, limit >= 1, per > 0, hold >= 0")
    need = want if at_least is None else max(1, min(at_least, want))
    live = ledger.live(now, per, margin)
    used = sum(g.count for g in live.grants)
    room = limit - used
    if room >= need:
        take = min(want, room)
        grant = Slice(node, now, now + hold, take)
        return BudgetDecision(take, Ledger((*live.grants, grant)), 0.0, used + take)
    # Not enough: the earliest time the oldest slices stop occupying enough of it.
    freed = 0
    wait = per + hold + margin  # a ledger over its limit (another config) frees by then
    for g in sorted(live.grants, key=lambda g: g.occupies_until(per, margin)):
        freed += g.count
        if room + freed >= need:
            wait = g.occupies_until(per, margin) - now
            break
    rewrite = live if len(live.grants) != len(ledger.grants) else None
    return BudgetDecision(0, rewrite, max(wait, 0.0), used)


def window_margin(per: float) -> float:
    """The clock-skew margin for a window of ``per`` seconds: a second, but no more than a
    tenth of a short window (OKX counts connects per second)."""
    return min(DEFAULT_MARGIN, per / 10)


def local_share(limit: int, live_nodes: int) -> int:
    """What one node may use on its own when the shared record is out of reach: the
    budget divided by the nodes known to be live (at least one token, so a node can
    still reconnect; a budget smaller than the node count cannot be split further)."""
    return max(1, limit // max(1, live_nodes))


def slice_size(limit: int, live_nodes: int, *, parts: int = 4) -> int:
    """How many tokens a node takes at once for a frequent budget: small enough that
    ``parts`` slices per node fit the budget (nobody hoards it), at least one."""
    return max(1, math.floor(limit / max(1, live_nodes) / max(1, parts)))
