"""Bybit v5 public streams (spot and linear) as a pure codec; ``/v5/private`` is relayed.

* Bots connect to ``/v5/public/spot`` or ``/v5/public/linear``; the path is the category of
  every topic they name, and each category lives on its own upstream path
  (:meth:`BybitDialect.upstream_suffix`).
* ``{"req_id":"x","op":"subscribe","args":["orderbook.50.BTCUSDT",...]}`` is acknowledged
  once per request, echoing the bot's ``req_id`` (pybit finds its pending request by it), in
  the category's own shape: spot ``{"success":true,"ret_msg":"subscribe","conn_id":..,
  "req_id":..,"op":"subscribe"}``, linear with ``"ret_msg":""``. Pings
  ``{"op":"ping"}`` are answered locally in the category's pong shape.
* Upstream requests: spot takes at most 10 args a request; queued subscribes are coalesced
  up to that (linear: up to 100, the args of a connection may total 21,000 characters).
* Data frames ``{"topic":..,"type":"snapshot"|"delta",...}`` are routed on ``topic`` and
  relayed byte for byte. ``orderbook.{50,200,1000}`` is a snapshot then deltas; a snapshot or
  ``u == 1`` (the engine restarted) resets the book; a delta whose ``u`` does not move forward
  is a broken stream and the topic is resubscribed (every bot then gets the new snapshot,
  which Bybit clients take as a reset). Late joiners get a snapshot of the gateway's book.
  Linear ``tickers`` deltas are merged so that a late joiner's snapshot is complete.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    Auth,
    ChannelData,
    DataKind,
    Error,
    ErrorAction,
    FrameForm,
    Integrity,
    Intent,
    Pong,
    Reply,
    Result,
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
from wsgate.dialects.jsonspan import object_spans, str_member, strip_span
from wsgate.errors import InvalidPath

__all__ = [
    "CATEGORIES",
    "MAX_ARGS",
    "BybitDialect",
    "BybitSession",
    "BybitState",
    "BybitUpstream",
    "topic_key",
]

log = logging.getLogger("wsgate.dialects.bybit")

CATEGORIES = ("spot", "linear")
PUBLIC = "/v5/public/"
PRIVATE = "/v5/private"
MAX_ARGS = {"spot": 10, "linear": 100}  # args per subscribe request (linear: our own cap)
_DEPTHS = {"spot": ("1", "50", "200", "1000"), "linear": ("1", "50", "200", "1000")}
_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")
_PREFIX = '{"topic":"'
_DATA = DataKind.DATA
_new = tuple.__new__
_conn_ids = itertools.count(1)


def topic_key(category: str, topic: object) -> SubKey | None:
    """The shared key of a topic in a category, or None when Bybit has no such public topic."""
    if not isinstance(topic, str) or category not in CATEGORIES:
        return None
    parts = topic.split(".")
    params: tuple[tuple[str, str], ...]
    if len(parts) == 2 and parts[0] in ("tickers", "publicTrade"):
        channel, symbol, params = parts[0], parts[1], ()
    elif len(parts) == 3 and parts[0] == "orderbook" and parts[1] in _DEPTHS[category]:
        channel, symbol, params = "orderbook", parts[2], (("depth", parts[1]),)
    else:
        return None
    if not _SYMBOL.fullmatch(symbol):
        return None
    params = (("category", category), *params)
    return SubKey(DialectName.BYBIT, channel, symbol, params, topic)


def _names(reason: str, key: SubKey) -> bool:
    """Whether Bybit's ``ret_msg`` names this topic (``...,topic:orderbook.50.FOOUSDT``)."""
    i = reason.find(key.name)
    while i >= 0:
        end = i + len(key.name)
        if end == len(reason) or not reason[end].isalnum():
            return True
        i = reason.find(key.name, i + 1)
    return False


def _conn_id() -> str:
    return f"gw{next(_conn_ids):08x}-wsgate"


class BybitSession(SessionBase):
    """One bot on ``/v5/public/<category>``: one ack per request with its ``req_id``."""

    def __init__(self, category: str) -> None:
        super().__init__()
        self.category = category
        self.conn_id = _conn_id()
        # request group: (req_id, op) -> topics still waiting for the upstream confirmation
        self._groups: dict[int, tuple[object, set[SubKey]]] = {}
        self._group_of: dict[SubKey, int] = {}
        self._next_group = itertools.count(1)

    def __repr__(self) -> str:
        return f"<BybitSession {self.category} topics={len(self.subs)}>"

    def _reply(self, op: str, req_id: object, ok: bool, msg: str) -> str:
        """The category's own ack/pong shape (spot and linear differ)."""
        body: dict[str, object] = {"success": ok, "ret_msg": msg, "conn_id": self.conn_id}
        if req_id is not None:
            body["req_id"] = req_id
        elif self.category == "linear":
            body["req_id"] = ""
        body["op"] = op
        return compact(body)

    def _error(self, op: str, req_id: object, msg: str) -> Error:
        return Error(self._reply(op, req_id, False, msg), 10001)

    def _handle(self, text: str | bytes, now: float) -> list[Intent]:
        try:
            msg = json.loads(text)
        except (ValueError, TypeError, RecursionError):
            return [self._error("", None, "error:request not json")]
        if not isinstance(msg, dict):
            return [self._error("", None, "error:request not json")]
        req_id = msg.get("req_id")
        op = msg.get("op")
        if op == "ping":
            ok_msg = "pong"
            return [Reply(self._reply("ping", req_id, True, ok_msg))]
        if op == "auth":
            return [self._error("auth", req_id, "error:auth is served on /v5/private")]
        if op not in ("subscribe", "unsubscribe"):
            return [self._error(str(op or ""), req_id, f"error:unsupported op {op!r}")]
        args = msg.get("args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            return [self._error(op, req_id, "error:args must be a list of topics")]
        if len(args) > MAX_ARGS[self.category]:
            limit = MAX_ARGS[self.category]
            return [self._error(op, req_id, f"error:args size >{limit}")]
        keys: list[SubKey] = []
        for topic in args:
            key = topic_key(self.category, topic)
            if key is None:
                return [self._error(op, req_id, f"error:handler not found,topic:{topic}")]
            keys.append(key)
        ok = "subscribe" if self.category == "spot" else ""
        if op == "unsubscribe":
            out: list[Intent] = [Reply(self._reply(op, req_id, True, ok and "unsubscribe"))]
            for key in dict.fromkeys(keys):
                if key in self.subs:
                    del self.subs[key]
                    self._forget(key)
                    out.append(Unsubscribe(key))
            return out
        new = [k for k in dict.fromkeys(keys) if k not in self.subs]
        if not new:
            return [Reply(self._reply(op, req_id, True, ok))]
        group = next(self._next_group)
        self._groups[group] = (req_id, set(new))
        intents: list[Intent] = []
        for key in new:
            self.subs[key] = None
            self._group_of[key] = group
            intents.append(Subscribe(key, (), req_id))
        return intents

    def _forget(self, key: SubKey) -> None:
        group = self._group_of.pop(key, None)
        if group is not None and group in self._groups:
            self._groups[group][1].discard(key)

    def render_subscribed(self, sub: Subscribe, gateway_chan_id: int) -> str | None:
        """The request's ack once its last topic is live upstream."""
        group = self._group_of.pop(sub.key, None)
        if group is None or group not in self._groups:
            return None
        req_id, waiting = self._groups[group]
        waiting.discard(sub.key)
        if waiting:
            return None
        del self._groups[group]
        return self._reply(
            "subscribe", req_id, True, "subscribe" if self.category == "spot" else ""
        )

    def render_subscribe_error(self, sub: Subscribe, code: int, msg: str) -> str | None:
        self.subs.pop(sub.key, None)
        group = self._group_of.pop(sub.key, None)
        if group is None or group not in self._groups:
            return None
        req_id, waiting = self._groups.pop(group)
        for key in waiting:
            self._group_of.pop(key, None)
        return self._reply("subscribe", req_id, False, f"error:{msg},topic:{sub.key.name}")


class BybitUpstream:
    """One shared ``/v5/public/<category>`` connection; acks are matched by ``req_id``."""

    def __init__(self) -> None:
        self._requests: dict[str, tuple[str, list[SubKey]]] = {}
        self._ping_cid: int | None = None

    def __repr__(self) -> str:
        return f"<BybitUpstream pending_requests={len(self._requests)}>"

    def hello(self) -> list[str]:
        return []

    def _op(self, op: str, key: SubKey, req_id: int) -> str:
        self._requests[str(req_id)] = (op, [key])
        if len(self._requests) > 4096:
            self._requests.pop(next(iter(self._requests)))
        return compact({"req_id": str(req_id), "op": op, "args": [key.name]})

    def subscribe_frame(self, key: SubKey, req_id: int) -> str:
        return self._op("subscribe", key, req_id)

    def unsubscribe_frame(self, key: SubKey, channel: int | str, req_id: int) -> str:
        return self._op("unsubscribe", key, req_id)

    def ping_frame(self, cid: int) -> str | None:
        self._ping_cid = cid
        return compact({"req_id": f"p{cid}", "op": "ping"})

    def coalesce(self, first: str, queue: Any) -> str:
        """Fold queued requests of the same op into one (spot: at most 10 args)."""
        try:
            head = json.loads(first)
        except ValueError:
            return first
        op, req = head.get("op"), str(head.get("req_id", ""))
        if op not in ("subscribe", "unsubscribe") or req not in self._requests:
            return first
        keys = self._requests[req][1]
        limit = MAX_ARGS[keys[0].param("category")] if keys else 10
        while queue and len(head["args"]) < limit:
            try:
                nxt = json.loads(queue[0])
            except ValueError:
                break
            nreq = str(nxt.get("req_id", ""))
            if nxt.get("op") != op or nreq not in self._requests:
                break
            queue.popleft()
            head["args"].extend(nxt["args"])
            keys.extend(self._requests.pop(nreq)[1])
        return compact(head)

    def on_upstream_frame(self, text: str) -> UpstreamEvent:
        if text.startswith(_PREFIX):
            q = text.find('"', 10)
            if q > 10 and "\\" not in text[10:q]:
                return _new(ChannelData, (text[10:q], _DATA, text, 0, len(text), None))
        spans = object_spans(text)
        if spans is None:
            return Unrecognized(text, "not a JSON object")
        if "topic" in spans and "data" in spans:
            topic = str_member(text, spans, "topic")
            if topic is None:
                return Unrecognized(text, "topic is not a string")
            start, end = strip_span(text)  # relayed as written, without the whitespace around
            return ChannelData(topic, _DATA, text[start:end], 0, end - start)
        msg = json.loads(text)
        op = msg.get("op")
        req = str(msg.get("req_id") or "")
        if op in ("ping", "pong") or msg.get("ret_msg") == "pong":
            cid = int(req[1:]) if req[:1] == "p" and req[1:].isdigit() else self._ping_cid
            return Pong(cid, None)
        if op in ("subscribe", "unsubscribe"):
            _sent, keys = self._requests.pop(req, ("", []))
            if msg.get("success") is False:
                reason = str(msg.get("ret_msg", ""))
                failed = next((k for k in keys if _names(reason, k)), keys[0] if keys else None)
                if op != "subscribe":
                    return SubscribeFailed(10001, reason, ErrorAction.OTHER, failed, None)
                if "already subscribed" in reason and failed is not None:
                    # It is live on this connection: a confirmation, not a refusal (the other
                    # topics of such a request are sent again when their answer times out).
                    return Result(None, msg, (Subscribed(failed, failed.name),))
                # Bybit refuses the whole request: the topics merged with the bad one (other
                # bots' topics, often) go again at once, without it.
                retry = tuple(k for k in keys if k != failed)
                return SubscribeFailed(
                    10001, reason, ErrorAction.FAIL_SUBSCRIPTION, failed, None, retry
                )
            if op == "subscribe":
                return Result(None, msg, tuple(Subscribed(k, k.name) for k in keys))
            return Result(None, msg, (), tuple(Unsubscribed(k.name) for k in keys))
        return Unrecognized(text, f"op {op!r}")


def _dec(text: object) -> Decimal | None:
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


class BybitState:
    """Late-joiner state per topic: the order book (snapshot + deltas, ``u`` moving forward),
    the merged linear ticker, or the last frame (depth 1, spot tickers)."""

    def __init__(self, key: SubKey) -> None:
        self.key = key
        self.category = key.param("category")
        depth = key.param("depth")
        self.book = key.channel == "orderbook" and depth != "1"
        self.depth = int(depth) if depth else 0
        self.merge_ticker = key.channel == "tickers" and self.category == "linear"
        self.keeps_last = (key.channel == "orderbook" and depth == "1") or (
            key.channel == "tickers" and not self.merge_ticker
        )
        self.u: int | None = None
        self.seq: object = None
        self.ts: object = None
        self._bids: dict[Decimal, list[str]] = {}
        self._asks: dict[Decimal, list[str]] = {}
        self._ticker: dict[str, object] | None = None
        self._last: ChannelData | None = None
        self._frames = 0
        self._gaps = 0
        self._overlap = 0  # after a rebase: deltas up to this u are the old stream's

    def __repr__(self) -> str:
        return f"<BybitState {self.category}:{self.key.name} u={self.u} gaps={self._gaps}>"

    def apply(self, event: ChannelData) -> Integrity:
        self._frames += 1
        if self.keeps_last:
            self._last = event
            return Integrity.OK
        if not (self.book or self.merge_ticker):
            return Integrity.OK
        try:
            msg = json.loads(event.text[event.start : event.end])
            kind, data = msg.get("type"), msg["data"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return Integrity.OK
        if self.merge_ticker:
            if kind == "snapshot" or self._ticker is None:
                self._ticker = dict(data) if isinstance(data, dict) else None
            elif isinstance(data, dict):
                self._ticker.update(data)
            self.ts, self.seq = msg.get("ts"), msg.get("cs")
            return Integrity.OK
        return self._book(kind, data, msg.get("ts"))

    def _book(self, kind: object, data: Any, ts: object) -> Integrity:
        if not isinstance(data, dict):
            return Integrity.OK
        try:
            u = int(data["u"])
        except (KeyError, TypeError, ValueError):
            return Integrity.OK
        if kind == "snapshot" or u == 1:  # a snapshot, or the engine restarted: reset
            self._bids, self._asks = {}, {}
        elif self.u is None:
            return Integrity.OK  # deltas of a subscription being replaced: its snapshot comes
        elif u <= self._overlap:
            return Integrity.DUPLICATE  # after a rebase: the bots have it from the old stream
        elif u <= self.u:
            self._gaps += 1
            log.warning("%s %s: u=%d after u=%d", self.category, self.key.name, u, self.u)
            return Integrity.MISMATCH  # resubscribe: a fresh snapshot for every bot
        for side, levels in ((self._bids, data.get("b")), (self._asks, data.get("a"))):
            for level in levels if isinstance(levels, list) else ():
                if not (isinstance(level, list) and len(level) >= 2):
                    continue
                price, size = _dec(level[0]), _dec(level[1])
                if price is None or size is None:
                    continue
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = level
        self.u, self.seq, self.ts = u, data.get("seq"), ts
        self._overlap = 0
        return Integrity.OK

    def reset(self) -> None:
        self._last = None
        self._ticker = None
        self.u = None
        self._overlap = 0
        self._bids, self._asks = {}, {}

    def rebase(self, event: ChannelData) -> list[ChannelData] | None:
        """A cluster hand-over's snapshot on a live book (``u`` is the book's, on every
        connection): no snapshot for the bots. Not newer than their book: dropped, and the
        deltas up to their ``u`` are duplicates. Newer: one delta with its ``u`` that turns
        their book into it, levels gone as size ``"0"``."""
        if not self.book or self.u is None:
            return None
        try:
            msg = json.loads(event.text[event.start : event.end])
            data = msg["data"]
            u = int(data["u"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if msg.get("type") != "snapshot" or u == 1:
            return None  # u = 1: the engine restarted, a real reset
        if u <= self.u:
            self._overlap = self.u
            return []
        out: dict[str, list[list[str]]] = {}
        for name, old in (("b", self._bids), ("a", self._asks)):
            new: dict[Decimal, list[str]] = {}
            for level in data.get(name) or ():
                price = _dec(level[0]) if isinstance(level, list) and len(level) >= 2 else None
                if price is not None and _dec(level[1]) not in (None, 0):
                    new[price] = level
            out[name] = [
                *([lv[0], "0"] for p, lv in sorted(old.items()) if p not in new),
                *(lv for p, lv in sorted(new.items()) if old.get(p) != lv),
            ]
            if name == "b":
                self._bids = new
            else:
                self._asks = new
        delta = {"s": self.key.symbol, "b": out["b"], "a": out["a"], "u": u, "seq": data.get("seq")}
        ts = msg.get("ts", self.ts)
        body = {"topic": self.key.name, "type": "delta", "ts": ts, "data": delta, "cts": ts}
        self.u, self.seq, self.ts = u, data.get("seq"), ts
        text = compact(body)
        return [ChannelData(self.key.name, _DATA, text, 0, len(text))]

    def snapshot_event(self) -> ChannelData | None:
        if self.keeps_last or not (self.book or self.merge_ticker):
            return self._last
        if self.merge_ticker:
            if self._ticker is None:
                return None
            body: dict[str, object] = {"topic": self.key.name, "type": "snapshot"}
            body.update({"data": self._ticker, "cs": self.seq, "ts": self.ts})
        else:
            if self.u is None:
                return None
            n = self.depth
            bids = [self._bids[p] for p in sorted(self._bids, reverse=True)[:n]]
            asks = [self._asks[p] for p in sorted(self._asks)[:n]]
            data = {"s": self.key.symbol, "b": bids, "a": asks, "u": self.u, "seq": self.seq}
            body = {"topic": self.key.name, "ts": self.ts, "type": "snapshot", "data": data}
            body["cts"] = self.ts
        text = compact(body)
        return ChannelData(self.key.name, _DATA, text, 0, len(text))

    def statistics(self) -> StateStatistics:
        depth = len(self._bids) + len(self._asks)
        has = self.snapshot_event() is not None
        return StateStatistics(self.key, self._frames, 0, self._gaps, depth, has)


class BybitDialect:
    name = DialectName.BYBIT
    shared = True
    url_suffix = PUBLIC + "linear"  # opened at start; /spot opens on first use

    def __init__(self) -> None:
        self._dedup: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return "<BybitDialect>"

    def upstream_suffix(self, key: SubKey) -> str:
        return PUBLIC + key.param("category")

    def open_session(self, path: str, query: str = "") -> BybitSession:
        path = path.rstrip("/")
        if path.startswith(PUBLIC) and path[len(PUBLIC) :] in CATEGORIES:
            return BybitSession(path[len(PUBLIC) :])
        if path == PRIVATE:
            return _PrivateSession(path + (f"?{query}" if query else ""))
        raise InvalidPath(
            f"bybit routes serve {PUBLIC}spot, {PUBLIC}linear and {PRIVATE}, not {path!r}"
        )

    def open_upstream(self, flags: int = 0) -> BybitUpstream:
        return BybitUpstream()

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int:
        return 0

    def new_state(self, key: SubKey) -> BybitState:
        return BybitState(key)

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes:
        return event.text.encode()

    def cadence(self, key: SubKey) -> float | None:
        if key.channel == "orderbook" and key.param("depth") == "1":
            return 3.0  # re-sent every 3 s even when nothing changes
        return None  # pushed on change: silence on a quiet symbol proves nothing

    def dedup_id(self, event: ChannelData) -> int | None:
        """Book ``u``; the last trade id ``i`` of a publicTrade frame (spot ids are digits,
        linear ones UUIDs: hashed, only compared within this process)."""
        topic = str(event.channel)
        text = event.text
        if topic.startswith("orderbook."):
            name = '"u"'
        elif topic.startswith("publicTrade."):
            name = '"i"'
        else:
            return None
        i = text.rfind(name)
        if i < 0:
            return None
        i += len(name)
        n = len(text)
        while i < n and text[i] in ' \t\r\n:"':
            i += 1
        j = i
        while j < n and (text[j].isalnum() or text[j] == "-"):
            j += 1
        token = text[i:j]
        if not token:
            return None
        return int(token) if token.isdigit() else hash(token)


class _PrivateSession(BybitSession):
    """``/v5/private``: a dedicated 1:1 relay from the first byte (auth is per connection)."""

    private = True  # refused at the handshake on a market_data route

    def __init__(self, path: str) -> None:
        super().__init__("linear")
        self.path = path

    def on_open(self, now: float) -> list[Intent]:
        return [Auth("", self.path)]
