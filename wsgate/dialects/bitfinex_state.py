"""Late-joiner state of shared Bitfinex channels: book (P0-P4, R0) with CRC32 checksum,
candles, ticker and status (trades: :mod:`wsgate.dialects.bitfinex_trades`).

Numbers are kept as the exchange's own tokens (``Num``, a ``str`` subclass) so snapshots and
checksums use exactly the text Bitfinex wrote: ``29999`` never becomes ``29999.0``.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

from wsgate.dialects.base import (
    ChannelData,
    DataKind,
    Integrity,
    StateStatistics,
    SubKey,
)

__all__ = [
    "BookState",
    "CandlesState",
    "LastValueState",
    "Num",
    "PassState",
    "book_checksum",
    "dump_raw",
    "load_raw",
    "snapshot_event",
]

log = logging.getLogger("wsgate.dialects.bitfinex")

CHECKSUM_DEPTH = 25


class Num(str):
    """A JSON number kept as the exact text the exchange wrote."""

    __slots__ = ()


def load_raw(text: str) -> Any:
    """``json.loads`` keeping every number as its source token (a ``Num``)."""
    return json.loads(text, parse_int=Num, parse_float=Num, parse_constant=Num)


def dump_raw(obj: Any) -> str:
    """Inverse of ``load_raw``: numbers are written back verbatim, everything else compact."""
    if isinstance(obj, Num):
        return str.__str__(obj)
    if isinstance(obj, list):
        return "[" + ",".join(dump_raw(x) for x in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dump_raw(v) for k, v in obj.items()) + "}"
    return json.dumps(obj)


def snapshot_event(payload: str) -> ChannelData:
    """A synthetic data frame on placeholder channel 0, rendered like any upstream frame."""
    text = "[0," + payload + "]"
    return ChannelData(0, DataKind.DATA, text, 2, len(text) - 1)


def _is_snapshot(event: ChannelData) -> bool:
    """A list of entries (``[[...], ...]``), not one entry or a tagged frame."""
    body = _payload(event).lstrip()
    return event.kind is DataKind.DATA and body.startswith("[") and body[1:].lstrip()[:1] in "[]"


def _payload(event: ChannelData) -> str:
    # text[start] is the comma after the chanId; end excludes upstream seq/timestamp fields.
    return event.text[event.start + 1 : event.end]


def book_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """Bitfinex book checksum: signed CRC32 over interleaved top-25 ``key:amount`` pairs.

    ``bids`` are ``[key, amount]`` best first (price desc), ``asks`` best first (price asc);
    ``key`` is the price for P books and the order id for R0 books, amounts keep their sign.
    """
    parts: list[str] = []
    for i in range(CHECKSUM_DEPTH):
        if i < len(bids):
            parts.extend(bids[i])
        if i < len(asks):
            parts.extend(asks[i])
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class _Base:
    def __init__(self, key: SubKey) -> None:
        self.key = key
        self._frames = 0
        self._mismatches = 0
        self._gaps = 0
        self._has_snapshot = False

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.key} depth={self._depth()} "
            f"frames={self._frames} mismatches={self._mismatches}>"
        )

    def _depth(self) -> int:
        return 0

    def statistics(self) -> StateStatistics:
        return StateStatistics(
            self.key, self._frames, self._mismatches, self._gaps, self._depth(), self._has_snapshot
        )

    def _snapshot_payload(self) -> str | None:
        return None

    def snapshot_event(self) -> ChannelData | None:
        payload = self._snapshot_payload() if self._has_snapshot else None
        return None if payload is None else snapshot_event(payload)


class LastValueState(_Base):
    """Ticker and status: the last payload, kept as the exchange's own text slice."""

    def __init__(self, key: SubKey) -> None:
        super().__init__(key)
        self._last: str | None = None

    def _depth(self) -> int:
        return 0 if self._last is None else 1

    def apply(self, event: ChannelData) -> Integrity:
        if event.kind is DataKind.DATA:
            self._frames += 1
            self._last = _payload(event)
            self._has_snapshot = True
        return Integrity.OK

    def reset(self) -> None:
        self._last = None
        self._has_snapshot = False

    def _snapshot_payload(self) -> str | None:
        return self._last


class PassState(_Base):
    """A channel wsgate relays but does not model (funding books): no late-joiner snapshot,
    so the hub must give late joiners a fresh upstream snapshot (resubscribe) instead."""

    def apply(self, event: ChannelData) -> Integrity:
        self._frames += 1
        return Integrity.OK

    def reset(self) -> None:
        return None


class CandlesState(_Base):
    """The last ``limit`` candles keyed by MTS; snapshot newest first."""

    def __init__(self, key: SubKey, limit: int = 120) -> None:
        super().__init__(key)
        self._limit = limit
        self._candles: dict[int, list[Any]] = {}

    def _depth(self) -> int:
        return len(self._candles)

    def _put(self, entry: object) -> None:
        if isinstance(entry, list) and entry and isinstance(entry[0], Num):
            self._candles[int(float(entry[0]))] = entry

    def apply(self, event: ChannelData) -> Integrity:
        if event.kind is not DataKind.DATA:
            return Integrity.OK
        self._frames += 1
        try:
            payload = load_raw(_payload(event))
        except ValueError:
            log.warning("%s: unparsable candles frame %.80r", self.key, event.text)
            return Integrity.OK
        if isinstance(payload, list) and (not payload or isinstance(payload[0], list)):
            self._candles.clear()
            for entry in payload:
                self._put(entry)
            self._has_snapshot = True
        else:
            self._put(payload)
        if len(self._candles) > self._limit:
            for mts in sorted(self._candles)[: len(self._candles) - self._limit]:
                del self._candles[mts]
        return Integrity.OK

    def reset(self) -> None:
        self._candles.clear()
        self._has_snapshot = False

    def rebase(self, event: ChannelData) -> list[ChannelData] | None:
        """A hand-over's snapshot on a live channel: the candles that changed, oldest first,
        as updates (a bot keeps the older ones it has)."""
        if not (self._has_snapshot and _is_snapshot(event)):
            return None
        before = dict(self._candles)
        self.apply(event)
        return [
            snapshot_event(dump_raw(entry))
            for mts, entry in sorted(self._candles.items())
            if before.get(mts) != entry
        ]

    def _snapshot_payload(self) -> str | None:
        return dump_raw([self._candles[m] for m in sorted(self._candles, reverse=True)])


class BookState(_Base):
    """An order book maintained from snapshot + updates, verified against ``cs`` frames.

    P0-P4 entries are ``[PRICE, COUNT, AMOUNT]`` keyed by price (count 0 deletes; amount 1 /
    -1 says the side). R0 entries are ``[ORDER_ID, PRICE, AMOUNT]`` keyed by order id (price 0
    deletes). Bids have amount > 0, asks amount < 0. Only trading books (``t`` symbols) are
    modelled; funding books use different entry layouts.
    """

    def __init__(self, key: SubKey) -> None:
        super().__init__(key)
        self.raw = key.param("prec") == "R0"
        self._bids: dict[float, list[Num]] = {}
        self._asks: dict[float, list[Num]] = {}
        self.last_checksum: int | None = None

    def _depth(self) -> int:
        return len(self._bids) + len(self._asks)

    def _put(self, entry: object) -> None:
        if not (isinstance(entry, list) and len(entry) == 3):
            return
        first, second, amount = entry
        try:
            amt = float(amount)
            if self.raw:
                oid, price = float(first), float(second)
                if price == 0.0:
                    self._bids.pop(oid, None)
                    self._asks.pop(oid, None)
                    return
                self._bids.pop(oid, None)
                self._asks.pop(oid, None)
                (self._bids if amt > 0 else self._asks)[oid] = entry
            else:
                price, count = float(first), float(second)
                side, other = (self._bids, self._asks) if amt > 0 else (self._asks, self._bids)
                if count == 0.0:
                    side.pop(price, None)
                else:
                    other.pop(price, None)  # a level can flip sides after a trade
                    side[price] = entry
        except (TypeError, ValueError):
            log.warning("%s: unusable book entry %r", self.key, entry)

    def _sorted(self) -> tuple[list[list[Num]], list[list[Num]]]:
        if self.raw:
            # Price priority, then order id as a stand-in for time priority.
            bids = sorted(self._bids.values(), key=lambda e: (-float(e[1]), float(e[0])))
            asks = sorted(self._asks.values(), key=lambda e: (float(e[1]), float(e[0])))
        else:
            bids = [self._bids[p] for p in sorted(self._bids, reverse=True)]
            asks = [self._asks[p] for p in sorted(self._asks)]
        return bids, asks

    def checksum(self) -> int:
        bids, asks = self._sorted()
        return book_checksum(
            [[e[0], e[2]] for e in bids[:CHECKSUM_DEPTH]],
            [[e[0], e[2]] for e in asks[:CHECKSUM_DEPTH]],
        )

    def verify(self, expected: int) -> bool:
        self.last_checksum = self.checksum()
        ok = self.last_checksum == expected
        if not ok:
            self._mismatches += 1
            log.warning(
                "%s: checksum mismatch: book %d, exchange %d",
                self.key,
                self.last_checksum,
                expected,
            )
        return ok

    def apply(self, event: ChannelData) -> Integrity:
        kind = event.kind
        if kind is DataKind.HEARTBEAT:
            return Integrity.OK
        self._frames += 1
        body = _payload(event)
        if kind is DataKind.CHECKSUM:
            # body is '"cs",<int>'
            try:
                expected = int(body[body.index(",") + 1 :])
            except ValueError:
                return Integrity.OK
            if not self._has_snapshot:
                return Integrity.OK
            return Integrity.OK if self.verify(expected) else Integrity.MISMATCH
        try:
            payload = load_raw(body)
        except ValueError:
            log.warning("%s: unparsable book frame %.80r", self.key, event.text)
            return Integrity.OK
        if not isinstance(payload, list):
            return Integrity.OK
        if not payload or isinstance(payload[0], list):
            self._bids.clear()
            self._asks.clear()
            for entry in payload:
                self._put(entry)
            self._has_snapshot = True
        else:
            self._put(payload)
        return Integrity.OK

    def reset(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._has_snapshot = False

    def rebase(self, event: ChannelData) -> list[ChannelData] | None:
        """A hand-over's snapshot on a live book: take its book, and return the level (or
        order) updates that turn the sessions' book into it, deletions first. A bot that
        applies them holds exactly the new book, so the next checksum verifies. Funding
        books are not modelled (their entries have other fields): None, the snapshot goes
        out as it is."""
        if not (self._has_snapshot and _is_snapshot(event)) or self.key.symbol[:1] != "t":
            return None
        old = {
            **{k: (1, e) for k, e in self._bids.items()},
            **{k: (-1, e) for k, e in self._asks.items()},
        }
        self.apply(event)
        new = {
            **{k: (1, e) for k, e in self._bids.items()},
            **{k: (-1, e) for k, e in self._asks.items()},
        }
        out: list[ChannelData] = []
        for k, (side, e) in old.items():
            now = new.get(k)
            if now is None or now[0] != side:  # gone, or on the other side now
                gone = [e[0], 0, e[2]] if self.raw else [e[0], 0, side]
                out.append(snapshot_event(dump_raw(gone)))
        for k, (_side, e) in new.items():
            if old.get(k) != new[k]:
                out.append(snapshot_event(dump_raw(e)))
        return out

    def _snapshot_payload(self) -> str | None:
        bids, asks = self._sorted()
        return dump_raw(bids + asks)
