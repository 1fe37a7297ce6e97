"""Bitfinex v2 channel feeds rendered from the market model.

A feed is one public channel (ticker, trades, a book at one precision/frequency/length,
candles, status) shared by every connection subscribed to it, so each message body
("tail": the JSON after ``[chanId,``) is encoded once. Book feeds keep the view they last
published and emit only the difference, which is exactly what a client rebuilding the book
from snapshot + updates holds; the checksum is computed over that same view.
"""

from __future__ import annotations

import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from wsgate.sim.market import Candle, SymbolMarket, Trade, num
from wsgate.sim.server import dumps

__all__ = [
    "BOOK_LENGTHS",
    "BOOK_PRECISIONS",
    "CANDLE_FRAMES",
    "BookFeed",
    "CandlesFeed",
    "Feed",
    "StatusFeed",
    "Sub",
    "TickerFeed",
    "TradesFeed",
    "book_checksum",
]

BOOK_PRECISIONS = {"P0": 5, "P1": 4, "P2": 3, "P3": 2, "P4": 1, "R0": 0}
BOOK_LENGTHS = (1, 25, 100, 250)
_MIN = 60_000
CANDLE_FRAMES = {
    "1m": _MIN,
    "5m": 5 * _MIN,
    "15m": 15 * _MIN,
    "30m": 30 * _MIN,
    "1h": 60 * _MIN,
    "3h": 180 * _MIN,
    "6h": 360 * _MIN,
    "12h": 720 * _MIN,
    "1D": 1440 * _MIN,
    "1W": 7 * 1440 * _MIN,
    "14D": 14 * 1440 * _MIN,
    "1M": 30 * 1440 * _MIN,
}

Entry = list[int | float]


class Subscriber(Protocol):
    """A simulated connection as a feed sees it (``sim.bitfinex.BitfinexConnection``)."""

    flags: int

    def send(self, data: bytes) -> None: ...
    def send_channel(self, chan_id: int, tail: str, mts: int) -> None: ...


@dataclass(eq=False, slots=True)
class Sub:
    """One connection's subscription to a feed."""

    conn: Subscriber
    feed: Feed
    pending: bool = True  # snapshot not sent yet (data paused at subscribe time)
    last_sent: float = 0.0


@dataclass(eq=False)
class Feed(ABC):
    key: str
    chan_id: int
    market: SymbolMarket
    subs: list[Sub] = field(default_factory=list)

    @abstractmethod
    def snapshot_tail(self) -> str:
        """The first message of the channel, after ``[chanId,``."""


@dataclass(eq=False)
class TickerFeed(Feed):
    def snapshot_tail(self) -> str:
        return dumps(self.ticker_entry())

    def ticker_entry(self) -> Entry:
        m = self.market
        st = m.stats()
        bid = m.best_bid() or m.mid_t
        ask = m.best_ask() or m.mid_t
        change = st.last_t - st.open_t
        return [
            m.price(bid),
            m.amount(abs(m.level_amount(bid))),
            m.price(ask),
            m.amount(abs(m.level_amount(ask))),
            m.price(change),
            num(round(change / st.open_t, 4)),
            m.price(st.last_t),
            m.amount(st.volume_t),
            m.price(st.high_t),
            m.price(st.low_t),
        ]


@dataclass(eq=False)
class TradesFeed(Feed):
    def snapshot_tail(self) -> str:
        return dumps([self.entry(t) for t in reversed(self.market.tape)])

    def entry(self, trade: Trade) -> Entry:
        m = self.market
        return [trade.id, trade.mts, m.amount(trade.amount_t), m.price(trade.price_t)]


@dataclass(eq=False)
class CandlesFeed(Feed):
    interval_ms: int = _MIN

    def snapshot_tail(self) -> str:
        series = self.market.candles(self.interval_ms)
        candles = [*series.closed, *([series.current] if series.current else [])]
        return dumps([self._entry_of(c) for c in reversed(candles)])

    def update_tail(self) -> str | None:
        cur = self.market.candles(self.interval_ms).current
        return None if cur is None else dumps(self._entry_of(cur))

    def _entry_of(self, c: Candle) -> Entry:
        m = self.market
        return [
            c.open_ms,
            m.price(c.open_t),
            m.price(c.close_t),
            m.price(c.high_t),
            m.price(c.low_t),
            m.amount(c.volume_t),
        ]


@dataclass(eq=False)
class StatusFeed(Feed):
    def snapshot_tail(self) -> str:
        return dumps(self.entry(int(time.time() * 1000)))

    def entry(self, now_ms: int) -> list[object]:
        m = self.market
        mark = m.price(m.mid_t)
        spot = m.price(m.stats().last_t)
        funding_ts = now_ms - now_ms % (8 * 3_600_000) + 8 * 3_600_000
        return [
            now_ms,
            None,
            mark,
            spot,
            None,
            1234567.5,
            None,
            funding_ts,
            0.0001,
            12,
            None,
            0.0001,
            None,
            None,
            mark,
            None,
            None,
            m.amount(m.stats().volume_t) + 1000,
            None,
            None,
            None,
            0.0005,
            -0.0005,
        ]


@dataclass(eq=False)
class BookFeed(Feed):
    prec: str = "P0"
    freq: str = "F0"
    length: int = 25
    min_interval: float = 0.0  # F1: updates batched at most this often
    last_update: float = 0.0
    bids: list[Entry] = field(default_factory=list)
    asks: list[Entry] = field(default_factory=list)
    _sent: dict[tuple[bool, int | float], Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refresh_view()

    @property
    def raw(self) -> bool:
        return self.prec == "R0"

    def snapshot_tail(self) -> str:
        return dumps([*self.bids, *self.asks])

    def checksum(self) -> int:
        return book_checksum(self.bids, self.asks)

    def refresh_view(self) -> list[Entry]:
        """Recompute the top-``length`` view; return the updates that turn the old into it."""
        bids, asks = self._raw_view() if self.raw else self._aggregated_view()
        new: dict[tuple[bool, int | float], Entry] = {}
        for e in bids:
            new[(True, e[0])] = e
        for e in asks:
            new[(False, e[0])] = e
        old = self._sent
        updates: list[Entry] = []
        for key in old:
            if key not in new:
                updates.append([key[1], 0, 1 if key[0] else -1])
        for key, entry in new.items():
            if old.get(key) != entry:
                updates.append(entry)
        self._sent = new
        self.bids, self.asks = bids, asks
        return updates

    def _aggregated_view(self) -> tuple[list[Entry], list[Entry]]:
        m = self.market
        sig = BOOK_PRECISIONS[self.prec]
        raw_bids, raw_asks = m.sides()
        return (
            self._aggregate(m, raw_bids, sig, down=True),
            self._aggregate(m, raw_asks, sig, down=False),
        )

    def _aggregate(
        self, m: SymbolMarket, levels: Iterable[tuple[int, int, int]], sig: int, *, down: bool
    ) -> list[Entry]:
        out: list[Entry] = []
        cur_price: int | None = None
        count = amount = 0
        for price_t, c, a in levels:
            step = 10 ** max(0, len(str(price_t)) - sig)
            # Bids round down and asks up, so an aggregated book never crosses.
            p = (price_t // step) * step if down else -((-price_t) // step) * step
            if p != cur_price:
                if cur_price is not None:
                    out.append([m.price(cur_price), count, m.amount(amount)])
                    if len(out) >= self.length:
                        return out
                cur_price, count, amount = p, 0, 0
            count += c
            amount += a
        if cur_price is not None and len(out) < self.length:
            out.append([m.price(cur_price), count, m.amount(amount)])
        return out

    def _raw_view(self) -> tuple[list[Entry], list[Entry]]:
        m = self.market
        orders = m.orders.values()
        bids = sorted((o for o in orders if o.amount_t > 0), key=lambda o: (-o.price_t, o.id))
        asks = sorted((o for o in orders if o.amount_t < 0), key=lambda o: (o.price_t, o.id))
        n = self.length
        return (
            [[o.id, m.price(o.price_t), m.amount(o.amount_t)] for o in bids[:n]],
            [[o.id, m.price(o.price_t), m.amount(o.amount_t)] for o in asks[:n]],
        )


def book_checksum(bids: list[Entry], asks: list[Entry]) -> int:
    """Bitfinex OB checksum: signed CRC32 of interleaved top-25 "price:amount" (R0: "id:amount")."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts.append(str(bids[i][0]))
            parts.append(str(bids[i][-1]))
        if i < len(asks):
            parts.append(str(asks[i][0]))
            parts.append(str(asks[i][-1]))
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= (1 << 31) else crc
