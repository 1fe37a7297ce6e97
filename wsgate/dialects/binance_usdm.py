"""Binance USD-M futures streams (fstream) as a pure codec.

What differs from spot (:mod:`wsgate.dialects.binance`), whose session, upstream codec,
state and dialect are subclassed here (the frames and replies are the same):

* Since 2026 the host splits streams over three paths: ``/public`` carries the high-frequency
  streams (``@depth*``, ``@bookTicker``, ``!bookTicker`` and raw ``@trade``, where ccxt's
  current routing puts it too), ``/market`` everything else,
  ``/private`` user data. A stream subscribed on the wrong path is acknowledged and then stays
  silent, so every key is placed on an upstream connection of its own path
  (:meth:`BinanceUsdmDialect.upstream_suffix`); bots may use any path (``/public/...``,
  ``/market/...`` or the legacy ``/ws`` and ``/stream``) and get every stream they ask for.
* Diff depth is chained by ``pu`` (the previous event's ``u``), not ``U == u + 1``.
* 10 incoming messages per second per connection (spot: 5); ping frames every 3 minutes.
* User data and orders are relayed 1:1 on a dedicated upstream each: ``/private/ws?listenKey=``
  (``&events=``), ``/private/ws/<listenKey>``, ``/private/stream?listenKey=``, and the legacy
  ``/ws/<listenKey>``, which goes upstream to ``/private/ws/<listenKey>`` (the root that
  carried it was retired on 2026-04-23); the futures WebSocket API ``/ws-fapi/v1``
  (``ws-fapi.binance.com``: a route's ``serves = "ws_api"`` endpoint). Listen keys are
  managed with ``POST/PUT/DELETE /fapi/v1/listenKey`` through the route's REST pass-through.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from wsgate.core.types import DialectName
from wsgate.dialects.base import SubKey
from wsgate.dialects.binance import (
    QUIET_DEPTH_CADENCE,
    BinanceDialect,
    BinanceSession,
    BinanceState,
    StreamNames,
    _masked_path,
)
from wsgate.errors import InvalidPath

__all__ = [
    "MARKET",
    "MAX_MESSAGES_PER_SECOND",
    "MAX_STREAMS",
    "PUBLIC",
    "WS_API_PATH",
    "BinanceUsdmDialect",
    "UsdmSession",
    "UsdmState",
    "parse_usdm_stream",
]

MAX_MESSAGES_PER_SECOND = 10
MAX_STREAMS = 1024  # per session, as the market-streams page documents per connection
PUBLIC = "/public/stream"
MARKET = "/market/stream"
WS_API_PATH = "/ws-fapi/v1"  # on ws-fapi.binance.com

_INTERVALS = frozenset(
    {"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
)
_EVENTS = {
    e.lower(): e
    for e in (
        "aggTrade",
        "trade",
        "markPrice",
        "ticker",
        "miniTicker",
        "bookTicker",
        "forceOrder",
        "depth",
    )
}
_PARTIAL = frozenset({"depth5", "depth10", "depth20"})
_ALL_MARKET = {
    s.lower(): s
    for s in (
        "!markPrice@arr",
        "!markPrice@arr@1s",
        "!miniTicker@arr",
        "!ticker@arr",
        "!bookTicker",
        "!forceOrder@arr",
        "!contractInfo",
        "!assetIndex@arr",
    )
}
_SYMBOL = re.compile(r"[a-z0-9_]{2,40}")
_LISTEN_KEY = re.compile(r"[A-Za-z0-9]{20,128}")
_PUBLIC_CHANNELS = frozenset({"depth", "depth5", "depth10", "depth20", "bookTicker", "trade"})
_LAST_VALUE = frozenset({"bookTicker", "ticker", "miniTicker", "markPrice", *_PARTIAL})


_PARTIAL_SPEEDS = ("100ms", "500ms")
_NAMES = StreamNames(
    DialectName.BINANCE_USDM,
    _ALL_MARKET,
    _SYMBOL,
    _EVENTS,
    _PARTIAL,
    _INTERVALS,
    {
        "depth": ("100ms", "250ms", "500ms"),
        **{ch: _PARTIAL_SPEEDS for ch in _PARTIAL},
        "markPrice": ("1s",),
    },
)


def parse_usdm_stream(raw: object) -> SubKey | None:
    """Canonical key of a USD-M stream name, or ``None`` when fstream has no such stream."""
    return _NAMES.parse(raw)


class UsdmSession(BinanceSession):
    """Downstream codec: spot's request handling with the futures stream names and rate."""

    max_rate = MAX_MESSAGES_PER_SECOND
    listen_key_subscribe = False  # user data is on /private only

    @staticmethod
    def parse_key(raw: object) -> SubKey | None:
        return parse_usdm_stream(raw)


class UsdmState(BinanceState):
    """Late-joiner state (last message of snapshot-like streams) and the ``pu`` chain of diff
    depth: every event's ``pu`` must equal the previous event's ``u``."""

    last_value = _LAST_VALUE
    last_value_prefixes = ("kline_",)
    chain_field = "pu"
    chain_step = 0


class BinanceUsdmDialect(BinanceDialect):
    name = DialectName.BINANCE_USDM
    url_suffix = PUBLIC  # the connections opened at start; /market opens on first use
    session_type = UsdmSession
    state_type = UsdmState
    ws_api_path = WS_API_PATH
    listen_key_rest = "/listenKey"

    def upstream_suffix(self, key: SubKey) -> str:
        """``/public`` for book streams and raw trades, ``/market`` for the rest (2026 split)."""
        return PUBLIC if key.channel in _PUBLIC_CHANNELS else MARKET

    def open_session(self, path: str, query: str = "") -> BinanceSession:
        path = path.rstrip("/")
        if path.startswith("/private"):
            return self._private(path, query)
        if path == WS_API_PATH:
            return UsdmSession(False, private_path=WS_API_PATH)
        for prefix in ("/public", "/market"):
            if path == prefix or path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        session = self._stream_session(path, query)
        if session is not None:
            return session
        raise InvalidPath(
            "binance_usdm routes serve /public/..., /market/..., /private/..., "
            f"{WS_API_PATH} and the legacy /ws, /stream, not {_masked_path(path)!r}"
        )

    def user_stream_path(self, listen_key: str) -> str:
        """A legacy ``/ws/<listenKey>`` goes upstream where fstream carries user data now."""
        return f"/private/ws/{listen_key}"

    def _private(self, path: str, query: str) -> UsdmSession:
        """User data: relayed 1:1 on a dedicated upstream (the key stays in its URL only)."""
        if path in ("/private/ws", "/private/stream") and "listenKey" in parse_qs(query):
            return UsdmSession(False, private_path=f"{path}?{query}")
        tail = path[len("/private/ws/") :] if path.startswith("/private/ws/") else ""
        if tail and _LISTEN_KEY.fullmatch(tail):
            return UsdmSession(False, private_path=path)
        raise InvalidPath("binance_usdm /private sessions need ?listenKey=<key>", 400)

    def cadence(self, key: SubKey) -> float | None:
        ch = key.channel
        speed = key.param("speed")
        if ch in ("trade", "aggTrade", "bookTicker", "forceOrder", "contractInfo"):
            return None  # event driven: silence on a quiet symbol is not a fault
        if ch == "depth":
            return QUIET_DEPTH_CADENCE  # pushed on change only: a quiet book is silent
        if ch.startswith("depth"):
            return {"100ms": 0.1, "500ms": 0.5}.get(speed, 0.25)
        if ch == "markPrice":
            return 1.0 if speed == "1s" else 3.0
        if ch.startswith("kline_"):
            return 0.25
        if ch == "assetIndex":
            return 1.0
        return 1.0  # tickers and the all-market arrays: 500 ms nominal, 1 s leaves slack
