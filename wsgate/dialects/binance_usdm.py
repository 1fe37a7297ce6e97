"""Binance USD-M futures streams (fstream) as a pure codec.

What differs from spot (:mod:`wsgate.dialects.binance`), whose session and reply handling are
reused:

* Since 2026 the host splits streams over three paths: ``/public`` carries the high-frequency
  streams (``@depth*``, ``@bookTicker``, ``!bookTicker`` and raw ``@trade``, where ccxt's
  current routing puts it too), ``/market`` everything else,
  ``/private`` user data. A stream subscribed on the wrong path is acknowledged and then stays
  silent, so every key is placed on an upstream connection of its own path
  (:meth:`BinanceUsdmDialect.upstream_suffix`); bots may use any path (``/public/...``,
  ``/market/...`` or the legacy ``/ws`` and ``/stream``) and get every stream they ask for.
* Diff depth is chained by ``pu`` (the previous event's ``u``), not ``U == u + 1``.
* 10 incoming messages per second per connection (spot: 5); ping frames every 3 minutes.
* ``/private/ws?listenKey=...`` sessions are relayed 1:1 on a dedicated upstream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from urllib.parse import parse_qs

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    Auth,
    ChannelData,
    DataKind,
    FrameForm,
    Integrity,
    Intent,
    SessionStatistics,
    StateStatistics,
    SubKey,
    Subscribe,
    Unrecognized,
    Unsubscribe,
    UpstreamEvent,
)
from wsgate.dialects.binance import BinanceSession, BinanceUpstream, _error, _result
from wsgate.dialects.jsonspan import int_field, object_spans, str_member, strip_span
from wsgate.errors import InvalidPath

__all__ = [
    "MARKET",
    "MAX_MESSAGES_PER_SECOND",
    "MAX_STREAMS",
    "PUBLIC",
    "BinanceUsdmDialect",
    "UsdmSession",
    "UsdmState",
    "UsdmUpstream",
    "parse_usdm_stream",
]

log = logging.getLogger("wsgate.dialects.binance_usdm")

MAX_MESSAGES_PER_SECOND = 10
MAX_STREAMS = 1024  # per session, as the market-streams page documents per connection
PUBLIC = "/public/stream"
MARKET = "/market/stream"

_INTERVALS = frozenset(
    {"1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
)
_SIMPLE = {
    e.lower(): e
    for e in ("aggTrade", "trade", "markPrice", "ticker", "miniTicker", "bookTicker", "forceOrder")
}
_PARTIAL = frozenset({"depth5", "depth10", "depth20"})
_SPEEDS = {"depth": ("100ms", "250ms", "500ms"), "markPrice": ("1s",)}
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
_PREFIX = '{"stream":"'
_DATA = DataKind.DATA
_COMBINED = FrameForm.COMBINED
_new = tuple.__new__


def parse_usdm_stream(raw: object) -> SubKey | None:
    """Canonical key of a USD-M stream name, or ``None`` when fstream has no such stream."""
    if not isinstance(raw, str) or not raw:
        return None
    dn = DialectName.BINANCE_USDM
    params: tuple[tuple[str, str], ...] = ()
    if raw[0] == "!":
        name = _ALL_MARKET.get(raw.lower())
        if name is None:
            return None
        channel = name[1:].split("@")[0]
        params = (("speed", "1s"),) if name.endswith("@1s") else ()
        return SubKey(dn, channel, "", params, name)
    parts = raw.split("@")
    if len(parts) not in (2, 3):
        return None
    symbol, event = parts[0].lower(), parts[1]
    if not _SYMBOL.fullmatch(symbol):
        return None
    low = event.lower()
    if low.startswith("kline_"):
        if event[6:] not in _INTERVALS:  # 1m and 1M differ by case only
            return None
        channel = f"kline_{event[6:]}"
    elif low in _PARTIAL:
        channel = low
    else:
        found = _SIMPLE.get(low) or ("depth" if low == "depth" else None)
        if found is None:
            return None
        channel = found
    if len(parts) == 3:
        speed = parts[2].lower()
        base = "depth" if channel in _PARTIAL else channel
        if speed not in _SPEEDS.get(base, ()) or (channel in _PARTIAL and speed == "250ms"):
            return None
        params = (("speed", speed),)  # @250ms stays distinct: bots see the name they asked
    name = "@".join([symbol, channel, *(v for _, v in params)])
    return SubKey(dn, channel, symbol, params, name)


class UsdmSession(BinanceSession):
    """Downstream codec: spot's request handling with the futures stream names and rate."""

    def __repr__(self) -> str:
        return f"<UsdmSession form={self.form.value} streams={len(self.subs)}>"

    def on_open(self, now: float) -> list[Intent]:
        # ``listen_key`` holds the whole private upstream path (and its query) here.
        if self.listen_key is not None:
            return [Auth("", self.listen_key)]
        return super().on_open(now)

    def _sub_unsub(self, method: str, params: object, req_id: object) -> list[Intent]:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return [_error(1, "Invalid value type: expected a list of stream names", req_id)]
        keys: list[SubKey] = []
        for p in params:
            key = parse_usdm_stream(p)
            if key is None:
                return [_error(2, f"Invalid request: invalid stream name {p!r}", req_id)]
            keys.append(key)
        out: list[Intent] = [_result(None, req_id)]
        if method == "SUBSCRIBE":
            new = [k for k in dict.fromkeys(keys) if k not in self.subs]
            if len(self.subs) + len(new) > MAX_STREAMS:
                return [_error(2, f"Invalid request: more than {MAX_STREAMS} streams", req_id)]
            for key in new:
                self.subs[key] = None
                out.append(Subscribe(key, (), req_id))
        else:
            for key in dict.fromkeys(keys):
                if key in self.subs:
                    del self.subs[key]
                    out.append(Unsubscribe(key))
        return out

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(self._messages, self._errors, len(self.subs))


class UsdmUpstream(BinanceUpstream):
    """One combined-stream connection on ``/public`` or ``/market``.

    Fast path: the compact form ``{"stream":"<name>","data":{...}}`` Binance writes, checked
    by ``str`` methods; any other valid JSON goes through the exact member walk, and the
    ``data`` span is then the value exactly as written (no re-encoding ever).
    """

    def __repr__(self) -> str:
        return f"<UsdmUpstream pending_requests={len(self._requests)}>"

    def on_upstream_frame(self, text: str) -> UpstreamEvent:
        if text.startswith(_PREFIX):
            q = text.find('"', 11)
            if (
                q > 11
                and text.startswith('","data":{', q)
                and text.endswith("}}")
                and "\\" not in text[11:q]
            ):
                return _new(ChannelData, (text[11:q], _DATA, text, q + 9, len(text) - 1, None))
        start, end = strip_span(text)
        if start or end != len(text):
            text = text[start:end]  # a client expecting an object may drop " {...}"
        spans = object_spans(text)
        if spans is None:
            return Unrecognized(text, "not a JSON object")
        if "stream" in spans and "data" in spans:
            stream = str_member(text, spans, "stream")
            if stream is None:
                return Unrecognized(text, "combined frame whose stream is not a string")
            start, end = spans["data"]
            return ChannelData(stream, _DATA, text, start, end)
        if "result" in spans or "error" in spans or "id" in spans:
            return self._reply(text)
        # A raw /ws upstream (a user-data relay): the whole frame is the payload.
        return ChannelData("", _DATA, text, 0, len(text))


class UsdmState:
    """Late-joiner state (last message of snapshot-like streams) and the ``pu`` chain of diff
    depth: every event's ``pu`` must equal the previous event's ``u``."""

    def __init__(self, key: SubKey) -> None:
        self.key = key
        ch = key.channel
        self.keeps_last = ch in _LAST_VALUE or ch.startswith("kline_")
        self.diff_depth = ch == "depth"
        self.last_update_id: int | None = None
        self._last: ChannelData | None = None
        self._frames = 0
        self._gaps = 0

    def __repr__(self) -> str:
        return f"<UsdmState {self.key} frames={self._frames} gaps={self._gaps}>"

    def apply(self, event: ChannelData) -> Integrity:
        self._frames += 1
        if self.keeps_last:
            self._last = event
            return Integrity.OK
        if not self.diff_depth:
            return Integrity.OK
        prev_u = int_field(event.text, "pu", event.start, event.end)
        last = int_field(event.text, "u", event.start, event.end)
        if prev_u is None or last is None:
            return Integrity.OK
        prev, self.last_update_id = self.last_update_id, last
        if prev is not None and prev_u != prev:
            self._gaps += 1
            log.warning("%s: depth gap: pu=%d after u=%d", self.key, prev_u, prev)
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


def _cadence(key: SubKey) -> float | None:
    ch = key.channel
    speed = key.param("speed")
    if ch in ("trade", "aggTrade", "bookTicker", "forceOrder", "contractInfo"):
        return None  # event driven: silence on a quiet symbol is not a fault
    if ch.startswith("depth"):
        return {"100ms": 0.1, "500ms": 0.5}.get(speed, 0.25)
    if ch == "markPrice":
        return 1.0 if speed == "1s" else 3.0
    if ch.startswith("kline_"):
        return 0.25
    if ch == "assetIndex":
        return 1.0
    return 1.0  # tickers and the all-market arrays: 500 ms nominal, 1 s leaves slack


class BinanceUsdmDialect:
    name = DialectName.BINANCE_USDM
    shared = True
    url_suffix = PUBLIC  # the connections opened at start; /market opens on first use
    # As Binance spot: code 2 (invalid request) with the request's id (base.refusal).
    limit_error = (2, "Invalid request: too many streams")
    unavailable_error = (2, "Invalid request: stream unavailable, try again later")

    def __init__(self) -> None:
        self._dedup_token: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return "<BinanceUsdmDialect>"

    def upstream_suffix(self, key: SubKey) -> str:
        """``/public`` for book streams and raw trades, ``/market`` for the rest (2026 split)."""
        return PUBLIC if key.channel in _PUBLIC_CHANNELS else MARKET

    def open_session(self, path: str, query: str = "") -> UsdmSession:
        path = path.rstrip("/")
        if path.startswith("/private"):
            return self._private(path, query)
        for prefix in ("/public", "/market"):
            if path == prefix or path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        if path == "/stream":
            raw = parse_qs(query).get("streams", [""])[0]
            names = [n for n in raw.split("/") if n]
            keys = [parse_usdm_stream(n) for n in names]
            bad = [n for n, k in zip(names, keys, strict=True) if k is None]
            if bad:
                raise InvalidPath(f"binance_usdm: invalid stream name(s) {', '.join(bad)}", 400)
            return _session(True, [k for k in keys if k is not None])
        if path == "/ws":
            return _session(False)
        if path.startswith("/ws/"):
            segments = path[4:].split("/")
            keys = [parse_usdm_stream(s) for s in segments]
            if all(k is not None for k in keys):
                return _session(False, [k for k in keys if k is not None])
            if len(segments) == 1 and _LISTEN_KEY.fullmatch(segments[0]):
                return _session(False, listen_key=f"/ws/{segments[0]}")
            log.info("binance_usdm session on unknown stream path: no data will flow")
            return _session(False)
        raise InvalidPath(
            "binance_usdm routes serve /public/..., /market/..., /private/... "
            f"and the legacy /ws, /stream, not {path!r}"
        )

    def _private(self, path: str, query: str) -> UsdmSession:
        """User data: relayed 1:1 on a dedicated upstream (the key stays in its URL only)."""
        if path in ("/private/ws", "/private/stream") and "listenKey" in parse_qs(query):
            return _session(False, listen_key=f"{path}?{query}")
        tail = path[len("/private/ws/") :] if path.startswith("/private/ws/") else ""
        if tail and _LISTEN_KEY.fullmatch(tail):
            return _session(False, listen_key=path)
        raise InvalidPath("binance_usdm /private sessions need ?listenKey=<key>", 400)

    def open_upstream(self, flags: int = 0) -> UsdmUpstream:
        return UsdmUpstream()

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int:
        return 0

    def new_state(self, key: SubKey) -> UsdmState:
        return UsdmState(key)

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes:
        if form is _COMBINED:
            return event.text.encode()
        return event.text[event.start : event.end].encode()

    def cadence(self, key: SubKey) -> float | None:
        return _cadence(key)

    def dedup_id(self, event: ChannelData) -> int | None:
        """aggTrade ``a``, trade ``t`` or diff-depth ``u``: monotonic per stream."""
        stream = event.channel
        if not isinstance(stream, str):
            return None
        token = self._dedup_token.get(stream, "")
        if token == "":
            key = parse_usdm_stream(stream)
            ch = key.channel if key else ""
            token = {"trade": "t", "aggTrade": "a", "depth": "u"}.get(ch)
            self._dedup_token[stream] = token
        if token is None:
            return None
        return int_field(event.text, token, event.start, event.end)


def _session(
    combined: bool, streams: Sequence[SubKey] = (), listen_key: str | None = None
) -> UsdmSession:
    return UsdmSession(combined, streams, listen_key, MAX_MESSAGES_PER_SECOND)
