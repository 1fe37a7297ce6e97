"""Shared subscriptions of one route: many bot sessions, few upstream connections.

The hub executes what the pure parts decide: the dialect codecs (what a frame means,
how to render it), the :class:`~wsgate.core.subscriptions.SubscriptionRegistry`
(what is wanted, pending, live, lingering or silent) and the
:class:`~wsgate.core.balancer.Balancer` (which connection takes a new subscription).

Hot path, for every upstream frame: the dialect locates the routing key without a full
JSON parse, the registry maps it to a shared subscription, the gateway channel state
absorbs it, and the frame is rewritten and WebSocket-encoded once per form; each
session then costs one list append (:meth:`Session.push`). Sessions with per-session
rendering (Bitfinex sequence numbers, timestamps) take ``codec.render``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from wsgate.core.backoff import TokenBucket
from wsgate.core.balancer import Balancer, Candidate, ErrorPenalty
from wsgate.core.states import ConnState
from wsgate.core.subscriptions import Subscription, SubscriptionRegistry, SubState
from wsgate.dialects import base as d
from wsgate.errors import CapacityError, NoCandidateError
from wsgate.runtime.depth_sync import DepthSync
from wsgate.runtime.framing import encode_text
from wsgate.runtime.session import Session
from wsgate.runtime.upstream import UpstreamConnection

if TYPE_CHECKING:
    from wsgate.runtime.routes import RouteRuntime

__all__ = ["Hub", "HubStats"]

log = logging.getLogger("wsgate.hub")

TICK = 0.25  # seconds between registry timer checks
SEND_QUEUE = 4096  # frames waiting for the per-connection message budget
RECENT_IDS = 4096  # dedup window during a make-before-break move
INFO_DEDUP = 30.0  # seconds within which the same info code from another connection is a repeat


@dataclass(eq=False)
class _Member:
    """One session of this hub."""

    session: Session
    codec: d.SessionCodec
    ws: ServerConnection
    subs: dict[Any, d.Subscribe] = field(default_factory=dict)  # key -> request
    acked: set[Any] = field(default_factory=set)
    flags: int = 0
    bucket: TokenBucket | None = None


@dataclass(eq=False)
class _Channel:
    """Hub-side state of one shared subscription, kept on it (``Subscription.attachment``).

    It lives and dies with the subscription, so the hot path reaches it without a lookup
    keyed by the (re-hashed, frozen) subscription key, and nothing outlives a dropped one.
    """

    state: d.ChannelState
    members: list[_Member] = field(default_factory=list)  # acked sessions: the fan-out list


@dataclass(eq=False)
class _Upstream:
    """Hub-side state of one shared upstream connection."""

    conn: UpstreamConnection
    codec: d.UpstreamCodec | None = None
    queue: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    bucket: TokenBucket | None = None
    req_ids: dict[int, Any] = field(default_factory=dict)  # req id -> SubKey (Binance)
    pings: dict[int, float] = field(default_factory=dict)  # cid -> sent at
    confs: deque[int] = field(default_factory=deque)  # conf flags sent, awaiting the reply
    draining: bool = False
    penalty: ErrorPenalty = field(default_factory=ErrorPenalty)
    dropped_sends: int = 0


@dataclass
class _Move:
    """A make-before-break move of one subscription to another connection."""

    sub: Subscription
    target: str
    reason: str


class _Stopped(Exception):
    """Ends the hub's TaskGroup on :meth:`Hub.stop`."""


@dataclass(frozen=True)
class HubStats:
    sessions: int
    connections: int
    subscriptions: dict[str, int]
    frames_in: int
    deliveries: int
    dropped_unrouted: int
    resubscribes: int
    moves: int
    checksum_mismatches: int
    slow_consumers_closed: int
    duplicates_dropped: int


class Hub:
    def __init__(
        self,
        route: RouteRuntime,
        dialect: d.Dialect,
        balancer: Balancer,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route = route
        self.dialect = dialect
        self.balancer = balancer
        self.clock = clock
        linger = route.cfg.linger if route.cfg.linger is not None else route.gateway_linger()
        self.registry = SubscriptionRegistry(pending_timeout=10.0, linger=linger)
        self.sessions: dict[int, _Member] = {}
        self.ups: dict[str, _Upstream] = {}
        self.moves: dict[tuple[str, Any], _Move] = {}  # (target conn, key) -> move
        self._recent: dict[Any, deque[int]] = {}  # key -> recent dedup ids while moving
        self._req = itertools.count(1)
        self._cid = itertools.count(1)
        self._upstream_flags = dialect.upstream_flags_for([])
        self._last_info: dict[int, float] = {}  # info code -> when last forwarded
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.frames_in = 0
        self.deliveries = 0
        self.dropped_unrouted = 0
        self.mismatches = 0
        self.slow_closed = 0
        self.duplicates = 0
        self.moves_done = 0
        self.depth = DepthSync.for_route(self)  # Binance depth continuity across re-homing

    # ================================================================ lifecycle
    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._tick_loop(), name=f"hub-{self.route.name}-tick")
                if self.depth is not None:
                    tg.create_task(self.depth.run(), name=f"hub-{self.route.name}-depth")
                if self.route.cfg.app_ping_interval > 0:
                    tg.create_task(self._app_ping_loop(), name=f"hub-{self.route.name}-ping")
                await self._stop.wait()
                # The timer loops and writers never end on their own: raising cancels them,
                # otherwise the TaskGroup (and the route, and the daemon) waits forever.
                raise _Stopped
        except* _Stopped:
            pass

    def stop(self) -> None:
        self._stop.set()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self._tick()
            except Exception:
                log.exception("route %s: hub tick failed", self.route.name)

    def _tick(self) -> None:
        now = self.clock()
        live = [cid for cid, u in self.ups.items() if u.conn.state is ConnState.OPEN]
        acts = self.registry.tick(now, live)
        for sub in acts.retry:
            self._place(sub)
        for sub in acts.unsubscribe:
            self._drop_upstream(sub)
        for sub in acts.resubscribe:
            u = self.ups.get(sub.conn_id or "")
            if u is None or u.conn.state is not ConnState.OPEN:
                continue  # maintenance (DEGRADED) is not a reason to resubscribe
            log.warning(
                "route %s: %s silent for more than %.0fs; resubscribing",
                self.route.name,
                sub.key,
                sub.cadence,
            )
            u.conn.metrics.on_error(now, "channel_stale")
            u.penalty.add(now)
            self._resubscribe(u, sub)
        for conn_id in acts.reconnect:
            u = self.ups.get(conn_id)
            if u is not None and u.conn.state is ConnState.OPEN:
                u.conn.request_reconnect("every channel silent")
        for u in list(self.ups.values()):
            if u.draining and not self.registry.keys_on(u.conn.id) and not self._moving_from(u):
                log.info("route %s: %s drained; closing", self.route.name, u.conn.id)
                self.route.retire(u.conn)

    async def _app_ping_loop(self) -> None:
        interval = self.route.cfg.app_ping_interval
        while True:
            await asyncio.sleep(interval)
            for u in list(self.ups.values()):
                if u.codec is not None and u.conn.state is ConnState.OPEN:
                    self._app_ping(u)

    def _app_ping(self, u: _Upstream) -> None:
        assert u.codec is not None
        cid = next(self._cid)
        frame = u.codec.ping_frame(cid)
        if frame is not None:
            u.pings[cid] = self.clock()
            if len(u.pings) > 16:  # unanswered pings must not accumulate
                u.pings.pop(next(iter(u.pings)))
            self._send(u, frame)

    # ================================================================ upstream sink
    def attach(self, conn: UpstreamConnection) -> None:
        cfg = self.route.cfg.message_budget
        self.ups[conn.id] = _Upstream(conn, bucket=TokenBucket(cfg.count, cfg.per, self.clock()))

    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        u = self.ups.get(conn.id)
        if u is None:
            return
        u.codec = self.dialect.open_upstream(self._upstream_flags)
        u.queue.clear()
        u.req_ids.clear()
        u.pings.clear()
        u.confs.clear()
        assert self._tg is not None
        self._tg.create_task(self._writer(u), name=f"{conn.id}-writer")
        for frame in u.codec.hello():
            self._send(u, frame)
        if self.route.cfg.app_ping_interval > 0:
            self._app_ping(u)  # an application latency sample right away
        for sub in self.registry.subscriptions():
            if sub.state is SubState.DESIRED and sub.sessions:
                self._place(sub)
        # A rotation (20051, serverShutdown, max_lifetime) waits for exactly this successor:
        # start its moves now, before the exchange closes the old connection.
        if any(x.draining for x in self.ups.values()):
            self.retry_migrations()

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        u = self.ups.get(conn.id)
        if u is None:
            return
        u.codec = None
        u.wake.set()  # ends the writer
        u.penalty.add(self.clock(), 2.0)
        for key in [k for (target, k) in self.moves if target == conn.id]:
            self.moves.pop((conn.id, key), None)
        lost = self.registry.connection_lost(conn.id, self.clock())
        if lost:
            log.warning(
                "route %s: %s lost (%s); re-homing %d subscription(s)",
                self.route.name,
                conn.id,
                reason,
                len(lost),
            )
        for sub in lost:
            self._reset_state(sub)
            self._place(sub)

    def detach(self, conn: UpstreamConnection) -> None:
        self.ups.pop(conn.id, None)
        self.balancer.forget(conn.id)

    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None:
        u = self.ups.get(conn.id)
        if u is None or u.codec is None:
            return
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        ev = u.codec.on_upstream_frame(text)
        if type(ev) is d.ChannelData:
            self._on_data(u, ev)
        else:
            self._on_event(u, ev)

    # ---------------------------------------------------------------- hot path
    def _on_data(self, u: _Upstream, ev: d.ChannelData) -> None:
        self.frames_in += 1
        sub = self.registry.lookup(u.conn.id, ev.channel)
        if sub is None:
            self.dropped_unrouted += 1  # an old channel after a move or an unsubscribe race
            return
        now = self.clock()
        sub.last_data_at = now
        if self._recent and sub.key in self._recent and not self._fresh(sub.key, ev):
            return
        ch: _Channel = sub.attachment or self._chan(sub)
        verdict = ch.state.apply(ev)
        if verdict is not d.Integrity.OK:
            self._integrity_failure(u, sub, verdict)
            if verdict is d.Integrity.MISMATCH:
                return
        if self.depth is not None:
            synced = self.depth.on_data(sub, ev)
            if synced is None:
                return
            ev = synced
        self._fan_out(sub, ev, now)

    def _chan(self, sub: Subscription) -> _Channel:
        ch: _Channel | None = sub.attachment
        if ch is None:
            ch = sub.attachment = _Channel(self.dialect.new_state(cast(d.SubKey, sub.key)))
        return ch

    def members_of(self, sub: Subscription) -> list[_Member]:
        return self._chan(sub).members

    def _remove_member(self, key: Any, m: _Member) -> None:
        sub = self.registry.get(key)
        ch: _Channel | None = sub.attachment if sub is not None else None
        if ch is not None and m in ch.members:
            ch.members.remove(m)

    def _fan_out(self, sub: Subscription, ev: d.ChannelData, now: float) -> None:
        members = (sub.attachment or self._chan(sub)).members
        if not members:
            return
        gw = sub.gw_id
        shared: dict[d.FrameForm, bytes] = {}
        kind = ev.kind
        wall: float | None = None
        for m in members:
            codec = m.codec
            if kind in codec.fast_kinds:
                frame = shared.get(codec.form)
                if frame is None:
                    frame = shared[codec.form] = encode_text(
                        self.dialect.rewrite(ev, gw, codec.form)
                    )
            else:
                if wall is None:  # Bitfinex TIMESTAMP is epoch ms, not the monotonic clock
                    wall = time.time()
                body = codec.render(ev, gw, wall)
                if body is None:
                    continue
                frame = encode_text(body)
            m.session.push(frame)
        self.deliveries += len(members)

    def _fresh(self, key: Any, ev: d.ChannelData) -> bool:
        """During a move both connections deliver: drop what the session already has."""
        ident = self.dialect.dedup_id(ev)
        if ident is None:
            return True
        seen = self._recent[key]
        if ident in seen:
            self.duplicates += 1
            return False
        seen.append(ident)
        return True

    # ---------------------------------------------------------------- control events
    def _on_event(self, u: _Upstream, ev: d.UpstreamEvent) -> None:
        now = self.clock()
        if isinstance(ev, d.Subscribed):
            self._on_subscribed(u, ev)
        elif isinstance(ev, d.Result):
            for s in ev.subscribed:
                self._on_subscribed(u, s)
            for us in ev.unsubscribed:
                u.req_ids.pop(us.req_id or -1, None)
        elif isinstance(ev, d.SubscribeFailed):
            self._on_subscribe_failed(u, ev)
        elif isinstance(ev, d.Pong):
            sent = u.pings.pop(ev.cid or -1, None)
            if sent is not None:
                u.conn.metrics.on_latency(now, now - sent, "app")
        elif isinstance(ev, d.Info):
            self._on_info(u, ev)
        elif isinstance(ev, d.ConfAck):
            flags = u.confs.popleft() if u.confs else None
            if ev.ok and flags is not None:
                u.codec = self.dialect.open_upstream(flags)  # framed by the new flags from here
        elif isinstance(ev, d.ServerShutdown):
            log.warning("route %s: %s announced a server shutdown", self.route.name, u.conn.id)
            self.rotate(u.conn.id, "server shutdown announced")
        elif isinstance(ev, d.Unrecognized):
            u.conn.metrics.on_error(now, "malformed")
            log.debug("route %s: %s unrecognised frame: %s", self.route.name, u.conn.id, ev.reason)

    def _on_subscribed(self, u: _Upstream, ev: d.Subscribed) -> None:
        key = ev.key
        if key is None and ev.req_id is not None:
            key = u.req_ids.pop(ev.req_id, None)
        if key is None:
            return
        now = self.clock()
        move = self.moves.pop((u.conn.id, key), None)
        sub = self.registry.get(key)
        if sub is None:
            self._send_unsubscribe(u, key, ev.channel)  # nobody wants it any more
            return
        if move is not None:
            self._finish_move(u, sub, ev.channel, move)
            return
        if sub.conn_id != u.conn.id:
            self._send_unsubscribe(u, key, ev.channel)  # a late confirm for an abandoned try
            return
        self.registry.confirm(sub, ev.channel, now)
        self._ack_waiting(sub)

    def _ack_waiting(self, sub: Subscription) -> None:
        ch = self._chan(sub)
        members, state = ch.members, ch.state
        for sid in list(sub.sessions):
            m = self.sessions.get(sid)
            if m is None or sub.key in m.acked:
                continue
            req = m.subs.get(sub.key)
            if req is None:
                continue
            m.acked.add(sub.key)
            members.append(m)
            ack = m.codec.render_subscribed(req, sub.gw_id)
            if ack is not None:
                m.session.push_text(ack)
            self._send_snapshot(m, sub, state)

    def _send_snapshot(self, m: _Member, sub: Subscription, state: d.ChannelState | None) -> None:
        """A late joiner gets the gateway's state, so exactly one snapshot reaches it."""
        if state is None:
            return
        snap = state.snapshot_event()
        if snap is None:
            return  # the upstream snapshot has not arrived yet; it will reach this session
        if snap.kind in m.codec.fast_kinds:
            m.session.push(encode_text(self.dialect.rewrite(snap, sub.gw_id, m.codec.form)))
        else:
            body = m.codec.render(snap, sub.gw_id, time.time())  # epoch ms timestamps
            if body is not None:
                m.session.push_text(body)

    def _on_subscribe_failed(self, u: _Upstream, ev: d.SubscribeFailed) -> None:
        key = ev.key
        if key is None and ev.req_id is not None:
            key = u.req_ids.pop(ev.req_id, None)
        sub = self.registry.get(key) if key is not None else None
        now = self.clock()
        u.conn.metrics.on_error(now, f"subscribe_{ev.code}")
        if sub is None:
            return
        if ev.action is d.ErrorAction.PLACE_ELSEWHERE:
            log.warning(
                "route %s: %s full (%d); placing %s elsewhere",
                self.route.name,
                u.conn.id,
                ev.code,
                sub.key,
            )
            self.registry.unplace(sub, now)
            self._place(sub, exclude={u.conn.id})
        elif ev.action is d.ErrorAction.ALREADY_SUBSCRIBED:
            pass  # the confirmation we already have stands
        elif ev.action is d.ErrorAction.FAIL_SUBSCRIPTION:
            self._fail(sub, ev.code, ev.msg)

    def _fail(self, sub: Subscription, code: int, msg: str) -> None:
        sessions = self.registry.fail(sub, msg, self.clock())
        log.warning("route %s: subscription %s failed: %s", self.route.name, sub.key, msg)
        for sid in sessions:
            m = self.sessions.get(sid)
            if m is None:
                continue
            req = m.subs.pop(sub.key, None)
            m.acked.discard(sub.key)
            if req is not None:
                frame = m.codec.render_subscribe_error(req, code, msg)
                if frame is not None:
                    m.session.push_text(frame)

    def _on_info(self, u: _Upstream, ev: d.Info) -> None:
        conn = u.conn
        if ev.action is d.InfoAction.RECONNECT:
            log.warning("route %s: %s asked to reconnect (20051)", self.route.name, conn.id)
            self._broadcast_info(ev)
            self.rotate(conn.id, "exchange asked to reconnect (20051)")
        elif ev.action is d.InfoAction.MAINTENANCE_START:
            conn.set_degraded(True, "maintenance started (20060)")
            self._broadcast_info(ev)
        elif ev.action is d.InfoAction.MAINTENANCE_END:
            conn.set_degraded(False, "maintenance ended (20061)")
            self._broadcast_info(ev)
            for key in self.registry.keys_on(conn.id):
                sub = self.registry.get(key)
                if sub is not None and sub.state is SubState.CONFIRMED:
                    self._resubscribe(u, sub)

    def _broadcast_info(self, ev: d.Info) -> None:
        """Forward 20051/20060/20061 as the exchange would, so bots' own logic still runs."""
        if ev.code is None:
            return
        # Every upstream connection hears the same exchange-wide notice: forward it once.
        now = self.clock()
        last = self._last_info.get(ev.code)
        self._last_info[ev.code] = now
        if last is not None and now - last < INFO_DEDUP:
            return
        frame = d.compact({"event": "info", "code": ev.code, "msg": ev.msg})
        for m in self.sessions.values():
            m.session.push_text(frame)

    def _integrity_failure(self, u: _Upstream, sub: Subscription, verdict: d.Integrity) -> None:
        self.mismatches += 1
        log.warning(
            "route %s: %s %s on %s; resubscribing for a fresh snapshot",
            self.route.name,
            sub.key,
            verdict.value,
            u.conn.id,
        )
        u.conn.metrics.on_error(self.clock(), f"integrity_{verdict.value}")
        if verdict is d.Integrity.MISMATCH:
            self._resubscribe(u, sub)

    # ================================================================ placement
    def candidates(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[Candidate]:
        now = self.clock()
        cap = self.route.cfg.max_subscriptions_per_connection
        out = []
        for cid, u in self.ups.items():
            conn = u.conn
            m = conn.metrics
            out.append(
                Candidate(
                    id=cid,
                    weight=float(self.route.endpoint_weight(conn.settings.endpoint)),
                    sessions=0,
                    subscriptions=self.registry.load(cid) + self._moving_to(cid),
                    capacity=cap,
                    message_rate=m._rate_in.rate(now),
                    latency=m.latency_peak.value,
                    health=self.route.health_of(conn),
                    eligible=(
                        conn.state is ConnState.OPEN
                        and u.codec is not None
                        and not u.draining
                        and cid not in exclude
                        and self.route.endpoint_weight(conn.settings.endpoint) > 0
                    ),
                    connected_at=conn.opened_at,
                    error_penalty=u.penalty.value(now),
                )
            )
        return out

    def _moving_to(self, conn_id: str) -> int:
        return sum(1 for (target, _k) in self.moves if target == conn_id) if self.moves else 0

    def _moving_from(self, u: _Upstream) -> bool:
        return any(mv.sub.conn_id == u.conn.id for mv in self.moves.values())

    def _place(self, sub: Subscription, exclude: set[str] | None = None) -> None:
        if sub.state is not SubState.DESIRED or not sub.sessions:
            return
        try:
            decision = self.balancer.pick(self.candidates(exclude or set()), self.clock())
        except NoCandidateError as exc:
            coming = any(
                u.conn.state in (ConnState.IDLE, ConnState.CONNECTING, ConnState.BACKOFF)
                or (u.conn.state is ConnState.OPEN and u.codec is None)
                for u in self.ups.values()
                if not u.draining
            )
            if not coming:  # nothing on its way: a real load-balancer issue
                self.route.no_candidate(str(exc))
            self._grow_pool()
            return
        if decision.fail_open:
            self.route.fail_open(decision.reason)
        u = self.ups[decision.candidate_id]
        self.registry.assign(sub, u.conn.id, self.clock())
        self._chan(sub)
        self._send_subscribe(u, sub.key)
        if self.registry.load(u.conn.id) >= self.route.cfg.max_subscriptions_per_connection:
            self._grow_pool()  # open the next connection before anyone needs it

    def _grow_pool(self) -> None:
        try:
            self.route.grow()
        except CapacityError as exc:
            log.warning("route %s: cannot add an upstream connection: %s", self.route.name, exc)

    def _send_subscribe(self, u: _Upstream, key: Any) -> None:
        assert u.codec is not None
        req = next(self._req)
        u.req_ids[req] = key
        self._send(u, u.codec.subscribe_frame(key, req))

    def _send_unsubscribe(self, u: _Upstream, key: Any, channel: object) -> None:
        if u.codec is None or channel is None:
            return
        req = next(self._req)
        self._send(u, u.codec.unsubscribe_frame(key, channel, req))  # type: ignore[arg-type]

    def _resubscribe(self, u: _Upstream, sub: Subscription) -> None:
        old = sub.upstream_id
        self._send_unsubscribe(u, sub.key, old)
        self.registry.assign(sub, u.conn.id, self.clock())
        self._reset_state(sub)
        self._send_subscribe(u, sub.key)

    def _reset_state(self, sub: Subscription) -> None:
        ch: _Channel | None = sub.attachment
        if ch is not None:
            ch.state.reset()

    def _drop_upstream(self, sub: Subscription) -> None:
        u = self.ups.get(sub.conn_id or "")
        if u is not None:
            self._send_unsubscribe(u, sub.key, sub.upstream_id)
        self.registry.dropped(sub)

    # ---------------------------------------------------------------- moves
    def move(self, sub: Subscription, target: str, reason: str) -> bool:
        """Make-before-break: subscribe on ``target``; switch when it confirms."""
        u = self.ups.get(target)
        if (
            u is None
            or u.codec is None
            or sub.state is not SubState.CONFIRMED
            or sub.conn_id == target
            or any(k == sub.key for (_t, k) in self.moves)  # one move per key at a time
        ):
            return False
        self.moves[(target, sub.key)] = _Move(sub, target, reason)
        self._recent.setdefault(sub.key, deque(maxlen=RECENT_IDS))
        self._send_subscribe(u, sub.key)
        return True

    def _finish_move(self, u: _Upstream, sub: Subscription, channel: object, mv: _Move) -> None:
        old = self.ups.get(sub.conn_id or "")
        old_channel = sub.upstream_id
        now = self.clock()
        if sub.state is not SubState.CONFIRMED:
            # The old home vanished meanwhile: the target simply becomes the home.
            self.registry.assign(sub, u.conn.id, now)
            self.registry.confirm(sub, channel, now)
            self._ack_waiting(sub)
        else:
            self.registry.assign(sub, u.conn.id, now)
            self.registry.confirm(sub, channel, now)
            if old is not None:
                self._send_unsubscribe(old, sub.key, old_channel)
        self.moves_done += 1
        if not any(k == sub.key for (_t, k) in self.moves):
            self._recent.pop(sub.key, None)
        log.info("route %s: moved %s to %s (%s)", self.route.name, sub.key, u.conn.id, mv.reason)

    def rotate(self, conn_id: str, reason: str) -> None:
        """Replace a connection make-before-break (20051, serverShutdown, max lifetime)."""
        u = self.ups.get(conn_id)
        if u is None or u.draining:
            return
        u.draining = True
        self.route.grow(force=True)
        self._migrate(u, reason)

    def drain(self, conn_id: str, reason: str) -> int:
        u = self.ups.get(conn_id)
        if u is None:
            return 0
        u.draining = True
        return self._migrate(u, reason)

    def _migrate(self, u: _Upstream, reason: str) -> int:
        started = 0
        for key in self.registry.keys_on(u.conn.id):
            sub = self.registry.get(key)
            if sub is None or sub.state is not SubState.CONFIRMED:
                continue
            targets = [c for c in self.candidates({u.conn.id}) if c.eligible]
            if not targets:
                continue  # the _tick loop retries once the new connection is open
            decision = self.balancer.pick(targets, self.clock())
            started += self.move(sub, decision.candidate_id, reason)
        return started

    def retry_migrations(self) -> None:
        for u in list(self.ups.values()):
            if u.draining:
                self._migrate(u, "drain")

    # ---------------------------------------------------------------- budgeted writes
    def _send(self, u: _Upstream, frame: str) -> None:
        if len(u.queue) >= SEND_QUEUE:
            u.dropped_sends += 1
            log.error("route %s: %s send queue full; frame dropped", self.route.name, u.conn.id)
            return
        u.queue.append(frame)
        u.wake.set()

    async def _writer(self, u: _Upstream) -> None:
        """Sends queued frames within the per-connection message budget."""
        conn = u.conn
        while u.codec is not None:
            if not u.queue:
                u.wake.clear()
                await u.wake.wait()
                continue
            assert u.bucket is not None
            wait = u.bucket.reserve(self.clock())
            if wait > 0:
                await asyncio.sleep(wait)
            if u.codec is None:
                return
            frame = u.queue.popleft()
            try:
                await conn.send(frame)
            except (ConnectionError, ConnectionClosed):
                return

    # ================================================================ sessions
    async def serve_session(
        self, ws: ServerConnection, session: Session, path: str, query: str
    ) -> None:
        codec = self.dialect.open_session(path, query)
        rate = self.route.client_rate()
        m = _Member(session, codec, ws, bucket=TokenBucket(rate, 1.0, self.clock()))
        session.on_slow = self._on_slow
        self.sessions[session.id] = m
        try:
            for intent in codec.on_open(self.clock()):
                if await self._intent(m, intent):
                    return
            async for msg in ws:
                session.messages_in += 1
                now = self.clock()
                assert m.bucket is not None
                if not m.bucket.try_acquire(now):
                    await session.close(1008, "too many messages")
                    return
                for intent in codec.on_client_message(msg, time.time()):  # pong ts: epoch
                    if await self._intent(m, intent):
                        return
        except ConnectionClosed:
            pass
        finally:
            self._leave(m)

    def _on_slow(self, session: Session) -> None:
        self.slow_closed += 1
        m = self.sessions.get(session.id)
        if m is not None:
            for key in m.acked:  # stop spending fan-out work on it at once
                self._remove_member(key, m)

    async def _intent(self, m: _Member, intent: d.Intent) -> bool:
        """Execute one intent; True when the session must end."""
        if isinstance(intent, d.Subscribe):
            self._subscribe(m, intent)
        elif isinstance(intent, d.Unsubscribe):
            self._unsubscribe(m, intent)
        elif isinstance(intent, d.Reply | d.Error):
            m.session.push_text(intent.frame)
        elif isinstance(intent, d.Conf):
            m.flags = intent.flags
            self._update_upstream_flags()
        elif isinstance(intent, d.Auth):
            return await self._authenticate(m, intent)
        elif isinstance(intent, d.Relay):
            m.session.push_text(
                d.compact({"event": "error", "msg": "not authenticated", "code": 10100})
            )
        elif isinstance(intent, d.Close):
            await m.session.close(intent.code, intent.reason)
            return True
        return False

    def _subscribe(self, m: _Member, req: d.Subscribe) -> None:
        now = self.clock()
        key = req.key
        m.subs[key] = req
        cadence = self.route.cadence(key, self.dialect.cadence(key))
        sub, new = self.registry.acquire(key, m.session.id, now, cadence)
        if new:
            self._chan(sub)
            self._place(sub)
        elif sub.state is SubState.CONFIRMED:
            self._ack_waiting(sub)

    def _unsubscribe(self, m: _Member, req: d.Unsubscribe) -> None:
        key = req.key
        m.subs.pop(key, None)
        was_acked = key in m.acked
        m.acked.discard(key)
        self._remove_member(key, m)
        self.registry.release(key, m.session.id, self.clock())
        sub = self.registry.get(key)
        if was_acked:
            gw = (
                req.gateway_chan_id
                if req.gateway_chan_id is not None
                else (sub.gw_id if sub else 0)
            )
            frame = m.codec.render_unsubscribed(gw)
            if frame is not None:
                m.session.push_text(frame)

    def _leave(self, m: _Member) -> None:
        self.sessions.pop(m.session.id, None)
        for key in list(m.subs):
            self._remove_member(key, m)
        self.registry.release_all(m.session.id, self.clock())
        if m.flags:
            self._update_upstream_flags()

    def _update_upstream_flags(self) -> None:
        flags = self.dialect.upstream_flags_for([x.flags for x in self.sessions.values()])
        if flags == self._upstream_flags:
            return
        self._upstream_flags = flags
        for u in self.ups.values():
            if u.codec is not None:
                # The new codec's hello() is the conf frame. Frames already in flight keep the
                # old framing: the codec switches on the exchange's conf reply (ConfAck).
                hello = self.dialect.open_upstream(flags).hello()
                if hello:
                    u.confs.append(flags)
                for frame in hello:
                    self._send(u, frame)

    async def _authenticate(self, m: _Member, intent: d.Auth) -> bool:
        """Authenticated sessions get a dedicated upstream and a 1:1 relay from now on."""
        if not self.route.cfg.type.authenticated:
            m.session.push_text(
                d.compact(
                    {
                        "event": "auth",
                        "status": "FAILED",
                        "code": 10100,
                        "msg": f"route {self.route.name} is {self.route.cfg.type.value}: "
                        "use a user_data or trading route for auth",
                    }
                )
            )
            await m.session.close(1008, "auth not allowed on a market data route")
            return True
        # Leave the shared world: this session's traffic is now private.
        self._leave(m)
        await self.route.relay_after_auth(m.ws, m.session, intent.frame, intent.upstream_path)
        return True

    # ================================================================ views
    def subscriptions_view(self) -> list[dict[str, object]]:
        now = self.clock()
        return [s.as_dict(now) for s in self.registry.subscriptions()]

    def statistics(self) -> HubStats:
        return HubStats(
            sessions=len(self.sessions),
            connections=len(self.ups),
            subscriptions=self.registry.statistics().by_state,
            frames_in=self.frames_in,
            deliveries=self.deliveries,
            dropped_unrouted=self.dropped_unrouted,
            resubscribes=self.registry.statistics().resubscribes,
            moves=self.moves_done,
            checksum_mismatches=self.mismatches,
            slow_consumers_closed=self.slow_closed,
            duplicates_dropped=self.duplicates,
        )

    def __repr__(self) -> str:
        return f"<Hub {self.route.name} sessions={len(self.sessions)} ups={len(self.ups)}>"
