"""OKX v5 public WebSocket as a pure codec (``/ws/v5/public``; ``/ws/v5/private`` is relayed).

* Requests: ``{"id":"1","op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}``;
  OKX answers once per arg, ``{"id":"1","event":"subscribe","arg":{...},"connId":"..."}``
  (``id`` only when the request had one), errors as ``{"event":"error","code":"60018",...}``.
  Each bot gets its own acks with its own ``id``; the gateway subscribes upstream once per
  channel and instrument.
* Data frames ``{"arg":{"channel":..,"instId":..},"action"?,"data":[...]}`` are routed on the
  ``arg`` object and relayed byte for byte: every bot of a channel receives the same frame.
* Keepalive is the literal text ``ping``/``pong``; the gateway answers bots' pings itself and
  pings upstream (OKX closes a connection after 30 s without data).
* ``books`` is a snapshot then updates chained by ``prevSeqId == previous seqId`` (its
  checksum is deprecated and always 0; it is passed through, never "fixed"). The gateway keeps
  the book: a late joiner gets a ``snapshot`` built from it, with the last ``seqId``; on a
  broken chain the channel is resubscribed and every bot receives the fresh ``snapshot``,
  which OKX clients take as "reset the book".
* ``notice`` 64008 (service upgrade in about 30 s) rotates the connection make-before-break;
  bots do not see it (their session does not move).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    Auth,
    AuthReply,
    ChannelData,
    DataKind,
    Error,
    ErrorAction,
    FrameForm,
    Info,
    InfoAction,
    Integrity,
    Intent,
    Pong,
    Reply,
    SessionBase,
    StateStatistics,
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
from wsgate.dialects.jsonspan import object_spans, strip_span
from wsgate.errors import InvalidPath

__all__ = [
    "CHANNELS",
    "MAX_OPS_PER_HOUR",
    "OkxDialect",
    "OkxSession",
    "OkxState",
    "OkxUpstream",
    "arg_key",
]

log = logging.getLogger("wsgate.dialects.okx")

PUBLIC = "/ws/v5/public"
PRIVATE = "/ws/v5/private"
CHANNELS = frozenset({"tickers", "trades", "books", "books5", "bbo-tbt"})
MAX_OPS_PER_HOUR = 480  # subscribe/unsubscribe/login messages per connection
MAX_ARGS_BYTES = 60_000  # OKX: the args of one request may total 64 KB
BOOK_DEPTH = 400  # levels per side of ``books``
QUIET_CADENCE = 600.0  # seconds of silence before a channel is resubscribed
NOTICE_UPGRADE = "64008"
_LAST_VALUE = frozenset({"tickers", "books5", "bbo-tbt"})
_PREFIX = '{"arg":{"channel":"'
_DATA = DataKind.DATA
_new = tuple.__new__
_conn_ids = itertools.count(0x1A2B3C4D)


def arg_key(arg: object) -> SubKey | None:
    """The shared key of one ``args`` item, or None when OKX has no such public channel."""
    if not isinstance(arg, dict):
        return None
    channel, inst = arg.get("channel"), arg.get("instId")
    if channel not in CHANNELS or not isinstance(inst, str) or not 3 <= len(inst) <= 40:
        return None
    if not all(c.isalnum() or c == "-" for c in inst):
        return None
    return SubKey(DialectName.OKX, channel, inst, (), f"{channel}:{inst}")


def _names(msg: str, key: SubKey) -> bool:
    """Whether OKX's error text names this arg ("...channel:books,instId:FOO-USDT ...")."""
    for form in (f"{key.channel},instId:{key.symbol}", f'"instId":"{key.symbol}"'):
        i = msg.find(form)
        if i >= 0:
            end = i + len(form)
            if end == len(msg) or not (msg[end].isalnum() or msg[end] == "-"):
                return form[0] == '"' or msg[i - 1 : i] in (":", " ", "")
    return False


def _arg(key: SubKey) -> dict[str, str]:
    return {"channel": key.channel, "instId": key.symbol}


def _conn_id() -> str:
    return format(next(_conn_ids) & 0xFFFFFFFF, "08x")


class OkxSession(SessionBase):
    """One bot on ``/ws/v5/public``: per-arg acks with its own ``id``, local ping/pong."""

    def __init__(self, max_ops: int = MAX_OPS_PER_HOUR) -> None:
        super().__init__()
        self.conn_id = _conn_id()
        self.max_ops = max_ops
        self._ops: deque[float] = deque()

    def __repr__(self) -> str:
        return f"<OkxSession {self.conn_id} channels={len(self.subs)}>"

    def _error(self, code: str, msg: str, req_id: object = None) -> Error:
        body: dict[str, object] = {} if req_id is None else {"id": req_id}
        body.update({"event": "error", "code": code, "msg": msg, "connId": self.conn_id})
        return Error(compact(body), int(code))

    def _handle(self, text: str | bytes, now: float) -> list[Intent]:
        if text in ("ping", b"ping"):
            return [Reply("pong")]
        try:
            msg = json.loads(text)
        except (ValueError, TypeError, RecursionError):
            return [self._error("60012", f"Invalid request: {str(text)[:200]}")]
        if not isinstance(msg, dict):
            return [self._error("60012", "Invalid request: expected an object")]
        req_id = msg.get("id")
        if req_id is not None and (not isinstance(req_id, str) or len(req_id) > 32):
            return [self._error("60012", "Invalid request: id must be a string of 1-32 chars")]
        op = msg.get("op")
        if op in ("subscribe", "unsubscribe", "login"):
            window = self._ops
            window.append(now)
            while window and window[0] <= now - 3600.0:
                window.popleft()
            if len(window) > self.max_ops:
                return [self._error("60014", "Requests too frequent.", req_id)]
        if op == "login":
            return [self._error("60012", "Invalid request: log in on /ws/v5/private", req_id)]
        if op not in ("subscribe", "unsubscribe"):
            return [self._error("60012", f"Invalid request: unknown op {op!r}", req_id)]
        args = msg.get("args")
        if not isinstance(args, list) or not args:
            return [self._error("60012", "Invalid request: args must be a non-empty list", req_id)]
        keys: list[SubKey] = []
        for arg in args:
            key = arg_key(arg)
            if key is None:
                shown = compact(arg)[:200]
                return [
                    self._error("60018", f"Wrong URL or channel:{shown} doesn't exist.", req_id)
                ]
            keys.append(key)
        out: list[Intent] = []
        if op == "subscribe":
            for key in dict.fromkeys(keys):
                if key in self.subs:
                    out.append(Reply(self._ack("subscribe", key, req_id)))  # OKX acks again
                    continue
                self.subs[key] = None
                out.append(Subscribe(key, (), req_id))
        else:
            for key in dict.fromkeys(keys):
                out.append(Reply(self._ack("unsubscribe", key, req_id)))
                if key in self.subs:
                    del self.subs[key]
                    out.append(Unsubscribe(key))
        return out

    def _ack(self, event: str, key: SubKey, req_id: object) -> str:
        body: dict[str, object] = {} if req_id is None else {"id": req_id}
        body.update({"event": event, "arg": _arg(key), "connId": self.conn_id})
        return compact(body)

    def render_subscribed(self, sub: Subscribe, gateway_chan_id: int) -> str | None:
        return self._ack("subscribe", sub.key, sub.client_id)

    def render_subscribe_error(self, sub: Subscribe, code: int, msg: str) -> str | None:
        self.subs.pop(sub.key, None)
        return self._error(str(code), msg, sub.client_id).frame


class OkxUpstream:
    """One shared ``/ws/v5/public`` connection."""

    def __init__(self) -> None:
        self._requests: dict[str, tuple[str, SubKey]] = {}
        self._merged: dict[str, list[tuple[str, SubKey]]] = {}
        self._ping_cid: int | None = None

    def __repr__(self) -> str:
        return f"<OkxUpstream pending_requests={len(self._requests)}>"

    def hello(self) -> list[str]:
        return []

    def _op(self, op: str, key: SubKey, req_id: int) -> str:
        self._requests[str(req_id)] = (op, key)
        if len(self._requests) > 4096:  # acks that never came must not accumulate
            self._requests.pop(next(iter(self._requests)))
        return compact({"id": str(req_id), "op": op, "args": [_arg(key)]})

    def subscribe_frame(self, key: SubKey, req_id: int) -> str:
        return self._op("subscribe", key, req_id)

    def unsubscribe_frame(self, key: SubKey, channel: int | str, req_id: int) -> str:
        return self._op("unsubscribe", key, req_id)

    def ping_frame(self, cid: int) -> str | None:
        self._ping_cid = cid
        return "ping"

    def on_upstream_frame(self, text: str) -> UpstreamEvent:
        if text.startswith(_PREFIX):
            q = text.find('"', 19)
            if q > 19 and text.startswith('","instId":"', q):
                r = text.find('"', q + 12)
                if r > 0 and text.startswith("},", r + 1) and "\\" not in text[19:r]:
                    name = text[19:q] + ":" + text[q + 12 : r]
                    return _new(ChannelData, (name, _DATA, text, 0, len(text), None))
        if text == "pong":
            return Pong(self._ping_cid, None)
        spans = object_spans(text)
        if spans is None:
            stripped = text.strip(" \t\r\n")
            if stripped == "pong":
                return Pong(self._ping_cid, None)
            return Unrecognized(text, "not a JSON object")
        if "arg" in spans and "data" in spans:
            start, end = spans["arg"]
            key = arg_key(json.loads(text[start:end]))
            if key is None:
                return Unrecognized(text, "data for an unknown channel")
            start, end = strip_span(text)  # relayed as written, without the whitespace around
            return ChannelData(key.name, _DATA, text[start:end], 0, end - start)
        return self._event(text)

    def coalesce(self, first: str, queue: deque[str]) -> str:
        """Fold queued requests of the same op into ``first`` (OKX counts messages: 480
        subscribe/unsubscribe/login per connection per hour; args may total 64 KB)."""
        if not first.startswith('{"id":"'):
            return first
        try:
            head = json.loads(first)
        except ValueError:
            return first
        op, args = head.get("op"), head.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            return first
        size = len(first)
        while queue and queue[0].startswith('{"id":"') and size + len(queue[0]) < MAX_ARGS_BYTES:
            try:
                nxt = json.loads(queue[0])
            except ValueError:
                break
            if nxt.get("op") != op:
                break
            size += len(queue.popleft())
            args.extend(nxt.get("args", ()))
            req = self._requests.pop(str(nxt.get("id")), None)
            if req is not None:  # its acks come per arg under the first request's id
                self._merged.setdefault(str(head["id"]), []).append(req)
        return compact(head)

    def _event(self, text: str) -> UpstreamEvent:
        msg = json.loads(text)
        event = msg.get("event")
        req = msg.get("id")
        op, req_key = self._requests.get(req, ("", None)) if isinstance(req, str) else ("", None)
        merged: list[tuple[str, SubKey]] = []
        if event != "subscribe" and event != "unsubscribe" and isinstance(req, str):
            self._requests.pop(req, None)
            merged = self._merged.pop(req, [])
        req_id = int(req) if isinstance(req, str) and req.isdigit() else None
        if event in ("subscribe", "unsubscribe"):
            key = arg_key(msg.get("arg")) or req_key
            if key is None:
                return Unrecognized(text, f"{event} ack for an unknown arg")
            if event == "subscribe":
                return Subscribed(key, key.name, req_id)
            return Unsubscribed(key.name, req_id)
        if event == "error":
            code = str(msg.get("code", ""))
            text_msg = str(msg.get("msg", ""))
            action = (
                ErrorAction.FAIL_SUBSCRIPTION
                if op == "subscribe" and code != "60014"
                else ErrorAction.UNSUBSCRIBE_FAILED
                if op == "unsubscribe"
                else ErrorAction.OTHER
            )
            retry: tuple[SubKey, ...] = ()
            if action is ErrorAction.FAIL_SUBSCRIPTION and req_key is not None and merged:
                # One error for a request of several bots' args, none of them subscribed:
                # refuse the arg the message names, send the others again.
                keys = [req_key, *(k for o, k in merged if o == "subscribe")]
                named = [k for k in keys if _names(text_msg, k)]
                req_key = named[0] if named else req_key
                retry = tuple(k for k in keys if k != req_key)
            return SubscribeFailed(
                int(code) if code.isdigit() else -1,
                text_msg,
                action,
                req_key,
                req_id,
                retry,
            )
        if event == "notice":
            if str(msg.get("code")) == NOTICE_UPGRADE:
                # Not forwarded (code None): the bots' sessions do not move.
                return Info(InfoAction.RECONNECT, None, f"notice 64008: {msg.get('msg', '')}")
            return Info(InfoAction.OTHER, None, str(msg.get("msg", "")))
        if event == "login":
            return AuthReply(text, str(msg.get("code")) == "0")
        return Unrecognized(text, f"event {event!r}")


Level = list[str]


def _price(level: object) -> Decimal | None:
    if isinstance(level, list) and level and isinstance(level[0], str):
        try:
            return Decimal(level[0])
        except InvalidOperation:
            return None
    return None


class OkxState:
    """What a late joiner needs: the last frame of snapshot-like channels; for ``books`` the
    book itself and the ``seqId`` chain."""

    def __init__(self, key: SubKey) -> None:
        self.key = key
        self.keeps_last = key.channel in _LAST_VALUE
        self.book = key.channel == "books"
        self.seq: int | None = None
        self.ts = "0"
        self._bids: dict[Decimal, Level] = {}
        self._asks: dict[Decimal, Level] = {}
        self._last: ChannelData | None = None
        self._frames = 0
        self._gaps = 0

    def __repr__(self) -> str:
        return f"<OkxState {self.key} frames={self._frames} seq={self.seq} gaps={self._gaps}>"

    def apply(self, event: ChannelData) -> Integrity:
        self._frames += 1
        if self.keeps_last:
            self._last = event
            return Integrity.OK
        if not self.book:
            return Integrity.OK
        try:
            msg = json.loads(event.text[event.start : event.end])
            push = msg["data"][0]
            seq, prev = int(push["seqId"]), int(push.get("prevSeqId", -1))
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return Integrity.OK  # not a book push this state understands: relay it as is
        if msg.get("action") == "snapshot" or prev == -1:
            self._bids, self._asks = {}, {}
        elif self.seq is None:
            return Integrity.OK  # updates of a subscription being replaced; its snapshot comes
        elif prev < self.seq and seq <= self.seq:
            # Already in the book (seqId is the book's, on every connection): a second
            # stream overlapping the first one (a move, a cluster hand-over) repeats it.
            return Integrity.DUPLICATE
        elif prev != self.seq:
            self._gaps += 1
            log.warning("%s: sequence gap: prevSeqId=%d after seqId=%d", self.key, prev, self.seq)
            return Integrity.MISMATCH  # resubscribe: the fresh snapshot resets every bot
        self._levels(self._bids, push.get("bids", ()))
        self._levels(self._asks, push.get("asks", ()))
        self.seq, self.ts = seq, str(push.get("ts", self.ts))
        return Integrity.OK

    @staticmethod
    def _levels(side: dict[Decimal, Level], levels: object) -> None:
        if not isinstance(levels, list):
            return
        for level in levels:
            price = _price(level)
            if price is None or len(level) < 2:
                continue
            try:
                gone = Decimal(level[1]) == 0
            except InvalidOperation:
                continue
            if gone:
                side.pop(price, None)
            else:
                side[price] = level

    def reset(self) -> None:
        self._last = None
        self.seq = None
        self._bids, self._asks = {}, {}

    def rebase(self, event: ChannelData) -> list[ChannelData] | None:
        """A cluster hand-over's snapshot on a live book: no snapshot for the bots. Older
        than (or as old as) their book: dropped, and the updates up to their seqId are
        duplicates. Newer: one update chained on their seqId (``prevSeqId``) that turns
        their book into the snapshot's (``seqId``), levels gone as size ``"0"``."""
        if not self.book or self.seq is None:
            return None
        try:
            msg = json.loads(event.text[event.start : event.end])
            push = msg["data"][0]
            seq = int(push["seqId"])
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            return None
        if msg.get("action") != "snapshot":
            return None
        if seq <= self.seq:
            return []
        new_bids: dict[Decimal, Level] = {}
        new_asks: dict[Decimal, Level] = {}
        self._levels(new_bids, push.get("bids", ()))
        self._levels(new_asks, push.get("asks", ()))
        changed = {
            side: [
                *([lv[0], "0", "0", "0"] for p, lv in sorted(old.items()) if p not in new),
                *(lv for p, lv in sorted(new.items()) if old.get(p) != lv),
            ]
            for side, old, new in (("asks", self._asks, new_asks), ("bids", self._bids, new_bids))
        }
        ts = str(push.get("ts", self.ts))
        update = {
            **changed,
            "ts": ts,
            "checksum": 0,
            "prevSeqId": self.seq,
            "seqId": seq,
        }
        text = compact({"arg": _arg(self.key), "action": "update", "data": [update]})
        ev = ChannelData(self.key.name, _DATA, text, 0, len(text))
        self._bids, self._asks = new_bids, new_asks
        self.seq, self.ts = seq, ts
        return [ev]

    def snapshot_event(self) -> ChannelData | None:
        if not self.book:
            return self._last
        if self.seq is None:
            return None
        bids = [self._bids[p] for p in sorted(self._bids, reverse=True)[:BOOK_DEPTH]]
        asks = [self._asks[p] for p in sorted(self._asks)[:BOOK_DEPTH]]
        push = {
            "asks": asks,
            "bids": bids,
            "ts": self.ts,
            "checksum": 0,
            "prevSeqId": -1,
            "seqId": self.seq,
        }
        arg = _arg(self.key)
        text = compact({"arg": arg, "action": "snapshot", "data": [push]})
        return ChannelData(self.key.name, _DATA, text, 0, len(text))

    def statistics(self) -> StateStatistics:
        depth = len(self._bids) + len(self._asks) if self.book else int(self._last is not None)
        has = self.seq is not None if self.book else self._last is not None
        return StateStatistics(self.key, self._frames, 0, self._gaps, depth, has)


class OkxDialect:
    name = DialectName.OKX
    shared = True
    url_suffix = PUBLIC

    def __repr__(self) -> str:
        return "<OkxDialect>"

    def open_session(self, path: str, query: str = "") -> OkxSession:
        path = path.rstrip("/")
        if path == PUBLIC:
            return OkxSession()
        if path in (PRIVATE, "/ws/v5/business"):
            return _PrivateSession(path)
        raise InvalidPath(f"okx routes serve {PUBLIC} and {PRIVATE}, not {path!r}")

    def open_upstream(self, flags: int = 0) -> OkxUpstream:
        return OkxUpstream()

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int:
        return 0

    def new_state(self, key: SubKey) -> OkxState:
        return OkxState(key)

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes:
        return event.text.encode()

    def cadence(self, key: SubKey) -> float | None:
        # OKX pushes on change only, so silence on a quiet instrument proves little, and each
        # resubscribe spends 2 of the connection's 480 ops an hour: a channel counts as stale
        # after 10 minutes of silence (routes.<name>.channel_cadence overrides per channel).
        return QUIET_CADENCE

    def dedup_id(self, event: ChannelData) -> int | None:
        """``tradeId`` of trades, ``seqId`` of books: monotonic per channel."""
        channel = str(event.channel).partition(":")[0]
        name = {"trades": '"tradeId"', "books": '"seqId"'}.get(channel)
        if name is None:
            return None
        text = event.text
        i = text.rfind(name) if channel == "trades" else text.find(name)
        if i < 0:
            return None
        i += len(name)
        n = len(text)
        while i < n and text[i] in ' \t\r\n:"':  # any valid spacing, quoted or not
            i += 1
        j = i
        while j < n and "0" <= text[j] <= "9":
            j += 1
        return int(text[i:j]) if j > i else None


class _PrivateSession(OkxSession):
    """``/ws/v5/private`` (and ``/business``): a dedicated 1:1 relay from the first byte, so
    the login and every order stay on the bot's own upstream connection."""

    private = True  # refused at the handshake on a market_data route

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def on_open(self, now: float) -> list[Intent]:
        return [Auth("", self.path)]
