"""Shared subscriptions of one route: many bot sessions, few upstream connections.

The hub is the coordinator. It executes what the pure parts decide — the dialect codecs
(what a frame means, how to render it), the
:class:`~wsgate.core.subscriptions.SubscriptionRegistry` (what is wanted, pending, live,
lingering or silent) and the :class:`~wsgate.core.balancer.Balancer` (which connection
takes a new subscription) — through four parts with one job each:

* :mod:`~wsgate.runtime.upstream.uplink` — per upstream connection: codec and budgeted writer;
* :mod:`~wsgate.runtime.routing.placement` — placement and make-before-break moves;
* :mod:`~wsgate.runtime.routing.hub_sessions` — the bot sessions and their intents;
* :mod:`~wsgate.runtime.routing.fanout` — one event to every acked session.

The hub itself is the upstream sink (open, frame, closed), routes upstream control events
to the right part, and runs the per-tick timers. It sees its route only through
:class:`~wsgate.runtime.routing.seams.HubRoute`.

Hot path, for every upstream frame: the dialect locates the routing key without a full
JSON parse, the registry maps it to a shared subscription, the gateway channel state
absorbs it, and :meth:`FanOut.deliver` encodes it once per form and pushes it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection

from wsgate.core.backoff import TokenBucket
from wsgate.core.balancer import Balancer, Candidate
from wsgate.core.states import ConnState
from wsgate.core.subscriptions import Subscription, SubscriptionRegistry, SubState
from wsgate.core.types import DialectName
from wsgate.dialects import base as d
from wsgate.runtime.downstream.session import Session
from wsgate.runtime.routing.cluster_bridge import ClusterBridge
from wsgate.runtime.routing.depth_sync import DEPTH_DIALECTS, DepthSync
from wsgate.runtime.routing.fanout import Channel, FanOut, Member
from wsgate.runtime.routing.hub_sessions import SessionIntents
from wsgate.runtime.routing.placement import Placement
from wsgate.runtime.routing.seams import FOLLOW_CONN, ClusterShare, HubRoute
from wsgate.runtime.routing.trade_sync import TRADE_DIALECTS, TradeSync
from wsgate.runtime.system.faults import Faults, every
from wsgate.runtime.upstream.connection import UpstreamConnection
from wsgate.runtime.upstream.uplink import Uplink

__all__ = ["Hub", "HubStats"]

log = logging.getLogger("wsgate.hub")

TICK = 0.25  # seconds between registry timer checks
INFO_DEDUP = 30.0  # seconds within which the same info code from another connection is a repeat


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
    dropped_sends: int
    # Errors sessions caused, by kind (unknown symbol, bad request, rate limit): counted
    # against the sessions, never against an upstream connection's health or error rate.
    session_errors: dict[str, int] = field(default_factory=dict)
    # Trade channels resumed after an upstream change (connection lost, 20051, maintenance,
    # a move): "bridged" sent the missed trades as updates, "announced" a gap as a snapshot.
    trade_resumes: dict[str, int] = field(default_factory=dict)
    trades_bridged: int = 0


class Hub:
    def __init__(
        self,
        route: HubRoute,
        dialect: d.Dialect,
        balancer: Balancer,
        *,
        linger: float = 30.0,
        client_rate: Callable[[], float] = lambda: 50.0,
        subscription_cap: Callable[[], int] = lambda: 1024,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
    ) -> None:
        self.route = route
        self.faults = faults or Faults()
        self.dialect = dialect
        self.balancer = balancer
        self.clock = clock
        if route.cfg.linger is not None:
            linger = route.cfg.linger
        self.registry = SubscriptionRegistry(linger=linger)  # its timeouts and resend budget
        self.ups: dict[str, Uplink] = {}
        self.fanout = FanOut(dialect)
        self.placement = Placement(
            route, self.registry, balancer, self.ups, self.fanout, dialect, clock, self._confirmed
        )
        self.intents = SessionIntents(
            route,
            dialect,
            self.registry,
            self.placement,
            self.fanout,
            self.ups,
            clock,
            client_rate,
            subscription_cap,
        )
        # Nothing can take it (every connection full, none may open): say so right away.
        self.placement.on_no_capacity = lambda sub: self.intents.refuse_waiting(
            sub, d.Refusal.LIMIT
        )
        self._recent = self.placement.recent  # the hot path tests it for emptiness
        self.share: ClusterShare | None = None
        self.bridge = ClusterBridge(self, self._bridge_data)
        self._bridging = self.bridge.held  # the hot path tests it for emptiness
        self._deliver = self.fanout.deliver
        self._cid = itertools.count(1)
        self._last_info: dict[int, float] = {}  # info code -> when last forwarded
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.frames_in = 0
        self.dropped_unrouted = 0
        self.mismatches = 0
        # Resumed trade channels (dialects.base.TradeTape): bridged or announced as a gap.
        self.resumes_bridged = 0
        self.resumes_announced = 0
        self.trades_bridged = 0
        self.tape_duplicates = 0
        self.depth = self._depth_sync()  # Binance depth continuity across re-homing
        self.trades = (  # Binance trade/aggTrade continuity: no trade twice, gaps bridged
            TradeSync(
                route.name,
                route.cfg.rest_url,
                self.registry,
                faults=self.faults,
                deliver=self.fanout.deliver,
            )
            if dialect.name in TRADE_DIALECTS
            else None
        )

    # ================================================================ cluster data plane
    def attach_share(self, share: ClusterShare) -> None:
        """``share = "cluster"``: placements ask the cluster first; deliveries feed it."""
        self.share = share
        self.placement.share = share
        self.fanout.tap = share.tap

    def cluster_go_local(self, key: object) -> None:
        """Subscribe ``key`` upstream here (we own it, or the cluster link is gone)."""
        sub = self.registry.get(key)
        if sub is None:
            return
        if sub.conn_id == FOLLOW_CONN:
            # Fed by another node until now: the fresh upstream snapshot announces the
            # gap, as re-homing on one node does (a trade tape bridges it instead).
            self.registry.unplace(sub, self.clock())
            self.placement.reset_state(sub)
        self.placement.place(sub)

    def cluster_release(self, key: object) -> None:
        """A key handed over at the end of its linger: drop it now, unless a session came
        back meanwhile (then the lease rules make this node follow the successor)."""
        sub = self.registry.get(key)
        if sub is not None and sub.state is SubState.LINGER:
            self.placement.drop_upstream(sub)

    def cluster_bridge(self, key: object) -> bool:
        """Successor of a live owner: subscribe upstream, hold what it sends (see
        :mod:`cluster_bridge`) while the owner's frames still feed the sessions."""
        return self.bridge.start(key)

    def cluster_bridge_done(self, key: object) -> None:
        self.bridge.finish(key)

    def cluster_handed(self, key: object, owner: str) -> None:
        """Old owner after the cut: follow ``owner`` from the next frame, drop upstream."""
        self.bridge.follow_on(key, owner)

    def _bridge_data(self, key: object) -> None:
        if self.share is not None:
            self.share.bridge_data(key)

    def on_bridged_frame(self, sub: Subscription, ev: d.ChannelData) -> None:
        """A held upstream frame after the cut: the upstream path, a snapshot rebased."""
        updates = self.bridge.rebase(sub, ev)
        if updates is not None:
            for upd in updates:
                self._deliver(sub, upd)
            return
        u = self.ups.get(sub.conn_id or "")
        if u is not None:
            self._on_data(u, ev)

    def cluster_follow(self, key: object, owner: str, snapshot: d.ChannelData | None) -> None:
        """Feed ``key`` from ``owner``: its state first, then its frames (on_cluster_frame)."""
        sub = self.registry.get(key)
        if sub is None:
            return
        now = self.clock()
        u = self.ups.get(sub.conn_id or "")
        if u is not None:  # subscribed here until now (the link was down): let it go
            self.placement.send_unsubscribe(u, key, sub.upstream_id)
        self.registry.assign(sub, FOLLOW_CONN, now)
        self.registry.confirm(sub, ("follow", owner), now)
        self.placement.reset_state(sub)
        if snapshot is not None:
            self.on_cluster_frame(key, snapshot)  # sessions already acked: one snapshot
        self._confirmed(sub)  # sessions waiting: ack, then the state's snapshot

    def on_cluster_frame(self, key: object, ev: d.ChannelData) -> None:
        """A followed frame takes the upstream frame's path (state, verdict, fan-out)."""
        sub = self.registry.get(key)
        if sub is None or (sub.conn_id != FOLLOW_CONN and key not in self._bridging):
            return
        self.frames_in += 1
        sub.last_data_at = self.clock()
        # The owner's stream is already continuous; following it here too means a gap or
        # a takeover later is bridged (or announced) from what these sessions last got.
        self._onward(None, sub, ev)

    def _depth_sync(self) -> DepthSync | None:
        rest_url = self.route.cfg.rest_url
        if self.dialect.name not in DEPTH_DIALECTS or not rest_url:
            return None
        return DepthSync(
            self.route.name,
            rest_url,
            self.registry,
            faults=self.faults,
            deliver=self.fanout.deliver,
            close_sessions=self.fanout.close_sessions,
            futures=self.dialect.name is DialectName.BINANCE_USDM,
        )

    # ================================================================ lifecycle
    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                name = self.route.name
                tg.create_task(
                    every(TICK, self._tick, self.faults, "hub.tick", name), name=f"hub-{name}-tick"
                )
                if self.depth is not None:
                    tg.create_task(self.depth.run(), name=f"hub-{name}-depth")
                if self.share is not None:
                    tg.create_task(self.share.run(), name=f"hub-{name}-share")
                if self.trades is not None:
                    tg.create_task(self.trades.run(), name=f"hub-{name}-trades")
                if self.route.cfg.app_ping_interval > 0:
                    tg.create_task(
                        every(self._ping_interval, self._app_pings, self.faults, "hub.ping", name),
                        name=f"hub-{name}-ping",
                    )
                await self._stop.wait()
                # The timer loops never end on their own: raising cancels them,
                # otherwise the TaskGroup (and the route, and the daemon) waits forever.
                raise _Stopped
        except* _Stopped:
            pass

    def stop(self) -> None:
        self._stop.set()

    def _tick(self) -> None:
        now = self.clock()
        pl = self.placement
        live = [cid for cid, u in self.ups.items() if u.conn.state is ConnState.OPEN]
        acts = self.registry.tick(now, live)
        for sub, sessions in acts.unanswered:
            # No connection took it, or the exchange confirmed neither the subscribe nor its
            # resend, within the bound: the sessions get the venue's error.
            self.intents.refuse(sub, sessions, d.Refusal.UNAVAILABLE)
        for sub in acts.retry:
            pl.place(sub)
        for sub in acts.unsubscribe:
            if self.share is not None and self.share.before_drop(sub):
                continue  # followers use it: handed over first, dropped after (cluster_release)
            pl.drop_upstream(sub)
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
            pl.resubscribe(u, sub)
        for conn_id in acts.reconnect:
            u = self.ups.get(conn_id)
            if u is not None and u.conn.state is ConnState.OPEN:
                u.conn.request_reconnect("every channel silent")
        for u in pl.drained():
            log.info("route %s: %s drained; closing", self.route.name, u.conn.id)
            self.route.retire(u.conn)

    def _ping_interval(self) -> float:
        return self.route.cfg.app_ping_interval

    def _app_pings(self) -> None:
        for u in list(self.ups.values()):
            if u.codec is not None and u.conn.state is ConnState.OPEN:
                self._app_ping(u)

    def _app_ping(self, u: Uplink) -> None:
        assert u.codec is not None
        cid = next(self._cid)
        frame = u.codec.ping_frame(cid)
        if frame is not None:
            u.ping_sent(cid, self.clock())
            u.send(frame)

    # ================================================================ upstream sink
    def attach(self, conn: UpstreamConnection, suffix: str | None = None) -> None:
        """A new pooled connection, opened with URL ``suffix`` (the dialect's own if None)."""
        cfg = self.route.cfg.message_budget
        self.ups[conn.id] = Uplink(
            conn,
            TokenBucket(cfg.count, cfg.per, self.clock()),
            self.dialect.url_suffix if suffix is None else suffix,
        )

    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        u = self.ups.get(conn.id)
        if u is None:
            return
        u.opened(self.dialect.open_upstream(self.intents.upstream_flags))
        assert u.codec is not None
        # The writer belongs to the open socket: it ends when the socket closes.
        conn.start_soon(u.run_writer(self.clock, self.faults), name=f"{conn.id}-writer")
        for frame in u.codec.hello():
            u.send(frame)
        if self.route.cfg.app_ping_interval > 0:
            self._app_ping(u)  # an application latency sample right away
        self.placement.place_waiting()
        # A rotation (20051, serverShutdown, max_lifetime) waits for exactly this successor:
        # start its moves now, before the exchange closes the old connection.
        if any(x.draining for x in self.ups.values()):
            self.placement.retry_migrations()

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        u = self.ups.get(conn.id)
        if u is None:
            return
        u.closed()
        if conn.draining:  # closed while draining: it is done (upstream.drain); no reconnect
            self.route.retire(conn)
        if not conn.operator_cycle:  # an operator's reconnect is no mark against it
            u.penalty.add(self.clock(), 2.0)
        self.placement.connection_lost(conn.id)
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
            self.placement.reset_state(sub)
            self.placement.place(sub)

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
    def _on_data(self, u: Uplink, ev: d.ChannelData) -> None:
        self.frames_in += 1
        sub = self.registry.lookup(u.conn.id, ev.channel)
        if sub is None:
            self.dropped_unrouted += 1  # an old channel after a move or an unsubscribe race
            return
        u.last_data_at = sub.last_data_at = self.clock()
        if self._bridging and sub.key in self._bridging:
            self.bridge.hold(sub, ev)  # a hand-over: the old owner's stream feeds until the cut
            return
        if self._recent and sub.key in self._recent and not self.placement.fresh(sub.key, ev):
            return
        self._onward(u, sub, ev)

    def _onward(self, u: Uplink | None, sub: Subscription, ev: d.ChannelData) -> None:
        """One data event, upstream or followed: channel state, its verdict, the Binance
        depth and trade continuity, then the fan-out."""
        ch: Channel = sub.attachment or self.fanout.channel(sub)
        verdict = ch.state.apply(ev)
        if verdict is not d.Integrity.OK and not self._verdict(u, sub, ch.state, verdict):
            return
        if self.depth is not None:
            synced = self.depth.on_data(sub, ev)
            if synced is None:
                return
            ev = synced
        if self.trades is not None:
            onward = self.trades.on_data(sub, ev)
            if onward is None:
                return
            ev = onward
        self._deliver(sub, ev)

    # ---------------------------------------------------------------- control events
    def _on_event(self, u: Uplink, ev: d.UpstreamEvent) -> None:
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

    def _on_subscribed(self, u: Uplink, ev: d.Subscribed) -> None:
        key = ev.key
        if key is None and ev.req_id is not None:
            key = u.req_ids.pop(ev.req_id, None)
        if key is None:
            return
        pl = self.placement
        move = pl.take_move(u.conn.id, key)
        sub = self.registry.get(key)
        if sub is None:
            pl.send_unsubscribe(u, key, ev.channel)  # nobody wants it any more
            return
        if move is not None:
            pl.finish_move(u, sub, ev.channel, move)
            return
        if sub.conn_id != u.conn.id:
            pl.send_unsubscribe(u, key, ev.channel)  # a late confirm for an abandoned try
            return
        self.registry.confirm(sub, ev.channel, self.clock())
        self._confirmed(sub)

    def _confirmed(self, sub: Subscription) -> None:
        self.intents.ack_waiting(sub)
        if self._bridging and sub.key in self._bridging:
            self._bridge_data(sub.key)  # a hand-over's subscription is live: cut the old stream

    def _on_subscribe_failed(self, u: Uplink, ev: d.SubscribeFailed) -> None:
        key = ev.key
        if key is None and ev.req_id is not None:
            key = u.req_ids.pop(ev.req_id, None)
        sub = self.registry.get(key) if key is not None else None
        now = self.clock()
        kind = f"subscribe_{ev.code}"
        if ev.action is d.ErrorAction.FAIL_SUBSCRIPTION:
            # Unknown symbol, unknown channel, bad request: the session asked for it. The
            # error is the session's; the shared connection is healthy and must stay so.
            self.intents.session_error(sub.sessions if sub is not None else (), kind)
        elif ev.action is not d.ErrorAction.ALREADY_SUBSCRIBED:
            u.conn.metrics.on_error(now, kind)  # the exchange's error on this connection
        if sub is None:
            self._retry(u, ev.retry)
            return
        if ev.action is d.ErrorAction.PLACE_ELSEWHERE:
            self.registry.unplace(sub, now)
            # The exchange's count is the truth: this socket carries what it has now.
            u.learned_capacity = self.registry.load(u.conn.id)
            log.warning(
                "route %s: %s full (%d) at %d subscriptions; placing %s elsewhere",
                self.route.name,
                u.conn.id,
                ev.code,
                u.learned_capacity,
                sub.key,
            )
            self.placement.place(sub, exclude={u.conn.id})
        elif ev.action is d.ErrorAction.ALREADY_SUBSCRIBED:
            pass  # the confirmation we already have stands
        elif ev.action is d.ErrorAction.FAIL_SUBSCRIPTION:
            self.intents.fail(sub, ev.code, ev.msg)
        self._retry(u, ev.retry)

    def _retry(self, u: Uplink, keys: tuple[d.SubKey, ...]) -> None:
        """Send again what a refused request carried besides the refused key."""
        for key in keys:
            sub = self.registry.get(key)
            if sub is not None and sub.conn_id == u.conn.id and sub.state is SubState.PENDING:
                self.placement.resubscribe(u, sub)

    def _on_info(self, u: Uplink, ev: d.Info) -> None:
        conn = u.conn
        if ev.action is d.InfoAction.RECONNECT:
            # Bitfinex 20051; other venues' notices (OKX 64008) carry their own text.
            why = f"exchange asked to reconnect ({ev.code or ev.msg or 'notice'})"
            log.warning("route %s: %s %s", self.route.name, conn.id, why)
            self._broadcast_info(ev)
            self.rotate(conn.id, why)
        elif ev.action is d.InfoAction.MAINTENANCE_START:
            conn.set_degraded(True, "maintenance started (20060)")
            self._broadcast_info(ev)
        elif ev.action is d.InfoAction.MAINTENANCE_END:
            conn.set_degraded(False, "maintenance ended (20061)")
            self._broadcast_info(ev)
            for key in self.registry.keys_on(conn.id):
                sub = self.registry.get(key)
                if sub is not None and sub.state is SubState.CONFIRMED:
                    self.placement.resubscribe(u, sub)

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
        self.intents.broadcast(d.compact({"event": "info", "code": ev.code, "msg": ev.msg}))

    def _verdict(
        self, u: Uplink | None, sub: Subscription, state: d.ChannelState, verdict: d.Integrity
    ) -> bool:
        """Act on a state's verdict other than OK; True: deliver the frame as it is."""
        if verdict is d.Integrity.DUPLICATE:
            self.tape_duplicates += 1  # the sessions already have this trade
            return False
        if verdict is d.Integrity.BRIDGED:
            # A resumed trades channel: the trades the sessions missed, once, as updates.
            bridge = state.take_bridge() if isinstance(state, d.TradeTape) else None
            self.resumes_bridged += 1
            if bridge is not None:
                self.trades_bridged += bridge.trades
                for frame in bridge.frames:
                    self._deliver(sub, frame)
            return False
        if verdict is d.Integrity.ANNOUNCED:
            self.resumes_announced += 1
            log.warning(
                "route %s: %s resumed after a gap longer than the exchange's snapshot; "
                "the sessions get it as a new snapshot",
                self.route.name,
                sub.key,
            )
            return True
        if u is None:  # a followed channel: the owner's state again, announced as a gap
            self.mismatches += 1
            log.warning("route %s: %s %s on a followed channel", self.route.name, sub.key, verdict)
            if self.share is not None:
                self.share.resync(sub.key)
            return False
        self._integrity_failure(u, sub, verdict)
        return verdict is not d.Integrity.MISMATCH

    def _integrity_failure(self, u: Uplink, sub: Subscription, verdict: d.Integrity) -> None:
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
            self.placement.resubscribe(u, sub)

    # ================================================================ route-facing API
    def candidates(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[Candidate]:
        return self.placement.candidates(exclude)

    def move(self, sub: Subscription, target: str, reason: str) -> bool:
        return self.placement.move(sub, target, reason)

    def rotate(self, conn_id: str, reason: str) -> None:
        self.placement.rotate(conn_id, reason)

    def drain(self, conn_id: str, reason: str) -> int:
        return self.placement.drain(conn_id, reason)

    def retry_migrations(self) -> None:
        self.placement.retry_migrations()

    async def serve_session(
        self, ws: ServerConnection, session: Session, path: str, query: str
    ) -> None:
        await self.intents.serve(ws, session, path, query)

    def members_of(self, sub: Subscription) -> list[Member]:
        return self.fanout.members(sub)

    @property
    def sessions(self) -> dict[int, Member]:
        return self.intents.members

    # ================================================================ views
    def subscriptions_view(self) -> list[dict[str, object]]:
        now = self.clock()
        return [s.as_dict(now) for s in self.registry.subscriptions()]

    def statistics(self) -> HubStats:
        reg = self.registry.statistics()
        ts = self.trades.statistics() if self.trades is not None else None
        return HubStats(
            sessions=len(self.intents.members),
            connections=len(self.ups),
            subscriptions=reg.by_state,
            frames_in=self.frames_in,
            deliveries=self.fanout.deliveries,
            dropped_unrouted=self.dropped_unrouted,
            resubscribes=reg.resubscribes,
            moves=self.placement.moves_done,
            checksum_mismatches=self.mismatches,
            slow_consumers_closed=self.intents.slow_closed,
            duplicates_dropped=self.placement.duplicates
            + self.tape_duplicates
            + (ts.duplicates if ts else 0),
            dropped_sends=sum(u.dropped_sends for u in self.ups.values()),
            session_errors=dict(self.intents.session_errors),
            trade_resumes={
                "bridged": self.resumes_bridged + (ts.bridged if ts else 0),
                "announced": self.resumes_announced + (ts.announced if ts else 0),
            },
            trades_bridged=self.trades_bridged + (ts.trades_bridged if ts else 0),
        )

    def __repr__(self) -> str:
        return f"<Hub {self.route.name} sessions={len(self.intents.members)} ups={len(self.ups)}>"
