"""Bitfinex trades channels: the late-joiner tape, and never the same trade twice.

The gateway knows what the sessions of a shared trades channel have received: the
snapshot they were given and every update since, all kept here (the last ``limit``
trades). When the upstream subscription is replaced — connection lost, 20051, maintenance
resume, a move — the exchange starts the new one with a fresh snapshot of its last trades,
which repeats trades the sessions already have. Instead:

* the snapshot reaches back (its oldest trade is not newer than the newest the sessions
  have): the trades they missed go to them **once, as live updates** (``te``, then ``tu``
  when the channel carries ``tu``), oldest first — a *bridged* resume;
* it does not (the gap was longer than the exchange's snapshot): it goes to them as a
  snapshot, the exchange's own way of saying "start again from here"; it holds only trades
  they do not have — an *announced* gap;
* a ``te``/``tu`` whose trade they already have (the overlap of a make-before-break move,
  a ``te`` repeating a snapshot entry) is dropped.

A ``tu`` is the update of a trade the session got as ``te``: a bridge sends the ``tu`` of a
trade whose ``te`` reached the sessions before the drop and whose ``tu`` did not.
Trade ids are Bitfinex's own: they increase with time, but not by one (they are global).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from wsgate.dialects.base import (
    Bridge,
    ChannelData,
    DataKind,
    Integrity,
    StateStatistics,
    SubKey,
    TapeStatistics,
)
from wsgate.dialects.bitfinex_state import dump_raw, load_raw, snapshot_event

__all__ = ["TradesState"]

log = logging.getLogger("wsgate.dialects.bitfinex")

_UPDATE_TAGS = frozenset({"te", "tu", "fte", "ftu"})


def _trade_id(entry: object) -> int | None:
    if not isinstance(entry, list) or not entry:
        return None
    try:
        return int(str.__str__(entry[0]))
    except (TypeError, ValueError):
        return None


class TradesState:
    """The last ``limit`` trades the sessions have, by id; snapshot newest first."""

    def __init__(self, key: SubKey, limit: int = 30) -> None:
        self.key = key
        self._limit = limit
        self._trades: OrderedDict[int, list[Any]] = OrderedDict()  # oldest first
        self._tu_sent: set[int] = set()  # ids whose "tu" reached the sessions
        self._te_only: set[int] = set()  # ids whose "te" reached them and whose "tu" did not
        self._carries_tu = False  # the channel sends "tu" after "te" (trading pairs do)
        self._te, self._tu = ("fte", "ftu") if key.symbol.startswith("f") else ("te", "tu")
        self._has_snapshot = False
        self._resuming = False
        self._bridge = Bridge([], 0)
        self._frames = 0
        self._bridged = 0
        self._announced = 0
        self._trades_bridged = 0
        self._duplicates = 0

    def __repr__(self) -> str:
        return (
            f"<TradesState {self.key} depth={len(self._trades)} bridged={self._bridged} "
            f"announced={self._announced} duplicates={self._duplicates}>"
        )

    # ------------------------------------------------------------------ ChannelState
    def apply(self, event: ChannelData) -> Integrity:
        if event.kind is not DataKind.DATA:
            return Integrity.OK
        self._frames += 1
        try:
            # text[start] is the comma after the chanId; end excludes seq/timestamp fields.
            msg = load_raw("[" + event.text[event.start + 1 : event.end] + "]")
        except ValueError:
            log.warning("%s: unparsable trades frame %.80r", self.key, event.text)
            return Integrity.OK
        if len(msg) == 2 and isinstance(msg[0], str) and isinstance(msg[1], list):
            return self._update(msg[0], msg[1])  # ["te", [ID, MTS, AMOUNT, PRICE]]
        if msg and isinstance(msg[0], list):
            return self._snapshot(msg[0])
        return Integrity.OK

    def reset(self) -> None:
        """The upstream subscription is being replaced: keep what the sessions have, so the
        next snapshot can be bridged (``Integrity.BRIDGED``) instead of repeated."""
        self._resuming = True

    def snapshot_event(self) -> ChannelData | None:
        return snapshot_event(self._payload()) if self._has_snapshot else None

    def statistics(self) -> StateStatistics:
        return StateStatistics(
            self.key, self._frames, 0, self._announced, len(self._trades), self._has_snapshot
        )

    # ------------------------------------------------------------------ TradeTape
    def take_bridge(self) -> Bridge:
        out, self._bridge = self._bridge, Bridge([], 0)
        return out

    def tape_statistics(self) -> TapeStatistics:
        return TapeStatistics(
            self._bridged, self._announced, self._trades_bridged, self._duplicates
        )

    # ------------------------------------------------------------------ internals
    def _payload(self) -> str:
        return dump_raw(list(reversed(self._trades.values())))

    def _keep(self, tid: int, entry: list[Any]) -> None:
        self._trades[tid] = entry
        while len(self._trades) > self._limit:
            old, _ = self._trades.popitem(last=False)
            self._tu_sent.discard(old)
            self._te_only.discard(old)

    def _update(self, tag: str, entry: list[Any]) -> Integrity:
        tid = _trade_id(entry)
        if tid is None or tag not in _UPDATE_TAGS:
            return Integrity.OK
        is_tu = tag[-2:] == "tu"
        known = tid in self._trades
        if is_tu:
            self._carries_tu = True
            if tid in self._tu_sent:
                self._duplicates += 1
                return Integrity.DUPLICATE
            self._tu_sent.add(tid)
            self._te_only.discard(tid)
            if known:
                self._trades[tid] = entry  # the update replaces the execution in place
                return Integrity.OK
        elif known:
            self._duplicates += 1  # its te (or a snapshot holding it) already went out
            return Integrity.DUPLICATE
        else:
            self._te_only.add(tid)
        self._keep(tid, entry)
        return Integrity.OK

    def _snapshot(self, entries: list[Any]) -> Integrity:
        """A snapshot (newest first). The first one goes to the sessions as it is; one on a
        channel whose sessions already have trades is a resume."""
        trades = [(tid, e) for e in reversed(entries) if (tid := _trade_id(e)) is not None]
        resuming, self._resuming = self._resuming, False
        if not self._has_snapshot or not self._trades:
            # Nothing delivered yet (or an empty tape): nothing can repeat.
            self._trades.clear()
            self._tu_sent.clear()
            self._te_only.clear()
            for tid, e in trades:
                self._keep(tid, e)
            self._has_snapshot = True
            return Integrity.OK
        newest = max(self._trades)
        oldest = min(self._trades)
        if trades and trades[0][0] > newest:
            # The gap is longer than the exchange's snapshot: trades in between are gone.
            self._announced += 1
            log.warning(
                "%s: resumed; the new snapshot starts at trade %d, after %d: gap announced",
                self.key,
                trades[0][0],
                newest,
            )
            for tid, e in trades:
                self._keep(tid, e)
            return Integrity.ANNOUNCED
        bridge: list[ChannelData] = []
        missed = 0
        for tid, e in trades:
            if tid in self._trades:
                if self._carries_tu and tid in self._te_only:
                    bridge.append(self._event(self._tu, e))  # its te went out, its tu did not
                    self._te_only.discard(tid)
                    self._tu_sent.add(tid)
                continue
            if tid < oldest:
                continue  # before the sessions' tape: they have it, or it predates them
            missed += 1
            bridge.append(self._event(self._te, e))
            if self._carries_tu:
                bridge.append(self._event(self._tu, e))
                self._tu_sent.add(tid)
            self._keep(tid, e)
        self._bridged += 1
        self._trades_bridged += missed
        self._bridge = Bridge(bridge, missed)
        log.info(
            "%s: %s bridged with %d missed trade(s) as updates",
            self.key,
            "resume" if resuming else "new snapshot",
            missed,
        )
        return Integrity.BRIDGED

    @staticmethod
    def _event(tag: str, entry: list[Any]) -> ChannelData:
        text = f'[0,"{tag}",{dump_raw(entry)}]'
        return ChannelData(0, DataKind.DATA, text, 2, len(text) - 1)
