"""Placement of shared subscriptions on upstream connections, and make-before-break moves.

:class:`Placement` executes the :class:`~wsgate.core.balancer.Balancer`'s choice (which
connection takes a new subscription) and the registry's bookkeeping (assign, resubscribe,
drop). A *move* subscribes on the target first and switches when the target confirms;
while both connections deliver, :meth:`Placement.fresh` drops what sessions already have.
Rotations (20051, serverShutdown, max lifetime), operator drains and the rebalancer all
use the same move.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsgate.core.balancer import Balancer, Candidate
from wsgate.core.states import ConnState
from wsgate.core.subscriptions import Subscription, SubscriptionRegistry, SubState
from wsgate.dialects import base as d
from wsgate.errors import CapacityError, NoCandidateError
from wsgate.logthrottle import Throttled
from wsgate.runtime.routing.fanout import FanOut
from wsgate.runtime.routing.seams import ClusterShare, HubRoute
from wsgate.runtime.upstream.uplink import Uplink

__all__ = ["Move", "Placement"]

log = logging.getLogger("wsgate.hub")

RECENT_IDS = 4096  # dedup window during a make-before-break move


@dataclass
class Move:
    """A make-before-break move of one subscription to another connection."""

    sub: Subscription
    target: str
    reason: str


class Placement:
    def __init__(
        self,
        route: HubRoute,
        registry: SubscriptionRegistry,
        balancer: Balancer,
        ups: dict[str, Uplink],
        fanout: FanOut,
        dialect: d.Dialect,
        clock: Callable[[], float],
        on_confirmed: Callable[[Subscription], None],
    ) -> None:
        self.route = route
        self.registry = registry
        self.balancer = balancer
        self.ups = ups
        self.fanout = fanout
        self.dialect = dialect
        self.clock = clock
        self.on_confirmed = on_confirmed  # acks the sessions waiting for a subscription
        # Answers the sessions waiting for a subscription nothing can take (set by the hub).
        self.on_no_capacity: Callable[[Subscription], None] = lambda sub: None
        self._grow_failures = Throttled(log, logging.WARNING)
        self.moves: dict[tuple[str, Any], Move] = {}  # (target conn, key) -> move
        self.recent: dict[Any, deque[int]] = {}  # key -> recent dedup ids while moving
        self.moves_done = 0
        self.duplicates = 0
        self._req = itertools.count(1)
        self.sharded = isinstance(dialect, d.ShardedDialect)
        self.share: ClusterShare | None = None  # share = "cluster": the data plane

    def shard_of(self, key: Any) -> str | None:
        """The upstream suffix ``key`` must live on; None when every connection can carry it."""
        if not self.sharded:
            return None
        return d.upstream_suffix(self.dialect, key)

    # ---------------------------------------------------------------- candidates
    def candidates(
        self, exclude: set[str] | frozenset[str] = frozenset(), shard: str | None = None
    ) -> list[Candidate]:
        """Every connection as the balancer sees it; ``shard``: only those opened with it."""
        now = self.clock()
        route = self.route
        cap = route.cfg.max_subscriptions_per_connection
        out = []
        for cid, u in self.ups.items():
            if shard is not None and u.suffix != shard:
                continue
            conn = u.conn
            m = conn.metrics
            weight = route.endpoint_weight(conn.settings.endpoint)
            out.append(
                Candidate(
                    id=cid,
                    weight=float(weight),
                    sessions=0,
                    subscriptions=self.registry.load(cid) + self.moving_to(cid),
                    capacity=cap if u.learned_capacity is None else min(cap, u.learned_capacity),
                    message_rate=m.msg_rate(now),
                    latency=m.latency_peak.value,
                    health=route.health_of(conn),
                    eligible=(
                        conn.state is ConnState.OPEN
                        and u.codec is not None
                        and not u.draining
                        and cid not in exclude
                        and weight > 0
                    ),
                    connected_at=conn.opened_at,
                    error_penalty=u.penalty.value(now),
                )
            )
        return out

    def moving_to(self, conn_id: str) -> int:
        return sum(1 for (target, _k) in self.moves if target == conn_id) if self.moves else 0

    def moving_from(self, u: Uplink) -> bool:
        return any(mv.sub.conn_id == u.conn.id for mv in self.moves.values())

    # ---------------------------------------------------------------- placing
    def place(self, sub: Subscription, exclude: set[str] | None = None) -> None:
        if sub.state is not SubState.DESIRED or not sub.sessions:
            return
        if self.share is not None and self.share.gate(sub):
            return  # another node may own it: the cluster decides, then calls back
        shard = self.shard_of(sub.key)
        try:
            decision = self.balancer.pick(self.candidates(exclude or set(), shard), self.clock())
        except NoCandidateError as exc:
            mine = [u for u in self.ups.values() if shard is None or u.suffix == shard]
            coming = any(
                u.conn.state in (ConnState.IDLE, ConnState.CONNECTING, ConnState.BACKOFF)
                or (u.conn.state is ConnState.OPEN and u.codec is None)
                or u.conn.operator_cycle  # an operator's reconnect: back in a moment
                for u in mine
                if not u.draining
            )
            # Nothing on its way is a real load-balancer issue; a shard's first connection
            # (opened on demand) is not.
            if not coming and (shard is None or mine):
                self.route.no_candidate(str(exc))
            if not self.grow_pool(shard) and not coming:
                self.on_no_capacity(sub)  # no connection will come: answer now, not never
            return
        if decision.fail_open:
            self.route.fail_open(decision.reason)
        u = self.ups[decision.candidate_id]
        self.registry.assign(sub, u.conn.id, self.clock(), written=False)
        self.fanout.channel(sub)
        self.send_subscribe(u, sub.key, sub)
        if self.registry.load(u.conn.id) >= self.route.cfg.max_subscriptions_per_connection:
            self.grow_pool(shard)  # open the next connection before anyone needs it

    def place_waiting(self) -> None:
        """Place every subscription still waiting for a home (a connection just opened)."""
        for sub in self.registry.subscriptions():
            if sub.state is SubState.DESIRED and sub.sessions:
                self.place(sub)

    def grow_pool(self, shard: str | None = None) -> bool:
        """Ask for one more connection; False when a limit forbids it."""
        try:
            self.route.grow(suffix=shard)
        except CapacityError as exc:
            self._grow_failures.event(
                f"route {self.route.name}: cannot add an upstream connection: {exc}"
            )
            return False
        return True

    def send_subscribe(self, u: Uplink, key: Any, sub: Subscription | None = None) -> None:
        """Queue the subscribe; ``sub`` (assigned ``written=False``) starts its confirmation
        clock when the frame leaves, not while it waits for the connection's budget."""
        assert u.codec is not None
        req = next(self._req)
        u.req_ids[req] = key
        if sub is None:
            u.send(u.codec.subscribe_frame(key, req))
            return
        registry, conn_id, attempt = self.registry, u.conn.id, sub.attempts

        def note(now: float) -> None:
            registry.written(sub, conn_id, attempt, now)

        if not u.send(u.codec.subscribe_frame(key, req), note):
            registry.send_dropped(sub, conn_id, attempt, self.clock())

    def send_unsubscribe(self, u: Uplink, key: Any, channel: object) -> None:
        if u.codec is None or channel is None:
            return
        req = next(self._req)
        u.send(u.codec.unsubscribe_frame(key, channel, req))  # type: ignore[arg-type]

    def resubscribe(self, u: Uplink, sub: Subscription) -> None:
        old = sub.upstream_id
        self.send_unsubscribe(u, sub.key, old)
        self.registry.assign(sub, u.conn.id, self.clock(), written=False)
        self.reset_state(sub)
        self.send_subscribe(u, sub.key, sub)

    def reset_state(self, sub: Subscription) -> None:
        ch = sub.attachment
        if ch is not None:
            ch.state.reset()

    def drop_upstream(self, sub: Subscription) -> None:
        u = self.ups.get(sub.conn_id or "")
        if u is not None:
            self.send_unsubscribe(u, sub.key, sub.upstream_id)
        self.registry.dropped(sub)
        if self.share is not None:
            self.share.dropped(sub)

    def connection_lost(self, conn_id: str) -> None:
        """Forget moves towards a lost connection."""
        for key in [k for (target, k) in self.moves if target == conn_id]:
            self.moves.pop((conn_id, key), None)

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
            or (self.sharded and u.suffix != self.shard_of(sub.key))  # silent on another path
        ):
            return False
        self.moves[(target, sub.key)] = Move(sub, target, reason)
        self.recent.setdefault(sub.key, deque(maxlen=RECENT_IDS))
        self.send_subscribe(u, sub.key)
        return True

    def take_move(self, conn_id: str, key: Any) -> Move | None:
        return self.moves.pop((conn_id, key), None)

    def finish_move(self, u: Uplink, sub: Subscription, channel: object, mv: Move) -> None:
        old = self.ups.get(sub.conn_id or "")
        old_channel = sub.upstream_id
        now = self.clock()
        if sub.state is not SubState.CONFIRMED:
            # The old home vanished meanwhile: the target simply becomes the home.
            self.registry.assign(sub, u.conn.id, now)
            self.registry.confirm(sub, channel, now)
            self.on_confirmed(sub)
        else:
            self.registry.assign(sub, u.conn.id, now)
            self.registry.confirm(sub, channel, now)
            if old is not None:
                self.send_unsubscribe(old, sub.key, old_channel)
        self.moves_done += 1
        if not any(k == sub.key for (_t, k) in self.moves):
            self.recent.pop(sub.key, None)
        log.info("route %s: moved %s to %s (%s)", self.route.name, sub.key, u.conn.id, mv.reason)

    def fresh(self, key: Any, ev: d.ChannelData) -> bool:
        """During a move both connections deliver: drop what the session already has."""
        ident = self.dialect.dedup_id(ev)
        if ident is None:
            return True
        seen = self.recent[key]
        if ident in seen:
            self.duplicates += 1
            return False
        seen.append(ident)
        return True

    def rotate(self, conn_id: str, reason: str) -> None:
        """Replace a connection make-before-break (20051, serverShutdown, max lifetime)."""
        u = self.ups.get(conn_id)
        if u is None or u.draining or not u.conn.drain(reason):
            return  # gone, already on its way out, or not up (nothing to move)
        self.route.grow(force=True, suffix=u.suffix if self.sharded else None)
        self._migrate(u, reason)

    def drain(self, conn_id: str, reason: str) -> int:
        u = self.ups.get(conn_id)
        if u is None:
            return 0
        if not u.draining and not u.conn.drain(reason):
            self.route.retire(u.conn)  # not up: nothing to move, it just goes
            return 0
        return self._migrate(u, reason)

    def _migrate(self, u: Uplink, reason: str) -> int:
        started = 0
        for key in self.registry.keys_on(u.conn.id):
            sub = self.registry.get(key)
            if sub is None or sub.state is not SubState.CONFIRMED:
                continue
            shard = self.shard_of(key)
            targets = [c for c in self.candidates({u.conn.id}, shard) if c.eligible]
            if not targets:
                continue  # the hub's tick retries once the new connection is open
            decision = self.balancer.pick(targets, self.clock())
            started += self.move(sub, decision.candidate_id, reason)
        return started

    def retry_migrations(self) -> None:
        for u in list(self.ups.values()):
            if u.draining:
                self._migrate(u, "drain")

    def drained(self) -> list[Uplink]:
        """Draining connections with nothing left on them or moving away: ready to retire."""
        return [
            u
            for u in self.ups.values()
            if u.draining and not self.registry.keys_on(u.conn.id) and not self.moving_from(u)
        ]
