"""Binance's late-joiner channel state: the last message of snapshot-like streams, and
diff depth's update-id chain (a broken chain is a gap)."""

from __future__ import annotations

import logging
from typing import ClassVar

from wsgate.dialects.base import ChannelData, Integrity, StateStatistics, SubKey
from wsgate.dialects.jsonspan import int_field

__all__ = ["BinanceState"]

log = logging.getLogger("wsgate.dialects.binance")

# Streams whose every message is a whole picture: a late joiner gets the last one.
_LAST_VALUE = ("bookTicker", "ticker", "miniTicker", "avgPrice", "depth5", "depth10", "depth20")


class BinanceState:
    """Late-joiner state: last message of snapshot-like streams; ``u`` contiguity for diff depth.

    Spot chains depth events by ``U == previous u + 1``; a subclass names another member
    and step (USD-M: ``pu == previous u``) and its own last-value streams.
    """

    last_value: ClassVar[frozenset[str]] = frozenset(_LAST_VALUE)
    last_value_prefixes: ClassVar[tuple[str, ...]] = ("kline_", "ticker_")
    chain_field: ClassVar[str] = "U"  # the member that links an event to its predecessor
    chain_step: ClassVar[int] = 1  # ... equal to the previous event's ``u`` plus this

    def __init__(self, key: SubKey) -> None:
        self.key = key
        ch = key.channel
        self.keeps_last = ch in self.last_value or ch.startswith(self.last_value_prefixes)
        self.diff_depth = key.channel == "depth"
        self.last_update_id: int | None = None
        self._last: ChannelData | None = None
        self._frames = 0
        self._gaps = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} frames={self._frames} gaps={self._gaps}>"

    def apply(self, event: ChannelData) -> Integrity:
        self._frames += 1
        if self.keeps_last:
            self._last = event
            return Integrity.OK
        if not self.diff_depth:
            return Integrity.OK
        link = int_field(event.text, self.chain_field, event.start, event.end)
        last = int_field(event.text, "u", event.start, event.end)
        if link is None or last is None:
            return Integrity.OK
        prev, self.last_update_id = self.last_update_id, last
        if prev is not None and link != prev + self.chain_step:
            self._gaps += 1
            log.warning("%s: depth gap: %s=%d after u=%d", self.key, self.chain_field, link, prev)
            return Integrity.GAP
        return Integrity.OK

    def reset(self) -> None:
        self._last = None
        self.last_update_id = None

    def snapshot_event(self) -> ChannelData | None:
        return self._last

    def statistics(self) -> StateStatistics:
        return StateStatistics(
            self.key, self._frames, 0, self._gaps, int(self._last is not None), bool(self._last)
        )
