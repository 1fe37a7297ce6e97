"""Binance trade and aggTrade streams: never the same trade twice, missed trades bridged.

Binance numbers the trades of a symbol one by one (``t``), and its aggregate trades too
(``a``): a session that received id ``n`` must get ``n + 1`` next. When wsgate re-homes a
shared stream (connection lost, ``serverShutdown``, a move), the new stream starts wherever
the exchange is, so the sessions would miss the trades printed in between (or, on an
overlap, see one twice). :class:`TradeContinuity` keeps the last id delivered and decides
per frame (:class:`TradeAction`):

* ``DELIVER`` the next id (or the first one);
* ``DROP`` an id the sessions already have;
* ``FETCH``: a jump; the frame is held and the missed trades are asked from the REST API
  (``/trades`` for trade, ``/aggTrades?fromId=`` for aggTrade), then ``bridge()`` hands
  back the missed trades (rendered as stream events) followed by the held frames, in order
  — a *bridged* gap — or, when the REST answer does not reach back to them (or there is no
  REST, or it failed: ``give_up()``), whatever it recovered followed by the held frames: an
  *announced* gap (there is no in-band way to say it on Binance; status and metrics do);
* ``HOLD`` while that fetch is under way (bounded: past ``max_held`` frames it gives up).

The runtime (:mod:`wsgate.runtime.routing.trade_sync`) fetches and delivers.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from wsgate.dialects.base import ChannelData, DataKind, SubKey
from wsgate.dialects.jsonspan import int_field

__all__ = [
    "BridgeResult",
    "TradeAction",
    "TradeContinuity",
    "TradeContinuityStatistics",
    "rest_path",
    "trade_id",
]

MAX_HELD = 2000  # live frames held while a fetch is under way; past it: announced
REST_LIMIT = 1000  # Binance's maximum for /trades and /aggTrades


class TradeAction(StrEnum):
    DELIVER = "deliver"
    DROP = "drop"  # the sessions already have this trade
    FETCH = "fetch"  # a jump: held; fetch the missed trades (rest_path), then bridge()
    HOLD = "hold"  # held behind a fetch under way


@dataclass(frozen=True, slots=True)
class BridgeResult:
    frames: list[ChannelData]  # to deliver, in order: recovered trades, then the held frames
    bridged: bool  # every missed trade recovered (False: an announced gap)
    recovered: int  # missed trades recovered from REST
    lost: int  # missed trades not recovered


@dataclass(frozen=True, slots=True)
class TradeContinuityStatistics:
    last_id: int | None
    held: int
    bridged: int
    announced: int
    trades_bridged: int
    lost: int
    duplicates: int


def trade_id(key: SubKey, ev: ChannelData) -> int | None:
    """The trade's id (``t``) or aggregate id (``a``) in the payload of ``ev``."""
    return int_field(ev.text, "a" if key.channel == "aggTrade" else "t", ev.start, ev.end)


def rest_path(key: SubKey, after: int) -> str:
    """The REST request (below the route's ``rest_url``) for the trades after id ``after``."""
    symbol = key.symbol.upper()
    if key.channel == "aggTrade":
        return f"/aggTrades?symbol={symbol}&fromId={after + 1}&limit={REST_LIMIT}"
    return f"/trades?symbol={symbol}&limit={REST_LIMIT}"  # the most recent, ascending


class TradeContinuity:
    """Continuity of one shared trade or aggTrade stream (see the module docstring)."""

    def __init__(self, key: SubKey, *, max_held: int = MAX_HELD) -> None:
        self.key = key
        self.stream = key.name
        self.agg = key.channel == "aggTrade"
        self.field = "a" if self.agg else "t"
        self.max_held = max_held
        self.last_id: int | None = None  # the newest trade the sessions have
        self._held: deque[tuple[int, ChannelData]] = deque()
        self.bridged = 0
        self.announced = 0
        self.trades_bridged = 0
        self.lost = 0
        self.duplicates = 0

    def __repr__(self) -> str:
        return f"<TradeContinuity {self.stream} last={self.last_id} held={len(self._held)}>"

    def id_of(self, ev: ChannelData) -> int | None:
        """The id of ``ev``'s trade."""
        return int_field(ev.text, self.field, ev.start, ev.end)

    @property
    def fetching(self) -> bool:
        return bool(self._held)

    def statistics(self) -> TradeContinuityStatistics:
        return TradeContinuityStatistics(
            self.last_id,
            len(self._held),
            self.bridged,
            self.announced,
            self.trades_bridged,
            self.lost,
            self.duplicates,
        )

    def observe(self, tid: int, ev: ChannelData) -> TradeAction:
        if self._held:
            if tid <= self._held[-1][0]:
                self.duplicates += 1
                return TradeAction.DROP
            self._held.append((tid, ev))
            return TradeAction.HOLD
        last = self.last_id
        if last is None or tid == last + 1:
            self.last_id = tid
            return TradeAction.DELIVER
        if tid <= last:
            self.duplicates += 1
            return TradeAction.DROP
        self._held.append((tid, ev))
        return TradeAction.FETCH

    @property
    def over_limit(self) -> bool:
        return len(self._held) > self.max_held

    def missed_after(self) -> int:
        """The id after which trades are missing (the newest the sessions have)."""
        assert self.last_id is not None
        return self.last_id

    def bridge(self, body: bytes | str) -> BridgeResult:
        """The REST answer (a JSON array of trades, ascending) for the pending fetch."""
        try:
            rows = json.loads(body)
        except ValueError:
            rows = None
        if not isinstance(rows, list):
            return self.give_up()
        last = self.last_id
        assert last is not None and self._held
        first_held = self._held[0][0]
        recovered: list[ChannelData] = []
        ids: list[int] = []
        for row in rows:
            event = self._event(row)
            if event is None:
                continue
            tid, frame = event
            if last < tid < first_held and (not ids or tid > ids[-1]):
                ids.append(tid)
                recovered.append(frame)
        missing = first_held - last - 1
        complete = len(ids) == missing
        return self._release(recovered, complete, len(ids), missing - len(ids))

    def give_up(self) -> BridgeResult:
        """No usable REST answer: the held frames go out; the gap is announced."""
        assert self.last_id is not None and self._held
        missing = self._held[0][0] - self.last_id - 1
        return self._release([], False, 0, missing)

    def _release(
        self, recovered: list[ChannelData], complete: bool, n: int, lost: int
    ) -> BridgeResult:
        held = [ev for _tid, ev in self._held]
        self.last_id = self._held[-1][0]
        self._held.clear()
        if complete:
            self.bridged += 1
        else:
            self.announced += 1
        self.trades_bridged += n
        self.lost += lost
        return BridgeResult(recovered + held, complete, n, lost)

    def _event(self, row: object) -> tuple[int, ChannelData] | None:
        """A REST trade as the stream writes it, wrapped like the combined stream."""
        if not isinstance(row, dict):
            return None
        symbol = self.key.symbol.upper()
        payload: dict[str, Any]
        try:
            if self.agg:
                tid = int(row["a"])
                payload = {"e": "aggTrade", "E": int(row["T"]), "s": symbol, "a": tid}
                payload |= {"p": str(row["p"]), "q": str(row["q"]), "f": int(row["f"])}
                payload |= {"l": int(row["l"]), "T": int(row["T"]), "m": bool(row["m"])}
                payload["M"] = bool(row.get("M", True))
            else:
                tid = int(row["id"])
                payload = {"e": "trade", "E": int(row["time"]), "s": symbol, "t": tid}
                payload |= {"p": str(row["price"]), "q": str(row["qty"])}
                payload |= {"T": int(row["time"]), "m": bool(row["isBuyerMaker"])}
                payload["M"] = bool(row.get("isBestMatch", True))
        except (KeyError, TypeError, ValueError):
            return None
        head = '{"stream":' + json.dumps(self.stream) + ',"data":'
        text = head + json.dumps(payload, separators=(",", ":")) + "}"
        return tid, ChannelData(self.stream, DataKind.DATA, text, len(head), len(text) - 1)
