"""The stream-name grammar of the Binance hosts (spot, USD-M): one parser, a table per host."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from wsgate.core.types import DialectName
from wsgate.dialects.base import SubKey

__all__ = ["StreamNames"]


@dataclass(frozen=True)
class StreamNames:
    """The stream-name grammar of one Binance host: ``<symbol>@<event>[@<speed>]`` and the
    ``!``-prefixed all-market streams, each host with its own tables."""

    dialect: DialectName
    all_market: Mapping[str, str]  # lower-cased name -> the name as documented
    symbol: re.Pattern[str]
    events: Mapping[str, str]  # lower-cased event -> channel
    fixed_lower: frozenset[str]  # events that are channels as lower-cased (depth5, ...)
    intervals: frozenset[str]  # of kline_<interval>: 1m and 1M differ only by case
    speeds: Mapping[str, tuple[str, ...]]  # channel -> the @<speed> suffixes it takes

    def parse(self, raw: object) -> SubKey | None:
        """Canonical key of a stream name, or ``None`` when the host has no such stream."""
        if not isinstance(raw, str) or not raw:
            return None
        if raw[0] == "!":
            name = self.all_market.get(raw.lower())
            if name is None:
                return None
            params = (("speed", "1s"),) if name.endswith("@1s") else ()
            return SubKey(self.dialect, name[1:].split("@")[0], "", params, name)
        parts = raw.split("@")
        if len(parts) not in (2, 3):
            return None
        symbol, event = parts[0].lower(), parts[1]
        if not self.symbol.fullmatch(symbol):
            return None
        low = event.lower()
        if low.startswith("kline_"):
            if event[6:] not in self.intervals:  # never lower-cased: 1m is not 1M
                return None
            channel = f"kline_{event[6:]}"
        elif low in self.fixed_lower:
            channel = low
        else:
            found = self.events.get(low)
            if found is None:
                return None
            channel = found
        params = ()
        if len(parts) == 3:
            speed = parts[2].lower()
            if speed not in self.speeds.get(channel, ()):
                return None
            params = (("speed", speed),)  # kept as asked: bots see the name they asked for
        name = "@".join([symbol, channel, *(v for _, v in params)])
        return SubKey(self.dialect, channel, symbol, params, name)
