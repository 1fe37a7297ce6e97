"""Binance spot streams as a pure codec: paths, SUBSCRIBE ids, combined wrapper, limits.

Upstream connections always use the combined endpoint (``/stream``) so every frame names its
stream in a fixed prefix ``{"stream":"<name>","data":...}``: the routing key is read by slicing
and the ``/ws`` (plain) form is the ``data`` slice, never a re-encoding. Binance counts at most
5 incoming messages per second per connection; sessions enforce that here with ``now``
(WebSocket ping/pong frames never reach the codec, so only text frames count).
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    Auth,
    ChannelData,
    Close,
    DataKind,
    Error,
    ErrorAction,
    FrameForm,
    Intent,
    Reply,
    Result,
    ServerShutdown,
    SessionBase,
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
from wsgate.dialects.binance_names import StreamNames
from wsgate.dialects.binance_state import BinanceState
from wsgate.dialects.jsonspan import int_field, member_span, strip_span, value_end
from wsgate.errors import InvalidPath

__all__ = [
    "MAX_MESSAGES_PER_SECOND",
    "MAX_STREAMS",
    "WS_API_PATH",
    "BinanceDialect",
    "BinanceSession",
    "BinanceState",
    "BinanceUpstream",
    "StreamNames",
    "parse_stream",
]

log = logging.getLogger("wsgate.dialects.binance")

MAX_MESSAGES_PER_SECOND = 5
WS_API_PATH = "/ws-api/v3"  # the WebSocket API (requests, orders, user data): relayed
MAX_STREAMS = 1024
# A diff-depth stream pushes an event only when the book changed (the speed is the most
# often it may): a quiet symbol is silent for as long as its book does not move, so only
# a long silence counts as a stale stream (routes.<name>.channel_cadence overrides it).
QUIET_DEPTH_CADENCE = 600.0

_INTERVALS = frozenset(
    {
        "1s",
        "1m",
        "3m",
        "5m",
        "15m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "8h",
        "12h",
        "1d",
        "3d",
        "1w",
        "1M",
    }
)
_FIXED_LOWER = frozenset({"ticker_1h", "ticker_4h", "ticker_1d", "depth5", "depth10", "depth20"})
_EVENTS = {
    e.lower(): e
    for e in ("trade", "aggTrade", "bookTicker", "miniTicker", "ticker", "avgPrice", "depth")
}
_SYMBOL = re.compile(r"[a-z0-9]{2,30}")
_LISTEN_KEY = re.compile(r"[A-Za-z0-9]{20,128}")
_ALL_MARKET = {
    s.lower(): s
    for s in (
        "!miniTicker@arr",
        "!ticker@arr",
        "!ticker_1h@arr",
        "!ticker_4h@arr",
        "!ticker_1d@arr",
        "!bookTicker",
    )
}
_PREFIX = '{"stream":"'
_CLOSER = {"{": "}", "[": "]"}
_DATA_OPEN = ('","data":{', '","data":[')
_DATA_CLOSE = ("}}", "]}")
# The same wrapper with insignificant whitespace, in either member order (no escapes in the
# stream name; a name with escapes goes to the full parse).
_W = r"[ \t\n\r]*"
_SPACED_HEAD = re.compile(rf'\{{{_W}"stream"{_W}:{_W}"([^"\\]+)"{_W},{_W}"data"{_W}:{_W}(?=[\[{{])')
_DATA_HEAD = re.compile(rf'\{{{_W}"data"{_W}:{_W}(?=[\[{{])')
_STREAM_TAIL = re.compile(rf',{_W}"stream"{_W}:{_W}"([^"\\]+)"{_W}\}}\Z')
# Hot path: module constants and tuple.__new__ skip enum descriptor lookups and the
# NamedTuple's Python-level __new__.
_DATA = DataKind.DATA
_COMBINED = FrameForm.COMBINED
_new = tuple.__new__


def _value_fills(text: str, start: int, stop: int) -> int:
    """End of the JSON value at ``text[start]`` when only whitespace follows it up to
    ``stop``, else 0: a member after ``data`` (``{"stream":…,"data":{},"x":{}}``) must not
    end up in the payload slice."""
    if _CLOSER.get(text[start]) != text[strip_span(text, start, stop)[1] - 1]:
        return 0  # cheap first: the closing bracket before stop does not match
    try:
        end = value_end(text, start)
    except ValueError:
        return 0
    return end if strip_span(text, end, stop)[0] == stop else 0


def _masked_path(path: str) -> str:
    """``path`` for an error message, listen-key-like segments hidden."""
    return "/".join("***" if _LISTEN_KEY.fullmatch(seg) else seg for seg in path.split("/"))


_DEPTH_SPEEDS = ("100ms", "1000ms")
_NAMES = StreamNames(
    DialectName.BINANCE,
    _ALL_MARKET,
    _SYMBOL,
    _EVENTS,
    _FIXED_LOWER,
    _INTERVALS,
    {ch: _DEPTH_SPEEDS for ch in ("depth", "depth5", "depth10", "depth20")},
)


def parse_stream(raw: object) -> SubKey | None:
    """Canonical key of a spot stream name, or ``None`` when Binance has no such stream."""
    return _NAMES.parse(raw)


def _result(result: object, req_id: object) -> Reply:
    return Reply(compact({"result": result, "id": req_id}))


def _error(code: int, msg: str, req_id: object = None) -> Error:
    return Error(compact({"error": {"code": code, "msg": msg}, "id": req_id}), code)


@dataclass
class _Request:
    """One SUBSCRIBE of a bot: its id, its new streams and those not confirmed yet (Binance
    takes or refuses a request as a whole: until answered, its confirmed streams are held)."""

    req_id: object
    keys: tuple[SubKey, ...]
    left: set[SubKey]


class BinanceSession(SessionBase):
    """Downstream codec: ``/ws`` sessions get plain payloads, ``/stream`` ones the wrapper.

    A subclass for another Binance host names its stream grammar (``parse_key``), its rate
    and whether a listen key may be SUBSCRIBEd to (``listen_key_subscribe``).
    """

    max_rate: int = MAX_MESSAGES_PER_SECOND
    listen_key_subscribe: ClassVar[bool] = True  # binance-connector's user_data (spot only)

    @staticmethod
    def parse_key(raw: object) -> SubKey | None:
        return parse_stream(raw)

    def __init__(
        self,
        combined: bool,
        streams: Sequence[SubKey] = (),
        private_path: str | None = None,
    ) -> None:
        super().__init__()
        self.form = FrameForm.COMBINED if combined else FrameForm.PLAIN
        self.initial = tuple(dict.fromkeys(streams))
        # /ws/<listenKey> and /ws-api/v3 are private from the first byte: a relay on a
        # dedicated upstream at this path, never shared, never replayed.
        self.private_path = private_path
        self._recent: deque[float] = deque()
        # SUBSCRIBE requests not answered yet, by each of their streams (confirmed or not).
        self._asked: dict[SubKey, _Request] = {}
        self._withdrawn: list[SubKey] = []  # streams a refused request took back (withdrawn())

    def __repr__(self) -> str:
        kind = " private" if self.private_path else ""
        name = type(self).__name__
        return f"<{name} form={self.form.value}{kind} streams={len(self.subs)}>"

    @property
    def private(self) -> bool:
        return self.private_path is not None

    def on_open(self, now: float) -> list[Intent]:
        if self.private_path is not None:
            return [Auth("", self.private_path)]
        for key in self.initial:
            self.subs[key] = None
        return [Subscribe(key) for key in self.initial]

    def _over_rate(self, now: float) -> bool:
        recent = self._recent
        recent.append(now)
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        return len(recent) > self.max_rate

    def _handle(self, text: str | bytes, now: float) -> list[Intent]:
        if self._over_rate(now):
            return [Close(1008, "Too many messages")]
        try:
            msg = json.loads(text)
        except (ValueError, TypeError, RecursionError):  # deep nesting ends in RecursionError
            return [_error(3, "Invalid JSON: expected value")]
        if not isinstance(msg, dict):
            return [_error(2, "Invalid request: expected an object")]
        req_id = msg.get("id")
        if req_id is not None and (
            isinstance(req_id, bool)
            or not isinstance(req_id, int | str)
            or (isinstance(req_id, int) and req_id < 0)
        ):
            return [_error(2, "Invalid request: request ID must be an unsigned integer")]
        method = msg.get("method")
        params = msg.get("params", [])
        if method is None:
            return [_error(2, "Invalid request: missing field `method`", req_id)]
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return self._sub_unsub(method, params, req_id)
        if method == "LIST_SUBSCRIPTIONS":
            return [_result([k.name for k in self.subs], req_id)]
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(method, params, req_id)
        return [
            _error(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
                req_id,
            )
        ]

    def _sub_unsub(self, method: str, params: object, req_id: object) -> list[Intent]:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return [_error(1, "Invalid value type: expected a list of stream names", req_id)]
        keys: list[SubKey] = []
        for p in params:
            key = self.parse_key(p)
            if key is None:
                if method == "SUBSCRIBE" and self.listen_key_subscribe and _LISTEN_KEY.fullmatch(p):
                    return [self._go_private(params, req_id)]
                return [_error(2, f"Invalid request: invalid stream name {p!r}", req_id)]
            keys.append(key)
        if method == "SUBSCRIBE":
            asked = list(dict.fromkeys(keys))
            new = [k for k in asked if k not in self.subs]
            if len(self.subs) + len(new) > MAX_STREAMS:
                return [_error(2, f"Invalid request: more than {MAX_STREAMS} streams", req_id)]
            if not new:
                return [_result(None, req_id)]
            # Answered once every new stream is confirmed, or refused as a whole when one is
            # not; a stream asked for earlier belongs to that earlier request.
            request = _Request(req_id, tuple(new), set(new))
            out: list[Intent] = []
            for key in new:
                self.subs[key] = None
                self._asked[key] = request
                out.append(Subscribe(key, (), req_id))
            return out
        replies: list[Intent] = []
        out = []
        for key in dict.fromkeys(keys):
            if key in self.subs:
                del self.subs[key]
                out.append(Unsubscribe(key))
                # A SUBSCRIBE still waiting for this stream waits no more: the bot itself
                # withdrew it (its other streams, if confirmed, flow from its answer on).
                pending = self._asked.pop(key, None)
                if pending is not None:
                    pending.left.discard(key)
                    if not pending.left:
                        replies.append(self._answer(pending))
        return [*replies, _result(None, req_id), *out]

    def _answer(self, request: _Request) -> Reply:
        """The request's success: its streams are no longer held."""
        for key in request.keys:
            if self._asked.get(key) is request:
                del self._asked[key]
        return _result(None, request.req_id)

    def _go_private(self, params: list[str], req_id: object) -> Auth:
        """SUBSCRIBE to a listen key (binance-connector's ``user_data``): this session's
        traffic becomes private. It moves to a dedicated upstream in its own form, which
        is asked for the session's streams and the listen key in one request with the
        client's id, so the client sees exactly the one answer it waits for."""
        names = [k.name for k in self.subs]
        names += [p for p in params if p not in names]
        frame = compact({"method": "SUBSCRIBE", "params": names, "id": req_id})
        path = "/stream" if self.form is FrameForm.COMBINED else "/ws"
        return Auth(frame, path)

    def _property(self, method: str, params: object, req_id: object) -> list[Intent]:
        if not isinstance(params, list) or not params or params[0] != "combined":
            return [_error(2, "Invalid request: unknown property", req_id)]
        if method == "GET_PROPERTY":
            return [_result(self.form is FrameForm.COMBINED, req_id)]
        if len(params) != 2 or not isinstance(params[1], bool):
            return [_error(1, "Invalid value type: expected Boolean", req_id)]
        self.form = FrameForm.COMBINED if params[1] else FrameForm.PLAIN
        return [_result(None, req_id)]

    def render_subscribed(self, sub: Subscribe, gateway_chan_id: int) -> str | None:
        """Binance answers the request, not each stream: ``{"result":null}`` once every
        stream of the request is live (at once when it already was, shared). Until then it
        is held (:meth:`holds`): no data before the answer, none of a refused request."""
        request = self._asked.get(sub.key)
        if request is None or sub.key not in request.left:
            return None
        request.left.discard(sub.key)
        if request.left:
            return None
        return self._answer(request).frame

    def holds(self, key: SubKey) -> bool:
        return key in self._asked

    def render_subscribe_error(self, sub: Subscribe, code: int, msg: str) -> str | None:
        """The venue's error for the request, once; the request's other new streams are
        taken back with it (:meth:`withdrawn`), as Binance subscribes none of them."""
        self.subs.pop(sub.key, None)
        request = self._asked.get(sub.key)
        if request is None:  # not a request's (a /stream?streams= one), or answered long ago
            return _error(code, msg, sub.client_id).frame
        for key in request.keys:
            if self._asked.get(key) is request:
                del self._asked[key]
                if key != sub.key and key in self.subs:
                    del self.subs[key]
                    self._withdrawn.append(key)
        return _error(code, msg, request.req_id).frame

    def withdrawn(self) -> list[SubKey]:
        out, self._withdrawn = self._withdrawn, []
        return out

    def render(self, event: ChannelData, gateway_chan_id: int, now: float) -> bytes | None:
        if self.form is FrameForm.COMBINED:
            return event.text.encode()
        return event.text[event.start : event.end].encode()


class BinanceUpstream:
    """Codec for one combined-stream upstream connection; remembers request ids -> keys.

    Spot and USD-M futures write the same wrapper and replies: one codec serves both.
    """

    def __init__(self) -> None:
        self._requests: dict[int, tuple[str, tuple[SubKey, ...]]] = {}

    def __repr__(self) -> str:
        return f"<BinanceUpstream pending_requests={len(self._requests)}>"

    def hello(self) -> list[str]:
        return []

    def subscribe_batch_frame(self, keys: Sequence[SubKey], req_id: int) -> str:
        """One SUBSCRIBE for many streams: the 5 messages/s budget favours batches."""
        self._requests[req_id] = ("SUBSCRIBE", tuple(keys))
        return compact({"method": "SUBSCRIBE", "params": [k.name for k in keys], "id": req_id})

    def subscribe_frame(self, key: SubKey, req_id: int) -> str:
        return self.subscribe_batch_frame([key], req_id)

    def unsubscribe_batch_frame(self, keys: Sequence[SubKey], req_id: int) -> str:
        self._requests[req_id] = ("UNSUBSCRIBE", tuple(keys))
        return compact({"method": "UNSUBSCRIBE", "params": [k.name for k in keys], "id": req_id})

    def unsubscribe_frame(self, key: SubKey, channel: int | str, req_id: int) -> str:
        return self.unsubscribe_batch_frame([key], req_id)

    def ping_frame(self, cid: int) -> str | None:
        return None  # no app-level ping; it would spend the 5 msgs/s budget: use WS pings

    def on_upstream_frame(self, text: str) -> UpstreamEvent:
        # Fast path: the documented compact wrapper {"stream":"<name>","data":<payload>}. The
        # checks are what make slicing exact: a name without escapes, a payload that starts
        # right after the colon and whose closing bracket is the wrapper's last-but-one byte.
        # (A third member after "data" whose value is an object or array would pass them;
        # Binance documents exactly these two members, and any whitespace sends such a
        # frame to the exact _slow path.)
        if text.startswith(_PREFIX):
            q = text.find('"', 11)
            if (
                q > 11
                and text.startswith(_DATA_OPEN, q)
                and text.endswith(_DATA_CLOSE)
                and text.find("\\", 11, q) < 0
            ):
                stream = text[11:q]
                if stream[0] == "!" and stream.startswith("!serverShutdown"):
                    return ServerShutdown(text)
                return _new(ChannelData, (stream, _DATA, text, q + 9, len(text) - 1, None))
        elif text.startswith('{"data":') and text.endswith('"}'):
            # The same two members the other way round (servers that sort keys write this).
            i = text.rfind(',"stream":"')
            if (
                i > 8
                and text.find('"', i + 11) == len(text) - 2
                and text[i - 1] == _CLOSER.get(text[8:9])
                and text.find("\\", i + 11) < 0
            ):
                stream = text[i + 11 : -2]
                if stream.startswith("!serverShutdown"):
                    return ServerShutdown(text)
                return _new(ChannelData, (stream, _DATA, text, 8, i, None))
        return self._slow(text)

    def _slow(self, text: str) -> UpstreamEvent:
        """Every other valid formatting: whitespace, member order, escapes, extra members.

        Surrounding whitespace is cut off first (a client expecting an object may drop a
        frame that starts with a space). The same two-member wrapper with whitespace inside
        (spaced or pretty-printed servers) is found by regular expressions; anything else is
        parsed once to classify it, and the payload slice comes from the scanner. Either
        way numbers keep the exchange's text.
        """
        start, end = strip_span(text)
        if start or end != len(text):
            text = text[start:end]
        if text[-1:] == "}":
            m = _SPACED_HEAD.match(text)
            if m is not None:
                data_end = _value_fills(text, m.end(), len(text) - 1)
                if data_end:
                    return self._located(m.group(1), text, m.end(), data_end)
            m = _DATA_HEAD.match(text)
            if m is not None:
                i = text.rfind('"stream"')
                j = text.rfind(",", m.end(), i) if i > m.end() else -1
                t = _STREAM_TAIL.match(text, j) if j > 0 else None
                if t is not None:
                    data_end = _value_fills(text, m.end(), j)
                    if data_end:
                        return self._located(t.group(1), text, m.end(), data_end)
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return Unrecognized(text, "invalid JSON")
        if not isinstance(msg, dict):
            return ChannelData("", DataKind.DATA, text, 0, len(text))  # a plain payload
        if "stream" in msg and "data" in msg:
            stream = msg["stream"]
            span = member_span(text, "data")
            if not isinstance(stream, str) or not stream or span is None:
                return Unrecognized(text, "combined frame without a stream name")
            if stream.startswith("!serverShutdown"):
                return ServerShutdown(text)
            return ChannelData(stream, DataKind.DATA, text, span[0], span[1])
        if msg.get("e") == "serverShutdown":
            return ServerShutdown(text)
        if "result" in msg or "error" in msg or "id" in msg:
            return self._reply(text, msg)
        # A plain /ws upstream (user-data relay): the whole frame is the payload.
        return ChannelData("", DataKind.DATA, text, 0, len(text))

    @staticmethod
    def _located(stream: str, text: str, start: int, end: int) -> UpstreamEvent:
        if stream.startswith("!serverShutdown"):
            return ServerShutdown(text)
        return ChannelData(stream, DataKind.DATA, text, start, end)

    def _reply(self, text: str, msg: dict[str, Any] | None = None) -> UpstreamEvent:
        if msg is None:
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                return Unrecognized(text, "invalid JSON")
            if not isinstance(parsed, dict):
                return Unrecognized(text, "not an object")
            msg = parsed
        raw_id = msg.get("id")
        req_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
        method, keys = self._requests.pop(req_id, ("", ())) if req_id is not None else ("", ())
        err = msg.get("error", msg if "code" in msg and "msg" in msg else None)
        if isinstance(err, dict):
            code = err.get("code")
            return SubscribeFailed(
                code if isinstance(code, int) else -1,
                str(err.get("msg", "")),
                ErrorAction.FAIL_SUBSCRIPTION if method == "SUBSCRIBE" else ErrorAction.OTHER,
                keys[0] if len(keys) == 1 else None,
                req_id,
            )
        if "result" not in msg:
            return Unrecognized(text, "reply without result")
        subscribed = tuple(Subscribed(k, k.name, req_id) for k in keys if method == "SUBSCRIBE")
        unsubscribed = tuple(Unsubscribed(k.name, req_id) for k in keys if method == "UNSUBSCRIBE")
        return Result(req_id, msg["result"], subscribed, unsubscribed)


def _cadence(key: SubKey) -> float | None:
    ch = key.channel
    if ch in ("trade", "aggTrade", "bookTicker"):
        return None  # event driven: silence on a quiet symbol is not a fault
    if ch == "depth":
        return QUIET_DEPTH_CADENCE
    if ch.startswith("depth"):
        return 0.1 if key.param("speed") == "100ms" else 1.0
    if ch.startswith("kline_"):
        return 1.0 if ch == "kline_1s" else 2.0
    return 1.0  # tickers, miniTicker, avgPrice and the all-market arrays


class BinanceDialect:
    """Binance spot; the base of the other Binance hosts (:mod:`.binance_usdm`), which name
    their own session codec, state and cadences."""

    name = DialectName.BINANCE
    shared = True
    url_suffix = "/stream"
    # The WebSocket API's path (its sessions go to the route's ``serves = "ws_api"``
    # endpoints) and the listen-key REST path under ``rest_url`` (POST/PUT/DELETE pass).
    ws_api_path: ClassVar[str] = WS_API_PATH
    listen_key_rest: ClassVar[str] = "/userDataStream"
    session_type: ClassVar[type[BinanceSession]] = BinanceSession
    state_type: ClassVar[type[BinanceState]] = BinanceState
    # Binance answers a request it cannot serve with code 2 (invalid request) and its id.
    limit_error = (2, "Invalid request: too many streams")
    unavailable_error = (2, "Invalid request: stream unavailable, try again later")

    def __init__(self) -> None:
        self._dedup_token: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    def open_session(self, path: str, query: str = "") -> BinanceSession:
        path = path.rstrip("/")
        if path == self.ws_api_path:
            return BinanceSession(False, private_path=self.ws_api_path)
        session = self._stream_session(path, query)
        if session is not None:
            return session
        raise InvalidPath(
            "binance routes serve /ws, /ws/<stream>, /ws/<listenKey>, /stream and"
            f" {WS_API_PATH}, not {_masked_path(path)!r}"
        )

    def _stream_session(self, path: str, query: str) -> BinanceSession | None:
        """A session on ``/stream?streams=``, ``/ws``, ``/ws/<streams>`` or ``/ws/<listenKey>``
        (``None`` for any other path)."""
        new, parse = self.session_type, self.session_type.parse_key
        if path == "/stream":
            raw = parse_qs(query).get("streams", [""])[0]
            names = [n for n in raw.split("/") if n]
            keys = [parse(n) for n in names]
            bad = [n for n, k in zip(names, keys, strict=True) if k is None]
            if bad:
                raise InvalidPath(f"{self.name}: invalid stream name(s) {', '.join(bad)}", 400)
            return new(True, [k for k in keys if k is not None])
        if path == "/ws":
            return new(False)
        if path.startswith("/ws/"):
            segments = path[4:].split("/")
            keys = [parse(s) for s in segments]
            if all(k is not None for k in keys):
                return new(False, [k for k in keys if k is not None])
            if len(segments) == 1 and _LISTEN_KEY.fullmatch(segments[0]):
                return new(False, private_path=self.user_stream_path(segments[0]))
            # Binance itself accepts any /ws/<name> and then stays silent; so do we.
            log.info(
                "%s session on unknown stream path %r: no data will flow",
                self.name,
                _masked_path(path),
            )
            return new(False)
        return None

    def user_stream_path(self, listen_key: str) -> str:
        """The upstream path of a ``/ws/<listenKey>`` session."""
        return f"/ws/{listen_key}"

    def open_upstream(self, flags: int = 0) -> BinanceUpstream:
        return BinanceUpstream()

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int:
        return 0

    def new_state(self, key: SubKey) -> BinanceState:
        return self.state_type(key)

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes:
        if form is _COMBINED:
            return event.text.encode()
        return event.text[event.start : event.end].encode()

    def cadence(self, key: SubKey) -> float | None:
        return _cadence(key)

    def dedup_id(self, event: ChannelData) -> int | None:
        """Trade ``t``, aggTrade ``a`` or diff-depth ``u``: monotonic per stream."""
        stream = event.channel
        if not isinstance(stream, str):
            return None
        token = self._dedup_token.get(stream, "")
        if token == "":
            key = self.session_type.parse_key(stream)
            ch = key.channel if key else ""
            token = {"trade": "t", "aggTrade": "a", "depth": "u"}.get(ch)
            self._dedup_token[stream] = token
        if token is None:
            return None
        return int_field(event.text, token, event.start, event.end)
