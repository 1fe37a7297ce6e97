"""The contract between the runtime hub and an exchange dialect.

A dialect is a set of pure codecs: no asyncio, no sockets, no clock reads. Callers pass
``now`` (seconds). The hub stays dialect-agnostic by talking only to the four objects
defined here.

Data flow, for the hub author::

    handshake path/query  -> Dialect.open_session(path, query)    -> SessionCodec
                             (raises errors.InvalidPath: answer HTTP .http_status)
    session open          -> SessionCodec.on_open(now)             -> [Intent] (greeting, streams)
    client text frame     -> SessionCodec.on_client_message(t, now) -> [Intent]
    upstream connected    -> Dialect.open_upstream(flags).hello()   -> frames to send first
    upstream text frame   -> UpstreamCodec.on_upstream_frame(t)     -> UpstreamEvent
    ChannelData event     -> ChannelState.apply(ev)                 -> Integrity (one state per sub)
                          -> Dialect.rewrite(ev, gw_id, form)       -> bytes, ONCE per form
                          -> per session: shared[codec.form] if ev.kind in codec.fast_kinds
                                          else codec.render(ev, gw_id, now) (None: skip)

Intents (client → hub):

* ``Subscribe(key, echo, client_id)`` - share one upstream subscription per ``key``
  (reference counted). When it is live, answer with ``codec.render_subscribed(intent, gw_id)``
  (may be ``None``: Binance has no per-subscription ack), then send the late-joiner snapshot
  (``state.snapshot_event()`` delivered like any other ChannelData). On an upstream failure use
  ``codec.render_subscribe_error(intent, code, msg)``. A venue that answers a request as a
  whole (Binance) holds a confirmed key's data while ``codec.holds(key)`` (its request waits
  for other keys), and after an error ``codec.withdrawn()`` names the request's other keys:
  the hub releases them without an answer, as the venue would never have subscribed them.
* ``Unsubscribe(key, gateway_chan_id)`` - drop this session's reference, then send
  ``codec.render_unsubscribed(gw_id)`` (may be ``None``).
* ``Reply(frame)`` / ``Error(frame, code)`` - send ``frame`` to this client as is.
* ``Conf(flags)`` - informational: the session changed its per-session flags; the hub may want
  upstream flags that serve them (``Dialect.upstream_flags_for``).
* ``Auth(frame, upstream_path)`` - the session authenticates: give it a dedicated upstream
  (``upstream_path`` appended to the endpoint URL when not ``None``), send ``frame`` there and
  from then on relay both directions 1:1. Never replay it after a reconnect.
* ``Relay(frame)`` - send ``frame`` on the session's dedicated upstream as is.
* ``Close(code, reason)`` - close the session with this WebSocket close code.

Frames to clients: ``str`` values are sent as text; ``bytes`` values are UTF-8 JSON produced
once for many sessions and must also be sent as TEXT frames
(``websockets``: ``await ws.send(data, text=True)``).

Numbers in data frames are never re-serialised: every rewrite is string slicing, so
``29999`` stays ``29999`` and ``1e-8`` stays ``1e-8``.

Upstream events (exchange -> hub), beside ``ChannelData``:

* ``Subscribed(key, channel, req_id)`` (Bitfinex) or ``Result(req_id, ..., subscribed=...,
  unsubscribed=...)`` (Binance acks a whole batch by request id): map ``channel`` (the routing
  key later found in ``ChannelData.channel``) to the subscription.
* ``SubscribeFailed.action``: PLACE_ELSEWHERE (connection full, move it), ALREADY_SUBSCRIBED,
  FAIL_SUBSCRIPTION (tell the sessions via ``render_subscribe_error``), UNSUBSCRIBE_FAILED.
* ``Info.action`` RECONNECT / ``ServerShutdown``: rotate make-before-break; MAINTENANCE_START:
  degraded, no reconnect loop; MAINTENANCE_END: resubscribe every channel.
* ``Pong(cid, ts)`` answers ``UpstreamCodec.ping_frame(cid)`` (``None``: use WebSocket pings).
* ``Integrity.MISMATCH`` (book checksum) -> resubscribe that channel and ``state.reset()``;
  ``Integrity.GAP`` (Binance depth ``U`` != previous ``u`` + 1) -> downstream books must resync.
* Trade channels (:class:`TradeTape`): ``reset()`` keeps what the sessions received, so the
  snapshot of the next upstream subscription (connection lost, 20051, maintenance, a move)
  is compared with it: ``DUPLICATE`` -> drop the frame; ``BRIDGED`` -> deliver
  ``state.take_bridge()`` (the missed trades as live updates, maybe none) instead of it;
  ``ANNOUNCED`` -> deliver it: the snapshot does not reach back, the sessions may have missed
  trades, and it holds only trades they do not have.

Liveness and rotation: ``Dialect.cadence(key)`` is the nominal seconds between frames of one
channel (Bitfinex heartbeat 15 s; Binance update speed; ``None`` for event-driven streams where
silence proves nothing); apply your own multiple and grace. ``Dialect.dedup_id(ev)`` is an
identity (trade id, aggTrade id, depth ``u``) for dropping frames seen on both connections
during a make-before-break overlap; keep a small set of recent ids per channel.

Sharded venues: a dialect whose venue serves streams on several upstream paths (Binance
USD-M ``/public`` and ``/market``, Bybit ``/v5/public/spot`` and ``/v5/public/linear``) also
implements :class:`ShardedDialect`: ``upstream_suffix(key)`` is the path a subscription must
live on (a stream on the wrong path is acknowledged and then silent), so the route keeps a
pool per suffix and the hub places, moves and rotates a key only among connections opened
with its suffix. ``url_suffix`` is then the suffix of the connections opened at start.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol, runtime_checkable

from wsgate.core.types import DialectName

__all__ = [
    "Auth",
    "AuthReply",
    "Bridge",
    "ChannelData",
    "ChannelState",
    "Close",
    "Coalescing",
    "Conf",
    "ConfAck",
    "DataKind",
    "Dialect",
    "Error",
    "ErrorAction",
    "FrameForm",
    "Info",
    "InfoAction",
    "Integrity",
    "Intent",
    "Pong",
    "Refusal",
    "Relay",
    "Reply",
    "Result",
    "ServerShutdown",
    "SessionBase",
    "SessionCodec",
    "SessionStatistics",
    "ShardedDialect",
    "StateStatistics",
    "SubKey",
    "Subscribe",
    "SubscribeFailed",
    "Subscribed",
    "TapeStatistics",
    "TradeTape",
    "Unrecognized",
    "Unsubscribe",
    "Unsubscribed",
    "UpstreamCodec",
    "UpstreamEvent",
    "compact",
    "refusal",
    "upstream_suffix",
]


def compact(obj: object) -> str:
    """JSON the way exchanges write it: no spaces. Only for control frames, never for data."""
    return json.dumps(obj, separators=(",", ":"))


# --------------------------------------------------------------------------- keys and enums


@dataclass(frozen=True, slots=True)
class SubKey:
    """Canonical, hashable identity of one shareable upstream subscription.

    ``name`` is the normalised wire identity (Bitfinex ``book:tBTCUSD:P0:F0:25``, Binance the
    stream name ``btcusdt@depth@100ms``); ``channel``/``symbol``/``params`` are its parts.
    """

    dialect: DialectName
    channel: str
    symbol: str
    params: tuple[tuple[str, str], ...] = ()
    name: str = ""

    def param(self, name: str, default: str = "") -> str:
        for k, v in self.params:
            if k == name:
                return v
        return default

    def __str__(self) -> str:
        return f"{self.dialect.value}:{self.name}"


class FrameForm(StrEnum):
    """Which shared encoding of a data frame a session consumes."""

    PLAIN = "plain"  # Bitfinex: gateway chanId prefix; Binance: payload without wrapper
    COMBINED = "combined"  # Binance combined-stream wrapper {"stream":…,"data":…}


class DataKind(StrEnum):
    DATA = "data"
    HEARTBEAT = "heartbeat"
    CHECKSUM = "checksum"


class ErrorAction(StrEnum):
    """What the hub should do with a failed upstream request."""

    PLACE_ELSEWHERE = "place_elsewhere"  # connection full (Bitfinex 10305)
    ALREADY_SUBSCRIBED = "already_subscribed"  # 10301: treat as confirmed on that connection
    FAIL_SUBSCRIPTION = "fail_subscription"  # unknown symbol/channel: tell the sessions, drop
    UNSUBSCRIBE_FAILED = "unsubscribe_failed"  # 10400/10401: forget the channel
    OTHER = "other"


class InfoAction(StrEnum):
    CONNECTED = "connected"  # greeting; see Info.platform_status
    RECONNECT = "reconnect"  # Bitfinex 20051: rotate make-before-break
    MAINTENANCE_START = "maintenance_start"  # 20060: pause, degraded, no reconnect loop
    MAINTENANCE_END = "maintenance_end"  # 20061: resubscribe every channel
    OTHER = "other"


class Integrity(StrEnum):
    """Verdict of ChannelState.apply on one frame."""

    OK = "ok"
    MISMATCH = "mismatch"  # checksum differs: resubscribe this channel (fresh snapshot)
    GAP = "gap"  # update ids not contiguous: downstream books must resync
    # Trade tapes (the sessions never get the same trade twice):
    DUPLICATE = "duplicate"  # the sessions already have this frame's trade: drop it
    BRIDGED = "bridged"  # a resumed channel's snapshot reached back to what the sessions have:
    #                      deliver TradeTape.take_bridge() (the trades they missed) instead
    ANNOUNCED = "announced"  # it did not: deliver it as the announcement of a gap (it holds
    #                          only trades the sessions do not have)


# --------------------------------------------------------------------------- intents


@dataclass(frozen=True, slots=True)
class Subscribe:
    key: SubKey
    echo: tuple[tuple[str, object], ...] = ()  # request fields the ack must echo, in order
    client_id: object = None  # Bitfinex subId / Binance request id


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    key: SubKey
    gateway_chan_id: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    frame: str


@dataclass(frozen=True, slots=True)
class Error:
    frame: str
    code: int


@dataclass(frozen=True, slots=True)
class Conf:
    flags: int


@dataclass(frozen=True, slots=True)
class Auth:
    frame: str
    upstream_path: str | None = None


@dataclass(frozen=True, slots=True)
class Relay:
    frame: str


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Intent = Subscribe | Unsubscribe | Reply | Error | Conf | Auth | Relay | Close


# --------------------------------------------------------------------------- upstream events


class ChannelData(NamedTuple):
    """One channel frame, located but not parsed (hot path: a NamedTuple is cheapest to build).

    ``channel`` is the routing key (Bitfinex upstream chanId, Binance stream name).
    ``text[start:end]`` is the dialect-specific slice a rewrite reuses; ``ts`` is an upstream
    timestamp token when the upstream connection appends one.
    """

    channel: int | str
    kind: DataKind
    text: str
    start: int
    end: int
    ts: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    key: SubKey | None
    channel: int | str  # the routing key ChannelData.channel will carry
    req_id: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    channel: int | str
    req_id: int | None = None


@dataclass(frozen=True, slots=True)
class SubscribeFailed:
    code: int
    msg: str
    action: ErrorAction
    key: SubKey | None = None
    req_id: int | None = None
    # Keys the exchange refused only because they shared the request with ``key`` (OKX
    # answers a request with one bad arg by one error and subscribes none of its args):
    # sent again at once, without the bad one.
    retry: tuple[SubKey, ...] = ()


@dataclass(frozen=True, slots=True)
class Info:
    action: InfoAction
    code: int | None = None
    msg: str = ""
    version: int | None = None
    platform_status: int | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    cid: int | None
    ts: int | None


@dataclass(frozen=True, slots=True)
class Result:
    """A request/response reply (Binance ``{"result":…,"id":N}``), already matched to keys."""

    req_id: int | None
    result: object = None
    subscribed: tuple[Subscribed, ...] = ()
    unsubscribed: tuple[Unsubscribed, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfAck:
    flags: int
    ok: bool


@dataclass(frozen=True, slots=True)
class AuthReply:
    frame: str
    ok: bool


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """The exchange announced a close of this connection: rotate make-before-break now."""

    frame: str


@dataclass(frozen=True, slots=True)
class Unrecognized:
    frame: str
    reason: str


UpstreamEvent = (
    ChannelData
    | Subscribed
    | Unsubscribed
    | SubscribeFailed
    | Info
    | Pong
    | Result
    | ConfAck
    | AuthReply
    | ServerShutdown
    | Unrecognized
)


@dataclass(frozen=True, slots=True)
class StateStatistics:
    key: SubKey
    frames: int
    mismatches: int
    gaps: int
    depth: int  # book levels / trades / candles held
    has_snapshot: bool


class Bridge(NamedTuple):
    """The missed trades of a bridged resume, as live updates in delivery order."""

    frames: list[ChannelData]
    trades: int  # trades among them (a Bitfinex trade is a te and a tu frame)


@dataclass(frozen=True, slots=True)
class TapeStatistics:
    """How a trade channel's resumes went (counters only go up)."""

    bridged: int = 0  # resumes whose snapshot reached back: missed trades sent as updates
    announced: int = 0  # resumes whose snapshot did not: a gap, announced with the snapshot
    trades_bridged: int = 0  # trades delivered by bridges
    duplicates: int = 0  # frames dropped because the sessions already had their trade


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    messages: int  # client frames seen
    errors: int  # of which answered with an Error or Close
    subscriptions: int  # pending + active
    flags: int = 0  # Bitfinex conf flags


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class SessionCodec(Protocol):
    """One per downstream session. Never raises on client input."""

    form: FrameForm
    fast_kinds: frozenset[DataKind]  # kinds delivered as the shared bytes of ``form`` unchanged

    def greeting(self) -> list[str]: ...

    def on_open(self, now: float) -> list[Intent]: ...

    def on_client_message(self, text: str | bytes, now: float) -> list[Intent]: ...

    def subscriptions(self) -> list[SubKey]:
        """Keys this session holds (pending or active): release them all when it closes."""
        ...

    def statistics(self) -> SessionStatistics: ...

    def render_subscribed(self, sub: Subscribe, gateway_chan_id: int) -> str | None: ...

    def render_subscribe_error(self, sub: Subscribe, code: int, msg: str) -> str | None: ...

    def holds(self, key: SubKey) -> bool:
        """Whether ``key``'s data must wait although it is live: its request is not
        answered yet (a venue that answers a request as a whole)."""
        ...

    def withdrawn(self) -> list[SubKey]:
        """Keys given up since the last call because their request was refused as a whole
        (each named once): the session no longer holds them and is told nothing more."""
        ...

    def render_unsubscribed(self, gateway_chan_id: int) -> str | None: ...

    def render(self, event: ChannelData, gateway_chan_id: int, now: float) -> bytes | None: ...


class SessionBase(ABC):
    """The defaults of :class:`SessionCodec` for a session whose keys live in ``subs``: no
    greeting, nothing on open, the counters of :meth:`statistics`, and data sent as the
    venue wrote it. A dialect's session subclasses it, writes ``_handle`` and overrides
    where its venue differs (Binance subscribes its path's streams on open and has two
    forms; Bitfinex keeps its own session)."""

    form: FrameForm = FrameForm.PLAIN
    fast_kinds: frozenset[DataKind] = frozenset({DataKind.DATA})

    def __init__(self) -> None:
        self.subs: dict[SubKey, None] = {}  # an ordered set: pending and active keys
        self._messages = 0
        self._errors = 0

    def greeting(self) -> list[str]:
        return []

    def on_open(self, now: float) -> list[Intent]:
        return []

    def subscriptions(self) -> list[SubKey]:
        return list(self.subs)

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(self._messages, self._errors, len(self.subs))

    def on_client_message(self, text: str | bytes, now: float) -> list[Intent]:
        self._messages += 1
        out = self._handle(text, now)
        if out and isinstance(out[0], Error | Close):
            self._errors += 1
        return out

    @abstractmethod
    def _handle(self, text: str | bytes, now: float) -> list[Intent]:
        """The intents of one client frame (counted by :meth:`on_client_message`)."""

    def holds(self, key: SubKey) -> bool:
        return False  # a key's data flows once the key is live

    def withdrawn(self) -> list[SubKey]:
        return []  # a refusal takes back only the refused key

    def render_unsubscribed(self, gateway_chan_id: int) -> str | None:
        return None  # answered when the client asked

    def render(self, event: ChannelData, gateway_chan_id: int, now: float) -> bytes | None:
        return event.text.encode()


@runtime_checkable
class UpstreamCodec(Protocol):
    """One per upstream connection."""

    def hello(self) -> list[str]: ...

    def subscribe_frame(self, key: SubKey, req_id: int) -> str: ...

    def unsubscribe_frame(self, key: SubKey, channel: int | str, req_id: int) -> str: ...

    def ping_frame(self, cid: int) -> str | None: ...

    def on_upstream_frame(self, text: str) -> UpstreamEvent: ...


@runtime_checkable
class ChannelState(Protocol):
    """Gateway state of one shared subscription, fed every ChannelData of it."""

    key: SubKey

    def apply(self, event: ChannelData) -> Integrity: ...

    def reset(self) -> None: ...

    def snapshot_event(self) -> ChannelData | None: ...

    def statistics(self) -> StateStatistics: ...


@runtime_checkable
class TradeTape(Protocol):
    """A channel state that bridges resumes (see ``Integrity.BRIDGED``)."""

    def take_bridge(self) -> Bridge:
        """What to deliver instead of the snapshot that returned ``BRIDGED``."""
        ...

    def tape_statistics(self) -> TapeStatistics: ...


@runtime_checkable
class Dialect(Protocol):
    name: DialectName
    shared: bool  # False: every session gets a dedicated upstream (raw)
    url_suffix: str  # appended to the endpoint URL for shared upstream connections

    def open_session(self, path: str, query: str = "") -> SessionCodec: ...

    def open_upstream(self, flags: int = 0) -> UpstreamCodec: ...

    def upstream_flags_for(self, session_flags: Sequence[int]) -> int: ...

    def new_state(self, key: SubKey) -> ChannelState: ...

    def rewrite(self, event: ChannelData, gateway_chan_id: int, form: FrameForm) -> bytes: ...

    def cadence(self, key: SubKey) -> float | None: ...

    def dedup_id(self, event: ChannelData) -> int | None: ...


@runtime_checkable
class Coalescing(Protocol):
    """An upstream codec that merges queued requests into one (a venue that limits requests
    per connection rather than args). ``coalesce(first, queue)`` pops from the front of
    ``queue`` every frame it folds into ``first`` and returns the frame to send."""

    def coalesce(self, first: str, queue: deque[str]) -> str: ...


@runtime_checkable
class ShardedDialect(Protocol):
    """A dialect whose subscriptions live on different upstream paths (see the module doc)."""

    def upstream_suffix(self, key: SubKey) -> str: ...


class Refusal(StrEnum):
    """Why the gateway itself answers a subscribe with an error."""

    LIMIT = "limit_error"  # no capacity: the session's or the route's limit is reached
    UNAVAILABLE = "unavailable_error"  # no upstream connection could take it in time


_GENERIC_REFUSALS = {
    Refusal.LIMIT: (0, "subscription limit reached"),
    Refusal.UNAVAILABLE: (0, "subscription failed: no upstream connection available"),
}


def refusal(dialect: object, why: Refusal) -> tuple[int, str]:
    """The venue's own (code, message) for a subscribe the gateway cannot serve.

    A dialect declares them as ``limit_error`` and ``unavailable_error`` attributes (e.g.
    Bitfinex ``(10305, "subscribe: limit")``); a dialect without them gets code 0.
    """
    value = getattr(dialect, why.value, None)
    return value if isinstance(value, tuple) else _GENERIC_REFUSALS[why]


def upstream_suffix(dialect: Dialect, key: SubKey) -> str:
    """The URL suffix of the upstream connections that can carry ``key``."""
    if isinstance(dialect, ShardedDialect):
        return dialect.upstream_suffix(key)
    return dialect.url_suffix
