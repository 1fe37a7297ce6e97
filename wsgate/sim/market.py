"""The simulated market: a random-walk price, a raw order book and a trade tape per symbol.

Both exchange simulators render the same model in their own wire format. The model is
pure and deterministic: it owns a ``random.Random`` handed in by the simulator, never reads
a clock for its evolution (callers pass ``now_ms`` for the timestamps they want stamped on
trades), and never does I/O.

Prices and amounts are kept as integers (ticks of ``10**-price_decimals`` and of
``10**-AMOUNT_DECIMALS``) so that aggregation is exact and every number rendered for the wire
has one canonical spelling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "AMOUNT_DECIMALS",
    "Candle",
    "CandleSeries",
    "MarketStats",
    "Order",
    "SymbolMarket",
    "Trade",
    "num",
]

AMOUNT_DECIMALS = 4
_AMOUNT_SCALE = 10**AMOUNT_DECIMALS

# Plausible starting points; anything else starts at 100.00.
_BASE_PRICES: dict[str, tuple[float, int]] = {
    "BTC": (30000.0, 1),
    "ETH": (2000.0, 2),
    "SOL": (150.0, 3),
    "XRP": (0.5, 5),
}


def num(value: float) -> int | float:
    """A number as the exchange writes it: integral values as ints (29999, not 29999.0)."""
    as_int = int(value)
    return as_int if as_int == value else value


def base_asset(symbol: str) -> str:
    """``tBTCUSD`` / ``btcusdt`` / ``BTCUSDT`` → ``BTC``."""
    s = symbol[1:] if symbol[:1] == "t" and symbol[1:2].isupper() else symbol
    return s.upper()[:3]


@dataclass(slots=True)
class Order:
    id: int
    price_t: int  # in price ticks
    amount_t: int  # in amount ticks; > 0 bid, < 0 ask


@dataclass(frozen=True, slots=True)
class Trade:
    id: int
    mts: int
    price_t: int
    amount_t: int  # > 0 buyer was the taker, < 0 seller was


@dataclass(slots=True)
class Candle:
    open_ms: int
    open_t: int
    close_t: int
    high_t: int
    low_t: int
    volume_t: int = 0
    quote_volume: float = 0.0
    taker_buy_volume_t: int = 0
    taker_buy_quote: float = 0.0
    first_trade: int = -1
    last_trade: int = -1
    trades: int = 0


class CandleSeries:
    """Candles of one interval built from the trade tape; keeps a bounded history."""

    def __init__(self, interval_ms: int, history: int = 240) -> None:
        self.interval_ms = interval_ms
        self.closed: list[Candle] = []
        self.current: Candle | None = None
        self._history = history

    def add(self, trade: Trade, price_scale: float) -> None:
        bucket = trade.mts - trade.mts % self.interval_ms
        cur = self.current
        if cur is None or bucket > cur.open_ms:
            if cur is not None:
                self.closed.append(cur)
                del self.closed[: -self._history]
            cur = Candle(bucket, trade.price_t, trade.price_t, trade.price_t, trade.price_t)
            self.current = cur
        vol = abs(trade.amount_t)
        quote = vol / _AMOUNT_SCALE * trade.price_t / price_scale
        cur.close_t = trade.price_t
        cur.high_t = max(cur.high_t, trade.price_t)
        cur.low_t = min(cur.low_t, trade.price_t)
        cur.volume_t += vol
        cur.quote_volume += quote
        if trade.amount_t > 0:
            cur.taker_buy_volume_t += vol
            cur.taker_buy_quote += quote
        if cur.first_trade < 0:
            cur.first_trade = trade.id
        cur.last_trade = trade.id
        cur.trades += 1


@dataclass(frozen=True, slots=True)
class MarketStats:
    """Rolling "24 h" figures, counted since the market was created."""

    open_t: int
    high_t: int
    low_t: int
    last_t: int
    volume_t: int
    quote_volume: float
    first_trade: int
    last_trade: int
    trades: int


class SymbolMarket:
    """One symbol: mid price random walk, raw orders, aggregated levels and trades."""

    def __init__(
        self,
        symbol: str,
        rng: random.Random,
        *,
        levels: int = 60,
        volatility: float = 0.00003,
        tape: int = 30,
    ) -> None:
        base, decimals = _BASE_PRICES.get(base_asset(symbol), (100.0, 2))
        self.symbol = symbol
        self.price_decimals = decimals
        self.price_scale = 10**decimals
        self._rng = rng
        self._levels = levels
        self._volatility = volatility
        self.mid_t = int(base * self.price_scale * (0.95 + 0.1 * rng.random()))
        self.orders: dict[int, Order] = {}
        # raw price tick -> [order count, signed amount ticks]
        self.book: dict[int, list[int]] = {}
        self.update_id = rng.randrange(10**9, 2 * 10**9)
        self._next_order_id = rng.randrange(10**10, 2 * 10**10)
        self.trade_id = rng.randrange(10**8, 2 * 10**8)
        self.tape: list[Trade] = []
        self._tape_len = tape
        self._candles: dict[int, CandleSeries] = {}
        self._open_t = self.mid_t
        self._high_t = self.mid_t
        self._low_t = self.mid_t
        self._last_t = self.mid_t
        self._volume_t = 0
        self._quote_volume = 0.0
        self._first_trade = self.trade_id + 1
        self._trades = 0
        self.changed: dict[int, bool] = {}  # raw price -> is bid, touched by the last step
        for _ in range(levels * 3):
            self._add_random_order()
        self.changed.clear()

    def __repr__(self) -> str:
        return (
            f"SymbolMarket({self.symbol!r}, mid={self.price(self.mid_t)}, "
            f"orders={len(self.orders)}, update_id={self.update_id}, trade_id={self.trade_id})"
        )

    # -- rendering helpers ------------------------------------------------------------------

    def price(self, price_t: int) -> int | float:
        return num(round(price_t / self.price_scale, self.price_decimals))

    @staticmethod
    def amount(amount_t: int) -> int | float:
        return num(round(amount_t / _AMOUNT_SCALE, AMOUNT_DECIMALS))

    def price_str(self, price_t: int) -> str:
        return f"{price_t / self.price_scale:.8f}"

    @staticmethod
    def amount_str(amount_t: int) -> str:
        return f"{abs(amount_t) / _AMOUNT_SCALE:.8f}"

    # -- evolution ----------------------------------------------------------------------------

    def step(self) -> dict[int, bool]:
        """Move the price and mutate a few orders; return {raw price: is bid} of changed levels.

        ``update_id`` advances once per step that changed the book.
        """
        self.changed = {}
        rng = self._rng
        move = round(rng.gauss(0.0, self._volatility) * self.mid_t)
        self.mid_t = max(self.mid_t + move, 10 * self._levels + 10)
        # Orders the new mid crossed are gone: the book never crosses.
        for order in [o for o in self.orders.values() if self._crosses(o)]:
            self._remove(order)
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            if action < 0.45 or len(self.orders) < self._levels:
                self._add_random_order()
            elif action < 0.75:
                self._remove(self.orders[rng.choice(list(self.orders))])
            else:
                self._amend(self.orders[rng.choice(list(self.orders))])
        if self.changed:
            self.update_id += 1
        return self.changed

    def trade(self, now_ms: int) -> Trade:
        """Print one trade at the touch; the taker side is random."""
        rng = self._rng
        buy = rng.random() < 0.5
        best = self.best_ask() if buy else self.best_bid()
        price_t = best if best is not None else self.mid_t
        amount_t = rng.randint(1, 5 * _AMOUNT_SCALE // 10)
        self.trade_id += 1
        trade = Trade(self.trade_id, now_ms, price_t, amount_t if buy else -amount_t)
        self.tape.append(trade)
        del self.tape[: -self._tape_len]
        self._last_t = price_t
        self._high_t = max(self._high_t, price_t)
        self._low_t = min(self._low_t, price_t)
        self._volume_t += amount_t
        self._quote_volume += amount_t / _AMOUNT_SCALE * price_t / self.price_scale
        self._trades += 1
        for series in self._candles.values():
            series.add(trade, self.price_scale)
        return trade

    def seed_tape(self, now_ms: int, count: int = 30, spacing_ms: int = 1000) -> None:
        """Print ``count`` past trades so that a first snapshot is not empty."""
        for i in range(count, 0, -1):
            self.trade(now_ms - i * spacing_ms)

    def candles(self, interval_ms: int) -> CandleSeries:
        series = self._candles.get(interval_ms)
        if series is None:
            series = self._candles[interval_ms] = CandleSeries(interval_ms)
            for trade in self.tape:
                series.add(trade, self.price_scale)
        return series

    def stats(self) -> MarketStats:
        return MarketStats(
            self._open_t,
            self._high_t,
            self._low_t,
            self._last_t,
            self._volume_t,
            self._quote_volume,
            self._first_trade,
            self.trade_id,
            self._trades,
        )

    # -- book views -----------------------------------------------------------------------------

    def best_bid(self) -> int | None:
        bids = [p for p, lv in self.book.items() if lv[1] > 0]
        return max(bids) if bids else None

    def best_ask(self) -> int | None:
        asks = [p for p, lv in self.book.items() if lv[1] < 0]
        return min(asks) if asks else None

    def sides(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """(bids best first, asks best first) as (price_t, count, signed amount_t)."""
        bids = sorted(((p, c, a) for p, (c, a) in self.book.items() if a > 0), reverse=True)
        asks = sorted((p, c, a) for p, (c, a) in self.book.items() if a < 0)
        return bids, asks

    def level_amount(self, price_t: int) -> int:
        level = self.book.get(price_t)
        return level[1] if level else 0

    # -- internals ------------------------------------------------------------------------------

    def _crosses(self, order: Order) -> bool:
        return order.price_t >= self.mid_t if order.amount_t > 0 else order.price_t <= self.mid_t

    def _add_random_order(self) -> None:
        rng = self._rng
        bid = rng.random() < 0.5
        offset = 1 + min(int(rng.expovariate(1.0 / (self._levels / 4))), self._levels - 1)
        # Levels sit on a coarse grid so that several orders share a price.
        spacing = max(1, self.mid_t // 20000)
        price_t = self.mid_t - offset * spacing if bid else self.mid_t + offset * spacing
        if self.changed.get(price_t, bid) != bid:
            # The level left the other side in this very step: an exchange would publish
            # that removal first; one update per level per step can't, so skip the add.
            return
        amount_t = rng.randint(10, 2 * _AMOUNT_SCALE)
        self._next_order_id += 1
        order = Order(self._next_order_id, price_t, amount_t if bid else -amount_t)
        self.orders[order.id] = order
        self._touch(order.price_t, 1, order.amount_t, bid)

    def _remove(self, order: Order) -> None:
        del self.orders[order.id]
        self._touch(order.price_t, -1, -order.amount_t, order.amount_t > 0)

    def _amend(self, order: Order) -> None:
        sign = 1 if order.amount_t > 0 else -1
        new_amount = sign * self._rng.randint(10, 2 * _AMOUNT_SCALE)
        self._touch(order.price_t, 0, new_amount - order.amount_t, sign > 0)
        order.amount_t = new_amount

    def _touch(self, price_t: int, count: int, amount_t: int, bid: bool) -> None:
        level = self.book.get(price_t)
        if level is None:
            level = self.book[price_t] = [0, 0]
        level[0] += count
        level[1] += amount_t
        if level[0] == 0:
            del self.book[price_t]
        self.changed[price_t] = bid
