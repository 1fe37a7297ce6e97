"""Binance diff-depth continuity for shared subscriptions, as a pure state machine.

Every bot on a shared ``<symbol>@depth`` stream maintains its book from diffs and requires
``U == previous u + 1``. When wsgate re-homes the upstream subscription (connection lost,
make-before-break move) the new stream starts wherever the exchange is, so the bots would
see a gap. :class:`DepthBook` keeps what the sessions have seen: the last ``u`` delivered and
the book it implies (seeded once from a REST snapshot, then maintained from the diffs).
After a gap it holds the new stream's events, takes a fresh REST snapshot, applies the
documented Binance algorithm to the held events, and hands back ONE synthetic
``depthUpdate`` with ``U = last u + 1`` that turns the sessions' book into the new one.

USD-M futures (``futures=True``) chain events by ``pu`` instead: an event follows when its
``pu`` equals the previous ``u`` (``U`` jumps on futures and proves nothing), the first event
after a snapshot may also be the one whose ``pu`` is ``lastUpdateId``, and the bridge carries
``pu = last u``.

The runtime (:mod:`wsgate.runtime.routing.depth_sync`) fetches snapshots and executes the actions.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

__all__ = [
    "Action",
    "DepthBook",
    "DepthBookStatistics",
    "DepthEvent",
    "Phase",
    "Snapshot",
    "SnapshotOutcome",
    "parse_event",
    "parse_snapshot",
    "render_event",
]

log = logging.getLogger("wsgate.dialects.binance")

Level = tuple[str, str]  # (price, quantity) as the exchange wrote them


class Phase(StrEnum):
    UNSEEDED = "unseeded"  # no book and no snapshot wanted yet
    SEEDING = "seeding"  # events flow to sessions and are recorded until a snapshot seeds the book
    LIVE = "live"  # the book equals what the sessions have at ``delivered_u``
    RESYNC = "resync"  # a gap: the new stream's events are held until a snapshot bridges it


class Action(StrEnum):
    """What to do with one upstream depth event."""

    DELIVER = "deliver"  # fan it out as is
    REWRITE = "rewrite"  # it straddles the sessions' position: deliver with U (futures: pu)
    # rewritten to ``rewrite_u``
    DROP = "drop"  # the sessions already have it
    HOLD = "hold"  # keep it from the sessions (a resync is under way)
    BRIDGE = "bridge"  # held; the synthetic bridge event is ready (``take_bridge``)
    FAIL = "fail"  # a gap that cannot be bridged: close the depth sessions (1013)


class SnapshotOutcome(StrEnum):
    DONE = "done"  # seeded (SEEDING) or bridge ready (RESYNC)
    WAITING = "waiting"  # the stream has not passed lastUpdateId yet
    REFETCH = "refetch"  # the snapshot is older than the first held event: fetch another
    IGNORED = "ignored"  # no snapshot was wanted


@dataclass(frozen=True, slots=True)
class DepthEvent:
    first: int  # U
    last: int  # u
    time: int  # E
    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    prev: int | None = None  # pu (futures): the previous event's u


@dataclass(frozen=True, slots=True)
class Snapshot:
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class DepthBookStatistics:
    phase: Phase
    delivered_u: int | None
    bids: int
    asks: int
    held: int
    seeds: int
    bridges: int
    rewrites: int
    dropped: int
    failures: int


def _levels(raw: object) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise ValueError("levels: expected a list")
    out = []
    for lv in raw:
        if not (isinstance(lv, list) and len(lv) >= 2):
            raise ValueError("level: expected [price, qty]")
        out.append((str(lv[0]), str(lv[1])))
    return tuple(out)


def parse_event(text: str) -> DepthEvent | None:
    """A ``depthUpdate`` payload, or ``None`` when the frame is something else."""
    try:
        msg = json.loads(text)
        if not isinstance(msg, dict) or msg.get("e") != "depthUpdate":
            return None
        return DepthEvent(
            int(msg["U"]),
            int(msg["u"]),
            int(msg.get("E", 0)),
            str(msg.get("s", "")),
            _levels(msg.get("b", [])),
            _levels(msg.get("a", [])),
            int(msg["pu"]) if "pu" in msg else None,
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def parse_snapshot(body: bytes | str) -> Snapshot:
    """``GET /api/v3/depth`` body; raises ``ValueError`` when it is not one."""
    try:
        msg = json.loads(body)
        return Snapshot(int(msg["lastUpdateId"]), _levels(msg["bids"]), _levels(msg["asks"]))
    except (KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a depth snapshot: {exc!r}") from exc


def _dec(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc


class _Side:
    """One side of a book keyed by price value (``"1.0"`` and ``"1.00"`` are one level)."""

    __slots__ = ("levels",)

    def __init__(self) -> None:
        self.levels: dict[Decimal, Level] = {}

    def copy(self) -> _Side:
        other = _Side()
        other.levels = dict(self.levels)
        return other

    def apply(self, changes: tuple[Level, ...]) -> None:
        for price, qty in changes:
            p = _dec(price)
            if _dec(qty) == 0:
                self.levels.pop(p, None)
            else:
                self.levels[p] = (price, qty)


def _diff(old: _Side, new: _Side, touched: set[Decimal], keep: Any) -> list[Level]:
    """Level changes turning ``old`` into ``new`` (qty "0" for removals), plus every level the
    held events touched with its final value, so a bot whose book sits anywhere inside the
    held range also ends right. ``keep(price)`` is False outside a truncated snapshot's range,
    where the absence of a level proves nothing."""
    out: dict[Decimal, Level] = {}
    for p, lv in new.levels.items():
        if old.levels.get(p) != lv or p in touched:
            out[p] = lv
    for p, lv in old.levels.items():
        if p not in new.levels and keep(p):
            out[p] = (lv[0], "0")
    for p in touched:
        if p not in out and p not in new.levels:
            out[p] = (str(p), "0")
    return list(out.values())


class DepthBook:
    """What the sessions of one shared diff-depth subscription have seen. Pure: no I/O."""

    def __init__(
        self,
        stream: str,
        *,
        snapshot_limit: int = 1000,
        max_held: int = 10_000,
        futures: bool = False,
    ) -> None:
        self.stream = stream
        self.futures = futures
        self.snapshot_limit = snapshot_limit
        self.max_held = max_held
        self.phase = Phase.UNSEEDED
        self.delivered_u: int | None = None
        self.symbol = ""
        self._bids = _Side()
        self._asks = _Side()
        self._buffer: deque[DepthEvent] = deque()
        self._pending: Snapshot | None = None
        self._bridge: DepthEvent | None = None
        self.rewrite_u = 0
        self._seeds = self._bridges = self._rewrites = self._dropped = self._failures = 0

    def __repr__(self) -> str:
        return (
            f"<DepthBook {self.stream} {self.phase.value} u={self.delivered_u} "
            f"levels={len(self._bids.levels)}/{len(self._asks.levels)} held={len(self._buffer)}>"
        )

    def statistics(self) -> DepthBookStatistics:
        return DepthBookStatistics(
            self.phase,
            self.delivered_u,
            len(self._bids.levels),
            len(self._asks.levels),
            len(self._buffer) if self.phase is Phase.RESYNC else 0,
            self._seeds,
            self._bridges,
            self._rewrites,
            self._dropped,
            self._failures,
        )

    @property
    def wants_snapshot(self) -> bool:
        """A snapshot is needed and none is waiting for the stream to catch up."""
        return self.phase in (Phase.SEEDING, Phase.RESYNC) and self._pending is None

    def book(self) -> tuple[list[Level], list[Level]]:
        """(bids best first, asks best first) at ``delivered_u``; empty unless LIVE/RESYNC."""
        bids = [self._bids.levels[p] for p in sorted(self._bids.levels, reverse=True)]
        asks = [self._asks.levels[p] for p in sorted(self._asks.levels)]
        return bids, asks

    # ---------------------------------------------------------------- events
    def observe(self, ev: DepthEvent) -> Action:
        """Classify one upstream event of this stream (in arrival order)."""
        if ev.symbol:
            self.symbol = ev.symbol
        if self.phase is Phase.RESYNC:
            return self._hold(ev)
        if self.phase is Phase.UNSEEDED:
            self.phase = Phase.SEEDING
        prev = self.delivered_u
        if prev is not None and ev.last <= prev:
            self._dropped += 1
            return Action.DROP
        if prev is not None and self._after_gap(ev, prev):
            if self.phase is Phase.LIVE:
                log.info("%s: depth gap U=%d after u=%d: resyncing", self.stream, ev.first, prev)
                self.phase = Phase.RESYNC
                self._buffer = deque([ev])
                self._pending = None
                return Action.HOLD
            return self.fail(f"gap U={ev.first} after u={prev} before the book was seeded")
        self.delivered_u = ev.last
        if self.phase is Phase.LIVE:
            self._apply(ev)
        else:  # SEEDING
            self._buffer.append(ev)
            if len(self._buffer) > self.max_held:
                self._buffer.popleft()  # the snapshot then looks too old: it is refetched
            if self._pending is not None:
                self._try_seed()
        if prev is not None and not self._follows(ev, prev):
            self._rewrites += 1
            self.rewrite_u = prev if self.futures else prev + 1
            return Action.REWRITE
        return Action.DELIVER

    def _follows(self, ev: DepthEvent, prev: int) -> bool:
        """``ev`` continues exactly after ``u = prev`` (spot ``U``; futures ``pu``)."""
        if self.futures and ev.prev is not None:
            return ev.prev == prev
        return ev.first == prev + 1

    def _after_gap(self, ev: DepthEvent, prev: int) -> bool:
        """Updates between ``prev`` and ``ev`` are missing (``ev.last > prev`` is known)."""
        if self.futures and ev.prev is not None:
            return ev.prev > prev
        return ev.first > prev + 1

    def _hold(self, ev: DepthEvent) -> Action:
        if self._buffer and ev.last <= self._buffer[-1].last:
            self._dropped += 1
            return Action.DROP  # a duplicate of a held event (both homes during a move)
        self._buffer.append(ev)
        if len(self._buffer) > self.max_held:
            return self.fail(f"more than {self.max_held} events held while resyncing")
        if self._pending is not None and self._try_bridge() is SnapshotOutcome.DONE:
            return Action.BRIDGE
        return Action.HOLD

    def _apply(self, ev: DepthEvent) -> None:
        self._bids.apply(ev.bids)
        self._asks.apply(ev.asks)

    # ---------------------------------------------------------------- snapshots
    def on_snapshot(self, snap: Snapshot) -> SnapshotOutcome:
        if self.phase is Phase.SEEDING:
            self._pending = snap
            return self._try_seed()
        if self.phase is Phase.RESYNC:
            self._pending = snap
            return self._try_bridge()
        return SnapshotOutcome.IGNORED

    def _after(self, snap: Snapshot) -> list[DepthEvent] | SnapshotOutcome:
        """The documented algorithm: drop events with u <= lastUpdateId; the first kept one
        must have U <= lastUpdateId + 1, else the snapshot is too old."""
        last = snap.last_update_id
        while self._buffer and self._buffer[0].last <= last:
            self._buffer.popleft()
        if not self._buffer:
            return SnapshotOutcome.WAITING
        head = self._buffer[0]
        if head.first > last + 1 and not (
            self.futures and head.prev is not None and head.prev <= last
        ):
            self._pending = None
            return SnapshotOutcome.REFETCH
        return list(self._buffer)

    def _seeded_from(self, snap: Snapshot, events: list[DepthEvent]) -> tuple[_Side, _Side]:
        bids, asks = _Side(), _Side()
        bids.apply(snap.bids)
        asks.apply(snap.asks)
        for ev in events:
            bids.apply(ev.bids)
            asks.apply(ev.asks)
        return bids, asks

    def _try_seed(self) -> SnapshotOutcome:
        assert self._pending is not None
        snap = self._pending
        events = self._after(snap)
        if isinstance(events, SnapshotOutcome):
            if events is SnapshotOutcome.WAITING and self.delivered_u == snap.last_update_id:
                events = []  # the sessions sit exactly at the snapshot
            else:
                return events
        self._bids, self._asks = self._seeded_from(snap, events)
        self._buffer.clear()
        self._pending = None
        self.phase = Phase.LIVE
        self._seeds += 1
        return SnapshotOutcome.DONE

    def _try_bridge(self) -> SnapshotOutcome:
        assert self._pending is not None and self.delivered_u is not None
        snap = self._pending
        newest = self._buffer[-1] if self._buffer else None
        events = self._after(snap)
        if isinstance(events, SnapshotOutcome):
            if events is not SnapshotOutcome.WAITING or snap.last_update_id <= self.delivered_u:
                return events
            # The snapshot already holds every event held since the gap (a quiet book: no
            # later event may come for minutes): bridge to the snapshot itself now; the next
            # event, straddling it, is rewritten to follow.
            events = []
        bids, asks = self._seeded_from(snap, events)
        touched_b = {_dec(p) for ev in events for p, _ in ev.bids}
        touched_a = {_dec(p) for ev in events for p, _ in ev.asks}
        full = self.snapshot_limit
        bid_floor = min(bids.levels, default=None) if len(snap.bids) >= full else None
        ask_cap = max(asks.levels, default=None) if len(snap.asks) >= full else None
        last_u = events[-1].last if events else snap.last_update_id
        last = events[-1] if events else newest
        self._bridge = DepthEvent(
            self.delivered_u + 1,
            last_u,
            last.time if last is not None else 0,
            (last.symbol if last is not None else "") or self.symbol,
            tuple(
                _diff(self._bids, bids, touched_b, lambda p: bid_floor is None or p >= bid_floor)
            ),
            tuple(_diff(self._asks, asks, touched_a, lambda p: ask_cap is None or p <= ask_cap)),
            self.delivered_u if self.futures else None,
        )
        self._bids, self._asks = bids, asks
        self.delivered_u = last_u
        self._buffer.clear()
        self._pending = None
        self.phase = Phase.LIVE
        self._bridges += 1
        return SnapshotOutcome.DONE

    def take_bridge(self) -> DepthEvent | None:
        ev, self._bridge = self._bridge, None
        return ev

    def fail(self, reason: str) -> Action:
        """Forget everything: the sessions are closed, the next ones start from scratch."""
        log.warning("%s: depth continuity lost: %s", self.stream, reason)
        self._failures += 1
        self.phase = Phase.UNSEEDED
        self.delivered_u = None
        self._bids, self._asks = _Side(), _Side()
        self._buffer.clear()
        self._pending = None
        self._bridge = None
        return Action.FAIL


def render_event(ev: DepthEvent) -> str:
    """A ``depthUpdate`` payload in Binance's member order (futures: with ``T`` and ``pu``)."""
    body: dict[str, object] = {"e": "depthUpdate", "E": ev.time}
    if ev.prev is not None:
        body["T"] = ev.time
    body.update({"s": ev.symbol, "U": ev.first, "u": ev.last})
    if ev.prev is not None:
        body["pu"] = ev.prev
    body["b"] = [list(lv) for lv in ev.bids]
    body["a"] = [list(lv) for lv in ev.asks]
    return json.dumps(body, separators=(",", ":"))
