"""Bots' local order books, kept by each venue's documented rules, to compare with the
server's own book: a gateway that loses, repeats or misorders an update shows up here."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["BookKeeper"]


class BookKeeper:
    """One side-by-side book: ``bids``/``asks`` price -> size (decimal strings as sent),
    plus every rule violation the bot would have seen (``breaks``)."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, str] = {}
        self.asks: dict[Decimal, str] = {}
        self.last: int | None = None
        self.breaks: list[str] = []
        self.snapshots = 0
        self.synced = False

    def _levels(self, side: dict[Decimal, str], levels: list[list[str]]) -> None:
        for level in levels:
            price, size = Decimal(level[0]), level[1]
            if Decimal(size) == 0:
                side.pop(price, None)
            else:
                side[price] = size

    def _reset(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids, self.asks = {}, {}
        self._levels(self.bids, bids)
        self._levels(self.asks, asks)
        self.snapshots += 1

    def okx(self, msg: dict[str, Any]) -> None:
        push = msg["data"][0]
        seq, prev = int(push["seqId"]), int(push["prevSeqId"])
        if msg.get("action") == "snapshot":
            self._reset(push["bids"], push["asks"])
        elif self.last is None or prev != self.last:
            self.breaks.append(f"prevSeqId {prev} after seqId {self.last}")
        else:
            self._levels(self.bids, push["bids"])
            self._levels(self.asks, push["asks"])
        self.last = seq

    def bybit(self, msg: dict[str, Any]) -> None:
        data = msg["data"]
        u = int(data["u"])
        if msg["type"] == "snapshot":
            self._reset(data["b"], data["a"])
        elif self.last is None or u != self.last + 1:
            self.breaks.append(f"u {u} after u {self.last}")
        else:
            self._levels(self.bids, data["b"])
            self._levels(self.asks, data["a"])
        self.last = u

    def usdm_snapshot(self, rest: dict[str, Any]) -> None:
        self._reset(rest["bids"], rest["asks"])
        self.last = int(rest["lastUpdateId"])
        self.synced = False

    def usdm(self, event: dict[str, Any]) -> None:
        """fstream's recipe: drop ``u < lastUpdateId``; the first applied event spans it;
        then each ``pu`` equals the previous ``u``."""
        if self.last is None:
            self.breaks.append("an event before the REST snapshot")
            return
        first, u, pu = int(event["U"]), int(event["u"]), int(event["pu"])
        if u < self.last:
            return
        ok = pu == self.last or (not self.synced and first <= self.last <= u)
        if not ok:
            self.breaks.append(f"pu {pu} after u {self.last}")
        else:
            self._levels(self.bids, event["b"])
            self._levels(self.asks, event["a"])
            self.synced = True
        self.last = u

    def same_as(self, bids: dict[str, str], asks: dict[str, str]) -> bool:
        want_b = {Decimal(p): s for p, s in bids.items()}
        want_a = {Decimal(p): s for p, s in asks.items()}
        return self.bids == want_b and self.asks == want_a
