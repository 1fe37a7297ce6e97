"""Bitfinex WebSocket v2 as a pure codec: keys, sessions, upstream classification, rewrite.

Per-session conf flags: wsgate asks upstream for OB_CHECKSUM always (it verifies every shared
book) and TIMESTAMP when some session wants it, never SEQ_ALL: a sequence number is per
connection, so each session gets its own counter appended at render time. The upstream codec
locates the payload without the trailing upstream seq/timestamp fields, so the shared
(fast path) frame is exactly what a flag-less client expects.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    Auth,
    AuthReply,
    ChannelData,
    Close,
    Conf,
    ConfAck,
    DataKind,
    Error,
    ErrorAction,
    FrameForm,
    Info,
    InfoAction,
    Intent,
    Pong,
    Relay,
    Reply,
    SessionStatistics,
    SubKey,
    Subscribe,
    Subscribed,
    SubscribeFailed,
    Unrecognized,
    Unsubscribe,
    Unsubscribed,
    UpstreamEvent,
    compact,
)
from wsgate.dialects.bitfinex_state import (
    BookState,
    CandlesState,
    LastValueState,
    PassState,
)
from wsgate.dialects.bitfinex_trades import TradesState
from wsgate.dialects.jsonspan import WHITESPACE, elements, strip_span
from wsgate.errors import InvalidPath

__all__ = [
    "CHANNEL_CADENCE",
    "OB_CHECKSUM",
    "SEQ_ALL",
    "TIMESTAMP",
    "BitfinexDialect",
    "BitfinexSession",
    "BitfinexUpstream",
    "InvalidKey",
    "is_info_event",
    "parse_key",
]

log = logging.getLogger("wsgate.dialects.bitfinex")

TIMESTAMP = 32768
SEQ_ALL = 65536
OB_CHECKSUM = 131072
SUPPORTED_FLAGS = TIMESTAMP | SEQ_ALL | OB_CHECKSUM
CHANNEL_CADENCE = 15.0  # heartbeat per channel, seconds

# Hot path: module constants and tuple.__new__ skip enum descriptor lookups and the
# NamedTuple's Python-level __new__ (about half the classify cost on a slow host).
_DATA, _HB, _CS = DataKind.DATA, DataKind.HEARTBEAT, DataKind.CHECKSUM
_new = tuple.__new__
_WS = WHITESPACE
_WS_COMMA = WHITESPACE + ","
_WS_BRACKET = WHITESPACE + "["
_PLAIN_TAGS = frozenset({'"hb"', '"cs"', '"te"', '"tu"'})
_TAG_END = frozenset(",]")
_HEAD = re.compile(r"[ \t\n\r]*\[[ \t\n\r]*([0-9]+)[ \t\n\r]*,[ \t\n\r]*")
_TAGS = frozenset({"hb", "cs", "te", "tu", "fte", "ftu"})

ERR_UNKNOWN_EVENT = 10000
ERR_SUB_FAILED = 10300
ERR_ALREADY_SUBSCRIBED = 10301
ERR_UNKNOWN_CHANNEL = 10302
ERR_CHANNEL_LIMIT = 10305
ERR_UNSUB_FAILED = 10400
ERR_NOT_SUBSCRIBED = 10401
ERR_NOT_AUTHENTICATED = 10100

_INFO_ACTIONS = {
    20051: InfoAction.RECONNECT,
    20060: InfoAction.MAINTENANCE_START,
    20061: InfoAction.MAINTENANCE_END,
}
_ERROR_ACTIONS = {
    ERR_CHANNEL_LIMIT: ErrorAction.PLACE_ELSEWHERE,
    ERR_ALREADY_SUBSCRIBED: ErrorAction.ALREADY_SUBSCRIBED,
    ERR_UNSUB_FAILED: ErrorAction.UNSUBSCRIBE_FAILED,
    ERR_NOT_SUBSCRIBED: ErrorAction.UNSUBSCRIBE_FAILED,
}
_TRADING = re.compile(r"t[A-Z0-9]{3,}(:[A-Z0-9]{2,})?")
_FUNDING = re.compile(r"f[A-Z0-9]{2,}")
_PRECS = ("P0", "P1", "P2", "P3", "P4", "R0")
_FREQS = ("F0", "F1")
_LENS = ("1", "25", "100", "250")
_TIMEFRAMES = ("1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1D", "1W", "14D", "1M")
_CANDLE_KEY = re.compile(r"trade:([0-9]{1,2}[mhDWM]):([tf][A-Za-z0-9:]+?)((?::[ap][0-9]+)*)")
_STATUS_KEY = re.compile(r"(deriv:t[A-Z0-9]+(:[A-Z0-9]+)?|liq:global)")


class InvalidKey(ValueError):
    """A subscribe request that names no valid channel; ``code`` is Bitfinex's error code."""

    def __init__(self, code: int, msg: str) -> None:
        self.code = code
        self.msg = msg
        super().__init__(f"{code}: {msg}")


def _symbol(raw: object) -> str:
    if not isinstance(raw, str) or not raw or not raw.replace(":", "").isalnum():
        raise InvalidKey(ERR_SUB_FAILED, "symbol: invalid")
    if raw[0] in "tf" and len(raw) >= 3 and raw[1:] == raw[1:].upper():
        sym = raw
    else:
        sym = "t" + raw.upper()  # a bare pair: BTCUSD / btcusd -> tBTCUSD
    if not (_TRADING.fullmatch(sym) or _FUNDING.fullmatch(sym)):
        raise InvalidKey(ERR_SUB_FAILED, "symbol: invalid")
    return sym


def _pair_field(sym: str) -> tuple[str, str]:
    return ("pair", sym[1:]) if sym[0] == "t" else ("currency", sym[1:])


def parse_key(req: dict[str, Any]) -> tuple[SubKey, tuple[tuple[str, object], ...]]:
    """Canonical key and the fields a ``subscribed`` reply echoes, from a subscribe request.

    Raises ``InvalidKey`` with Bitfinex's error code when the request is invalid.
    """
    channel = req.get("channel")
    if channel in ("ticker", "trades", "book"):
        sym = _symbol(req.get("symbol", req.get("pair")))
        if channel != "book":
            name = f"{channel}:{sym}"
            key = SubKey(DialectName.BITFINEX, channel, sym, (), name)
            return key, (("symbol", sym), _pair_field(sym))
        prec = str(req.get("prec", "P0")).upper()
        freq = str(req.get("freq", "F0")).upper()
        length = str(req.get("len", "25"))
        if prec not in _PRECS:
            raise InvalidKey(ERR_SUB_FAILED, "prec: invalid")
        if freq not in _FREQS:
            raise InvalidKey(ERR_SUB_FAILED, "freq: invalid")
        if length not in _LENS:
            raise InvalidKey(ERR_SUB_FAILED, "len: invalid")
        if prec == "R0":
            freq = "F0"  # raw books are always real time
        params: tuple[tuple[str, str], ...] = (("prec", prec), ("freq", freq), ("len", length))
        key = SubKey(
            DialectName.BITFINEX, "book", sym, params, f"book:{sym}:{prec}:{freq}:{length}"
        )
        return key, (("symbol", sym), *params, _pair_field(sym))
    if channel == "candles":
        raw = req.get("key")
        m = _CANDLE_KEY.fullmatch(raw) if isinstance(raw, str) else None
        if m is None or m.group(1) not in _TIMEFRAMES:
            raise InvalidKey(ERR_SUB_FAILED, "key: invalid")
        sym = _symbol(m.group(2))
        ckey = f"trade:{m.group(1)}:{sym}{m.group(3)}"
        params = (("key", ckey),)
        return SubKey(DialectName.BITFINEX, "candles", sym, params, f"candles:{ckey}"), params
    if channel == "status":
        raw = req.get("key")
        if not isinstance(raw, str) or not _STATUS_KEY.fullmatch(raw):
            raise InvalidKey(ERR_SUB_FAILED, "key: invalid")
        params = (("key", raw),)
        return SubKey(DialectName.BITFINEX, "status", raw, params, f"status:{raw}"), params
    raise InvalidKey(ERR_UNKNOWN_CHANNEL, "channel: unknown")


def _error(code: int, msg: str, **extra: object) -> Error:
    return Error(compact({"event": "error", "msg": msg, "code": code, **extra}), code)


# --------------------------------------------------------------------------- session


class BitfinexSession:
    """Downstream codec for one bot. Tracks its conf flags, seq counter and subscriptions."""

    form = FrameForm.PLAIN

    def __init__(self) -> None:
        self.flags = 0
        self.seq = 0
        self.authenticated = False
        self.pending: dict[SubKey, Subscribe] = {}
        self.active: dict[int, SubKey] = {}
        self.fast_kinds: frozenset[DataKind] = frozenset({DataKind.DATA, DataKind.HEARTBEAT})
        self._messages = 0
        self._errors = 0

    def subscriptions(self) -> list[SubKey]:
        return [*self.pending, *self.active.values()]

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            self._messages, self._errors, len(self.pending) + len(self.active), self.flags
        )

    def __repr__(self) -> str:
        return (
            f"<BitfinexSession flags={self.flags} seq={self.seq} active={len(self.active)} "
            f"pending={len(self.pending)} auth={self.authenticated}>"
        )

    @property
    def wants_checksum(self) -> bool:
        return bool(self.flags & OB_CHECKSUM)

    def greeting(self, platform_status: int = 1) -> list[str]:
        return [
            compact(
                {
                    "event": "info",
                    "version": 2,
                    "serverId": "wsgate",
                    "platform": {"status": platform_status},
                }
            )
        ]

    def on_open(self, now: float) -> list[Intent]:
        return [Reply(f) for f in self.greeting()]

    def _set_flags(self, flags: int) -> None:
        self.flags = flags
        if flags & (TIMESTAMP | SEQ_ALL):
            self.fast_kinds = frozenset()
        elif flags & OB_CHECKSUM:
            self.fast_kinds = frozenset({DataKind.DATA, DataKind.HEARTBEAT, DataKind.CHECKSUM})
        else:
            self.fast_kinds = frozenset({DataKind.DATA, DataKind.HEARTBEAT})

    def on_client_message(self, text: str | bytes, now: float) -> list[Intent]:
        self._messages += 1
        out = self._handle(text, now)
        if out and isinstance(out[0], Error | Close):
            self._errors += 1
        return out

    def _handle(self, text: str | bytes, now: float) -> list[Intent]:
        try:
            msg = json.loads(text)
        except (ValueError, TypeError, RecursionError):  # deep nesting ends in RecursionError
            return [_error(ERR_UNKNOWN_EVENT, "invalid JSON")]
        if isinstance(msg, list):
            if self.authenticated:
                return [Relay(text if isinstance(text, str) else text.decode())]
            return [_error(ERR_NOT_AUTHENTICATED, "not authenticated")]
        if not isinstance(msg, dict):
            return [_error(ERR_UNKNOWN_EVENT, "unknown event")]
        event = msg.get("event")
        if event == "ping":
            return [self._pong(msg, now)]
        if event == "subscribe":
            return self._subscribe(msg)
        if event == "unsubscribe":
            return self._unsubscribe(msg)
        if event == "conf":
            return self._conf(msg)
        if event in ("auth", "unauth"):
            self.authenticated = event == "auth"
            frame = text if isinstance(text, str) else text.decode()
            return [Auth(frame)] if event == "auth" else [Relay(frame)]
        return [_error(ERR_UNKNOWN_EVENT, "unknown event")]

    def _pong(self, msg: dict[str, Any], now: float) -> Reply:
        reply: dict[str, object] = {"event": "pong", "ts": int(now * 1000)}
        if "cid" in msg:
            reply["cid"] = msg["cid"]
        return Reply(compact(reply))

    def _conf(self, msg: dict[str, Any]) -> list[Intent]:
        flags = msg.get("flags")
        if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0:
            return [_error(ERR_UNKNOWN_EVENT, "conf: invalid flags")]
        if flags & ~SUPPORTED_FLAGS:
            # DEC_S/TIME_S/BULK change the shared encoding; one session cannot have them alone.
            return [
                _error(
                    ERR_UNKNOWN_EVENT,
                    f"conf: unsupported flags {flags & ~SUPPORTED_FLAGS} "
                    f"(wsgate serves {TIMESTAMP}|{SEQ_ALL}|{OB_CHECKSUM})",
                )
            ]
        self._set_flags(flags)
        return [Conf(flags), Reply(compact({"event": "conf", "status": "OK", "flags": flags}))]

    def _subscribe(self, msg: dict[str, Any]) -> list[Intent]:
        request = {k: v for k, v in msg.items() if k != "event"}
        try:
            key, echo = parse_key(msg)
        except InvalidKey as exc:
            return [_error(exc.code, exc.msg, **request)]
        if key in self.pending or key in self.active.values():
            return [_error(ERR_ALREADY_SUBSCRIBED, "subscribe: dup", **request)]
        sub_id = msg.get("subId")
        if sub_id is not None:
            echo = (*echo, ("subId", sub_id))
        sub = Subscribe(key, (("channel", key.channel), *echo), sub_id)
        self.pending[key] = sub
        return [sub]

    def _unsubscribe(self, msg: dict[str, Any]) -> list[Intent]:
        raw = msg.get("chanId")
        # ccxt sends the chanId as a string ("123"); Bitfinex accepts both.
        chan = _req_id(raw)
        key = self.active.get(chan) if chan is not None else None
        if chan is None or key is None:
            return [_error(ERR_NOT_SUBSCRIBED, "unsubscribe: invalid", chanId=raw)]
        return [Unsubscribe(key, chan)]

    def render_subscribed(self, sub: Subscribe, gateway_chan_id: int) -> str | None:
        self.pending.pop(sub.key, None)
        self.active[gateway_chan_id] = sub.key
        fields: dict[str, object] = {"event": "subscribed"}
        for k, v in sub.echo:
            fields[k] = v
            if k == "channel":
                fields["chanId"] = gateway_chan_id
        return compact(fields)

    def render_subscribe_error(self, sub: Subscribe, code: int, msg: str) -> str | None:
        self.pending.pop(sub.key, None)
        return _error(code, msg, **dict(sub.echo)).frame

    def holds(self, key: SubKey) -> bool:
        return False  # every subscription is answered on its own

    def withdrawn(self) -> list[SubKey]:
        return []

    def render_unsubscribed(self, gateway_chan_id: int) -> str | None:
        self.active.pop(gateway_chan_id, None)
        return compact({"event": "unsubscribed", "status": "OK", "chanId": gateway_chan_id})

    def render(self, event: ChannelData, gateway_chan_id: int, now: float) -> bytes | None:
        flags = self.flags
        if event.kind is _CS and not flags & OB_CHECKSUM:
            return None
        out = f"[{gateway_chan_id}{event.text[event.start : event.end]}"
        if flags & SEQ_ALL:
            self.seq += 1
            out += f",{self.seq}"
        if flags & TIMESTAMP:
            out += "," + (event.ts if event.ts is not None else str(int(now * 1000)))
        return (out + "]").encode()


# --------------------------------------------------------------------------- upstream


def _req_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class BitfinexUpstream:
    """Codec for one upstream connection. ``flags`` are what ``hello()`` asks for."""

    def __init__(self, flags: int = OB_CHECKSUM) -> None:
        self.flags = flags
        self._trailing = bool(flags & SEQ_ALL) + bool(flags & TIMESTAMP)
        self._has_ts = bool(flags & TIMESTAMP)

    def __repr__(self) -> str:
        return f"<BitfinexUpstream flags={self.flags}>"

    def hello(self) -> list[str]:
        return [compact({"event": "conf", "flags": self.flags})] if self.flags else []

    def subscribe_frame(self, key: SubKey, req_id: int) -> str:
        req: dict[str, object] = {"event": "subscribe", "channel": key.channel}
        if key.channel in ("candles", "status"):
            req["key"] = key.param("key")
        else:
            req["symbol"] = key.symbol
            for k, v in key.params:
                req[k] = v
        req["subId"] = str(req_id)
        return compact(req)

    def unsubscribe_frame(self, key: SubKey, channel: int | str, req_id: int) -> str:
        return compact({"event": "unsubscribe", "chanId": channel})

    def ping_frame(self, cid: int) -> str | None:
        return compact({"event": "ping", "cid": cid})

    def on_upstream_frame(self, text: str) -> UpstreamEvent:
        # Fast path: the compact form Bitfinex writes, [CHAN,PAYLOAD...(,SEQ)(,TS)]. Slicing is
        # exact when nothing but digits stands between the separators it relies on. Frames
        # with whitespace go to _spaced_array, anything else to _slow_array (a scanner).
        if text[:1] == "[" and text[-1] == "]":
            comma = text.find(",", 1)
            try:
                # int() also takes whitespace around the digits: harmless, the id is replaced
                chan = int(text[1:comma]) if comma > 1 else -1
            except ValueError:
                chan = -1
            c = text[comma + 1] if chan >= 0 else " "
            if c not in _WS:
                end = len(text) - 1
                ts = None
                if self._trailing:
                    last = text.rfind(",", comma + 1, end)
                    if last <= comma or not text[last + 1 : end].isdecimal():
                        return self._slow_array(text)
                    if self._has_ts:
                        ts = text[last + 1 : end]
                    end = last
                    if self._trailing == 2:
                        end = text.rfind(",", comma + 1, end)
                        if end <= comma or not text[end + 1 : last].isdecimal():
                            return self._slow_array(text)
                if text[end - 1] not in _WS_COMMA:
                    if c != '"':
                        return _new(ChannelData, (chan, _DATA, text, comma, end, ts))
                    # A tagged payload. The four tags Bitfinex sends are compared as they
                    # stand; any other string (or one spelled with escapes) is checked.
                    tag = text[comma + 1 : comma + 5]
                    if tag not in _PLAIN_TAGS or text[comma + 5] not in _TAG_END:
                        q = text.find('"', comma + 2, end)
                        if q < 0 or text.find("\\", comma + 2, q) >= 0:
                            return self._slow_array(text)
                        tag = text[comma + 1 : q + 1]
                    kind = _HB if tag == '"hb"' else _CS if tag == '"cs"' else _DATA
                    return _new(ChannelData, (chan, kind, text, comma, end, ts))
        if text[:1] in _WS_BRACKET:
            return self._spaced_array(text)
        return self._event(text)

    def _spaced_array(self, text: str) -> UpstreamEvent:
        """Whitespace around the chanId and the brackets (``[17, [1, 2]]``, pretty-printed
        frames): the payload is everything between the first comma and the closing bracket,
        so a regular expression finds it; the frame is rebuilt as ``[CHAN,PAYLOAD]``."""
        m = _HEAD.match(text)
        if m is None or self._trailing:
            return self._slow_array(text)
        _, stop = strip_span(text, m.end())
        if text[stop - 1 : stop] != "]":
            return self._slow_array(text)
        _, stop = strip_span(text, m.end(), stop - 1)
        payload = text[m.end() : stop]
        if not payload or payload[-1] == ",":
            return self._slow_array(text)
        kind = _DATA
        if payload[0] == '"':
            q = payload.find('"', 1)
            if q < 0 or payload.find("\\", 1, q) >= 0:
                return self._slow_array(text)
            tag = payload[: q + 1]
            kind = _HB if tag == '"hb"' else _CS if tag == '"cs"' else _DATA
        chan = m.group(1)
        out = f"[{chan},{payload}]"
        return _new(ChannelData, (int(chan), kind, out, len(chan) + 1, len(out) - 1, None))

    def _slow_array(self, text: str) -> UpstreamEvent:
        """A channel frame in any other valid formatting, rebuilt compact around its elements.

        Each element keeps its own text (numbers exactly as the exchange wrote them); only the
        whitespace between the top-level elements goes, so the frame has the shape the fast
        path and every rewrite expect: ``[CHAN,EL,EL...]``.
        """
        start, stop = strip_span(text)
        if text[start : start + 1] != "[":
            return self._event(text[start:stop])
        try:
            spans = elements(text, start)
        except ValueError:
            return Unrecognized(text, "invalid JSON")
        if len(spans) < 2:
            return Unrecognized(text, "array frame without payload")
        chan_text = text[spans[0][0] : spans[0][1]]
        if not chan_text.isdecimal():
            return Unrecognized(text, "array frame without channel id")
        if len(spans) - 1 - self._trailing < 1:
            return Unrecognized(text, "frame shorter than its conf flags")
        parts = [text[a:b] for a, b in spans[1:]]
        payload_n = len(parts) - self._trailing
        tag = _canonical_tag(parts[0])
        if tag is not None:
            parts[0] = tag
        ts = parts[-1] if self._has_ts else None
        head = "[" + chan_text
        body = "," + ",".join(parts[:payload_n])
        out = head + body + "".join("," + p for p in parts[payload_n:]) + "]"
        kind = _HB if tag == '"hb"' else _CS if tag == '"cs"' else _DATA
        return ChannelData(int(chan_text), kind, out, len(head), len(head) + len(body), ts)

    def _event(self, text: str) -> UpstreamEvent:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return Unrecognized(text, "invalid JSON")
        if not isinstance(msg, dict):
            return Unrecognized(text, "not an event")
        event = msg.get("event")
        if event == "info":
            code = msg.get("code")
            if code is None:
                platform = msg.get("platform")
                status = platform.get("status") if isinstance(platform, dict) else None
                return Info(InfoAction.CONNECTED, None, "", msg.get("version"), status)
            action = _INFO_ACTIONS.get(code, InfoAction.OTHER)
            return Info(action, code, str(msg.get("msg", "")))
        if event == "subscribed":
            try:
                key: SubKey | None = parse_key(msg)[0]
            except InvalidKey:
                key = None
            return Subscribed(key, msg.get("chanId", -1), _req_id(msg.get("subId")))
        if event == "unsubscribed":
            return Unsubscribed(msg.get("chanId", -1))
        if event == "error":
            return self._error_event(msg)
        if event == "pong":
            return Pong(msg.get("cid"), msg.get("ts"))
        if event == "conf":
            return ConfAck(int(msg.get("flags", self.flags) or 0), msg.get("status") == "OK")
        if event == "auth":
            return AuthReply(text, msg.get("status") == "OK")
        return Unrecognized(text, f"unknown event {event!r}")

    def _error_event(self, msg: dict[str, Any]) -> SubscribeFailed:
        code = msg.get("code")
        code = code if isinstance(code, int) else ERR_SUB_FAILED
        key: SubKey | None = None
        if "channel" in msg:
            try:
                key = parse_key(msg)[0]
            except InvalidKey:
                key = None
        action = _ERROR_ACTIONS.get(code)
        if action is None:
            action = (
                ErrorAction.FAIL_SUBSCRIPTION
                if key is not None or code in (ERR_SUB_FAILED, ERR_UNKNOWN_CHANNEL, 10001)
                else ErrorAction.OTHER
            )
        return SubscribeFailed(
            code, str(msg.get("msg", "")), action, key, _req_id(msg.get("subId"))
        )


def _canonical_tag(element: str) -> str | None:
    """A payload's leading string tag in its compact spelling (``"te"``), if it is one."""
    if element[:1] != '"' or len(element) > 16:
        return None
    if len(element) <= 5 and element[1:-1] in _TAGS:
        return element
    try:
        value = json.loads(element)  # a tag written with escapes (e.g. "\u0074e")
    except ValueError:
        return None
    return f'"{value}"' if value in _TAGS else None


def is_info_event(text: str) -> bool:
    """Is this upstream frame an ``{"event":"info",...}`` (in any valid JSON formatting)?"""
    if text.startswith('{"event":"info"'):
        return True
    try:  # only a relay's first frame is asked: the parse costs nothing that matters
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(msg, dict) and msg.get("event") == "info"


# --------------------------------------------------------------------------- dialect


State = BookState | TradesState | CandlesState | LastValueState | PassState


class BitfinexDialect:
    name = DialectName.BITFINEX
    shared = True
    url_suffix = ""  # endpoint URLs already end in /ws/2
    # The exchange's own answers when the gateway cannot serve a subscribe (base.refusal).
    limit_error = (10305, "subscribe: limit")
    unavailable_error = (10300, "subscribe: failed")

    def __init__(self, trades_limit: int = 30, candles_limit: int = 120) -> None:
        self.trades_limit = trades_limit
        self.candles_limit = candles_limit

    def __repr__(self) -> str:
        return f"<BitfinexDialect trades_limit={self.trades_limit}>"

    def open_session(self, path: str, query: str = "") -> BitfinexSession:
        if path.rstrip("/") not in ("", "/ws/2"):
            raise InvalidPath(f"bitfinex routes serve / and /ws/2, not {path!r}", 404)
        return BitfinexSession()

    def open_upstream(self, flags: int = OB_CHECKSUM) -> BitfinexUpstream:
        return BitfinexUpstream(flags)

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int:
        flags = OB_CHECKSUM
        if any(f & TIMESTAMP for f in session_flags):
            flags |= TIMESTAMP
        return flags

    def new_state(self, key: SubKey) -> State:
        if key.channel == "book":
            return BookState(key) if key.symbol.startswith("t") else PassState(key)
        if key.channel == "trades":
            return TradesState(key, self.trades_limit)
        if key.channel == "candles":
            return CandlesState(key, self.candles_limit)
        return LastValueState(key)

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes:
        return f"[{gateway_chan_id}{event.text[event.start : event.end]}]".encode()

    def cadence(self, key: SubKey) -> float | None:
        return CHANNEL_CADENCE

    def dedup_id(self, event: ChannelData) -> int | None:
        """Identity of a trade update (``te`` -> 2*id, ``tu`` -> 2*id+1), else ``None``.

        An identity, not an order: during a make-before-break overlap keep a set of recent
        ids and drop a frame whose id is already in it.
        """
        if event.kind is not DataKind.DATA:
            return None
        text, i = event.text, event.start
        tag = text[i + 1 : i + 5]
        if tag not in ('"te"', '"tu"'):
            return None
        if text[i + 5 : i + 7] == ",[":
            j = text.find(",", i + 7, event.end)
            try:
                tid = int(text[i + 7 : j])
            except ValueError:
                return None
        else:  # whitespace inside the payload: [CHAN,"te", [ID, ...]]
            try:
                entry = json.loads("[" + text[i + 1 : event.end] + "]")[1]
                tid = entry[0]
            except (ValueError, IndexError, KeyError, TypeError):
                return None
            if not isinstance(tid, int) or isinstance(tid, bool):
                return None
        return tid * 2 + (tag == '"tu"')
