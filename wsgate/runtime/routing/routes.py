"""The runtime of one route: its pool of upstream connections, its hub and its sessions.

Shared dialects (Bitfinex, Binance) hand sessions to a :class:`~wsgate.runtime.routing.hub.Hub`
that multiplexes subscriptions over the pool. The raw dialect and authenticated
sessions get a dedicated upstream each (:mod:`wsgate.runtime.routing.relay`), opened when the
session arrives: a raw route keeps no pool (see ``_floor``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection

from wsgate.config import RouteConfig
from wsgate.core.adaptive import AdaptiveSwitch
from wsgate.core.balancer import Balancer, Candidate, PickCounts
from wsgate.core.endpoints import endpoint_for_new_connection
from wsgate.core.histogram import Histogram
from wsgate.core.rebalance import Move, Rebalancer
from wsgate.core.states import ConnState, Transition
from wsgate.core.types import ConnectionType, DialectName, StrategyName
from wsgate.dialects.registry import dialect_for
from wsgate.errors import CapacityError, InvalidPath
from wsgate.logthrottle import Throttled
from wsgate.runtime.downstream.session import Flusher, Session
from wsgate.runtime.routing.hub import Hub
from wsgate.runtime.routing.relay import Relay, run_relay
from wsgate.runtime.system.faults import Faults
from wsgate.runtime.upstream.connection import (
    HostBudgets,
    UpstreamConnection,
    UpstreamSettings,
    make_ssl_context,
)
from wsgate.urls import join_url

__all__ = ["RouteEnv", "RouteRuntime"]

log = logging.getLogger("wsgate.route")


@dataclass
class RouteEnv:
    """What every route shares: budgets, randomness, clock, limits, event listeners."""

    budgets: HostBudgets
    rng: random.Random
    clock: Callable[[], float] = time.monotonic
    history_points: int = 1000
    per_message_metrics: bool = True
    max_connections: int = 1000
    gateway_linger: float = 30.0
    client_messages_per_second: float = 50.0
    max_subscriptions_per_session: int = 1024  # gateway default; a route may set its own
    on_transition: list[Callable[[UpstreamConnection, Transition], None]] = field(
        default_factory=list
    )
    total_connections: Callable[[], int] = lambda: 0
    faults: Faults = field(default_factory=Faults)  # the error policy's counts (runtime.faults)
    flusher: Flusher = field(default_factory=Flusher)  # shared with the gateway's sessions

    def __post_init__(self) -> None:
        self.flusher.faults = self.faults

    # (route, switch) for every change of what `adaptive` applies: the event bus listens.
    on_adaptive_switch: list[Callable[[str, AdaptiveSwitch], None]] = field(default_factory=list)

    def transition(self, conn: UpstreamConnection, t: Transition) -> None:
        for cb in self.on_transition:
            cb(conn, t)


class RouteRuntime:
    def __init__(self, cfg: RouteConfig, env: RouteEnv) -> None:
        self.cfg = cfg
        self.env = env
        self.dialect = dialect_for(cfg.dialect)
        self.pool: dict[str, UpstreamConnection] = {}
        self.relays: dict[str, UpstreamConnection] = {}
        self.sessions: set[Session] = set()
        self.health: dict[str, float] = {}  # conn id -> score, refreshed by the health job
        self.weights: dict[str, int] = {}  # endpoint name -> runtime weight override
        # RTT samples of every connection of the route, by kind ("ws", "app").
        self.rtt: dict[str, Histogram] = {"ws": Histogram(), "app": Histogram()}
        self.no_candidate_events = 0
        self._lb_log = Throttled(log, logging.WARNING)
        self.fail_open_events = 0
        self.last_lb_issue: str | None = None
        self._ids = itertools.count(1)
        # Pool size wanted per upstream URL suffix. A sharded venue (Binance USD-M /public and
        # /market, Bybit spot and linear) starts with the dialect's default suffix only; the
        # other shards open on demand, when a subscription needs one.
        self._targets: dict[str, int] = {self.dialect.url_suffix: self._floor(cfg)}
        self.suffix_of: dict[str, str] = {}  # pooled connection id -> its URL suffix
        self._stopped = asyncio.Event()
        self._changed = asyncio.Event()
        self.balancer = Balancer(
            cfg.strategy,
            env.rng,
            slow_start=cfg.slow_start,
            fail_open=not cfg.type.authenticated,  # trading fails closed
        )
        self.balancer.on_adaptive_switch = self._adaptive_switched
        self.hub: Hub | None = (
            Hub(
                self,
                self.dialect,
                self.balancer,
                linger=env.gateway_linger,
                client_rate=lambda: env.client_messages_per_second,
                subscription_cap=self.subscription_cap,
                clock=env.clock,
                faults=env.faults,
            )
            if self.dialect.shared
            else None
        )
        self.rebalancer = Rebalancer()
        self.strategy_override: Any = None  # set by `wsgate routes strategy`, kept over reloads
        self.drained: set[str] = set()  # connection ids drained by an operator
        self._configure_budgets()

    def _floor(self, cfg: RouteConfig) -> int:
        """Pooled connections kept open. A raw route relays each session 1:1 on a connection
        opened at the session's own path and query, so a warm one could serve nobody: it
        would be an idle connection the exchange counts (config check refuses
        min_connections there; this holds for configs built in code too)."""
        return cfg.min_connections if self.dialect.shared else 0

    @property
    def name(self) -> str:
        return self.cfg.name

    def _configure_budgets(self) -> None:
        # share = "cluster": the hosts' connect budgets count for the whole cluster.
        self.env.budgets.forget_route(self.name)
        for ep in self.cfg.endpoints:
            s = self._settings(ep.name, ep.url)
            self.env.budgets.configure(
                s.host,
                self.cfg.connect_budget.count,
                self.cfg.connect_budget.per,
                route=self.name,
                cluster=self.cfg.share == "cluster",
            )

    def _settings(self, endpoint: str, url: str, *, reconnect: bool = True) -> UpstreamSettings:
        c = self.cfg
        tls = c.tls
        ctx = (
            make_ssl_context(tls.verify, tls.ca_file, tls.client_cert, tls.client_key)
            if url.startswith("wss:")
            else None
        )
        return UpstreamSettings(
            route=c.name,
            endpoint=endpoint,
            url=url,
            conn_type=c.type,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            stale_after=c.stale_after,
            backoff_initial=c.backoff_initial,
            backoff_max=c.backoff_max,
            min_uptime=c.min_uptime,
            max_lifetime=c.max_lifetime or None,
            use_proxy=c.use_proxy,
            ssl_context=ctx,
            reconnect=reconnect,
            history_points=self.env.history_points,
            per_message_metrics=self.env.per_message_metrics,
        )

    # ---------------------------------------------------------------- endpoints
    def _observe_rtt(self, kind: str, rtt: float) -> None:
        hist = self.rtt.get(kind)
        if hist is not None:
            hist.observe(rtt)

    def endpoint_weight(self, name: str) -> int:
        if name in self.weights:
            return self.weights[name]
        for ep in self.cfg.endpoints:
            if ep.name == name:
                return ep.weight
        return 0  # an endpoint removed by a reload takes no new work

    def pick_endpoint(self, serves: str = "streams") -> tuple[str, str]:
        """The endpoint for a new connection (policy: core.endpoints), by current weights,
        among those that serve ``serves`` (``streams``, or a Binance ``ws_api`` session)."""
        eligible = self.cfg.endpoints_serving(serves)
        if not eligible:
            raise CapacityError(f"routes.{self.name} has no endpoint that serves {serves}")
        counts: dict[str, int] = {}
        for c in self.connections():
            counts[c.settings.endpoint] = counts.get(c.settings.endpoint, 0) + 1
        name = endpoint_for_new_connection(
            [(e.name, self.endpoint_weight(e.name)) for e in eligible], counts
        )
        return name, self.cfg.endpoint(name).url

    def serves_for(self, upstream_path: str) -> str:
        """``ws_api`` for a session of the dialect's WebSocket API, else ``streams``."""
        api = getattr(self.dialect, "ws_api_path", None)
        return "ws_api" if api and upstream_path.split("?")[0] == api else "streams"

    def _check_capacity(self) -> None:
        if self.env.total_connections() >= self.env.max_connections:
            raise CapacityError(
                f"daemon.max_connections = {self.env.max_connections} upstream connections reached"
            )
        if len(self.pool) + len(self.relays) >= self.cfg.max_connections:
            raise CapacityError(
                f"routes.{self.name}.max_connections = {self.cfg.max_connections} reached"
            )

    def _new_connection(
        self, sink: Any, *, dedicated: bool, url_suffix: str = "", serves: str = "streams"
    ) -> UpstreamConnection:
        self._check_capacity()
        endpoint, url = self.pick_endpoint(serves)
        n = next(self._ids)
        conn_id = f"{self.name}-{'s' if dedicated else 'c'}{n}"
        conn = UpstreamConnection(
            conn_id,
            self._settings(endpoint, join_url(url, url_suffix), reconnect=not dedicated),
            sink,
            self.env.budgets,
            self.env.rng,
            clock=self.env.clock,
            on_transition=self.env.transition,
            faults=self.env.faults,
            flusher=self.env.flusher,
        )
        conn.metrics.latency_sink = self._observe_rtt
        if self.hub is not None and not dedicated:
            hub = self.hub
            conn.expects_data = lambda: bool(hub.registry.keys_on(conn.id))
            conn.on_lifetime = lambda: hub.rotate(conn.id, "max_lifetime reached")
        return conn

    # ---------------------------------------------------------------- pool
    async def run(self) -> None:
        """Keep the pool at its target size until stopped; run the hub beside it."""
        async with asyncio.TaskGroup() as tg:
            if self.hub is not None:
                tg.create_task(self.hub.run(), name=f"hub-{self.name}")
            while not self._stopped.is_set():
                for suffix, target in list(self._targets.items()):
                    while self._pooled(suffix) < target:
                        try:
                            conn = self._new_connection(
                                self.hub or self, dedicated=False, url_suffix=suffix
                            )
                        except CapacityError as exc:
                            log.error("route %s: cannot open a pool connection: %s", self.name, exc)
                            self._targets[suffix] = self._pooled(suffix)
                            break
                        self.pool[conn.id] = conn
                        self.suffix_of[conn.id] = suffix
                        if self.hub is not None:
                            self.hub.attach(conn, suffix)
                        tg.create_task(self._run_pooled(conn), name=conn.id)
                self._changed.clear()
                await self._changed.wait()
            for conn in list(self.pool.values()):
                conn.stop()
            if self.hub is not None:
                self.hub.stop()

    async def _run_pooled(self, conn: UpstreamConnection) -> None:
        try:
            await conn.run()
        finally:
            self.pool.pop(conn.id, None)
            self.suffix_of.pop(conn.id, None)
            if self.hub is not None:
                self.hub.detach(conn)
            self._changed.set()

    def _pooled(self, suffix: str) -> int:
        return sum(1 for s in self.suffix_of.values() if s == suffix)

    def grow(self, force: bool = False, suffix: str | None = None) -> None:
        """One more pooled connection (placement is full, or a rotation needs a successor).

        ``suffix``: the upstream path it serves (a sharded venue); the dialect's default if None.
        """
        if suffix is None:
            suffix = self.dialect.url_suffix
        if len(self.pool) >= self.cfg.max_connections:
            raise CapacityError(f"routes.{self.name}.max_connections = {self.cfg.max_connections}")
        opening = sum(
            1
            for cid, c in self.pool.items()
            if not c.state.is_up and self.suffix_of.get(cid) == suffix
        )
        if opening and not force:
            return  # one is already on its way
        self._check_capacity()
        self._targets[suffix] = self._pooled(suffix) + 1
        self._changed.set()

    def retire(self, conn: UpstreamConnection) -> None:
        """Close a drained or rotated-out connection for good (once: a second call is a no-op)."""
        if conn.id in self.pool and not conn.stopping:
            suffix = self.suffix_of.get(conn.id, self.dialect.url_suffix)
            floor = self._floor(self.cfg) if suffix == self.dialect.url_suffix else 0
            self._targets[suffix] = max(floor, self._targets.get(suffix, 0) - 1)
            conn.stop()

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()
        for conn in list(self.relays.values()):
            conn.stop()

    # UpstreamSink of a pooled connection without a hub (none: a raw route keeps no pool).
    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        pass

    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None:
        pass

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        pass

    # ------------------------------------------------------- the hub's view (seams.HubRoute)
    def subscription_cap(self) -> int:
        """Shared subscriptions one session may hold here (the route's, else the gateway's)."""
        return self.cfg.max_subscriptions_per_session or self.env.max_subscriptions_per_session

    def health_of(self, conn: UpstreamConnection) -> float:
        return self.health.get(conn.id, 100.0)

    def cadence(self, key: Any, dialect_default: float | None) -> float:
        channel = getattr(key, "channel", "")
        configured = self.cfg.cadence(channel) if channel else None
        if configured is not None:
            return configured
        return dialect_default if dialect_default is not None else self.cfg.stale_after

    def no_candidate(self, reason: str) -> None:
        self.no_candidate_events += 1
        self.last_lb_issue = reason
        # Every placement retry (4 a second per waiting subscription) reports it: one line
        # per interval with a count, not a storm.
        self._lb_log.event(f"route {self.name}: no eligible upstream connection: {reason}")

    def fail_open(self, reason: str) -> None:
        self.fail_open_events += 1
        self.last_lb_issue = reason
        log.warning("route %s: every candidate unhealthy; failing open: %s", self.name, reason)

    # ---------------------------------------------------------------- sessions
    def validate_path(self, path: str, query: str) -> None:
        """Raise InvalidPath at the handshake, before a session exists."""
        codec = self.dialect.open_session(path, query)
        private = bool(getattr(codec, "private", False))
        serves = self.serves_for(getattr(codec, "private_path", None) or "")
        if not self.cfg.endpoints_serving(serves):
            raise InvalidPath(
                f"route {self.name} has no endpoint that serves {serves}"
                ' (every endpoint has serves = "ws_api")',
                404,
            )
        if private and not self.cfg.type.authenticated:
            raise InvalidPath(
                f"route {self.name} is {self.cfg.type.value}: user data and the WebSocket API"
                " need a user_data or trading route",
                403,
            )
        if (
            self.cfg.dialect is DialectName.BINANCE
            and self.cfg.type.authenticated
            and not private
            and bool(getattr(codec, "initial", None))
        ):
            raise InvalidPath(
                f"route {self.name} is {self.cfg.type.value}: it serves /ws/<listenKey>,"
                " /ws-api/v3 and /ws; market streams go on a market_data route",
                403,
            )

    async def serve_session(
        self, ws: ServerConnection, session: Session, path: str = "", query: str = ""
    ) -> None:
        self.sessions.add(session)
        try:
            if self.hub is not None:
                await self.hub.serve_session(ws, session, path, query)
            else:
                suffix = path + (f"?{query}" if query else "")
                await self._serve_relay(ws, session, suffix, None)
        finally:
            self.sessions.discard(session)

    async def relay_after_auth(
        self, ws: ServerConnection, session: Session, frame: str, upstream_path: str | None
    ) -> None:
        # An empty frame means "nothing to send first" (Binance user data is URL-keyed).
        await self._serve_relay(ws, session, upstream_path or "", frame or None)

    async def _serve_relay(
        self, ws: ServerConnection, session: Session, suffix: str, first: str | None
    ) -> None:
        holder: list[UpstreamConnection] = []

        serves = self.serves_for(suffix)

        def make(relay: Relay) -> UpstreamConnection:
            conn = self._new_connection(relay, dedicated=True, url_suffix=suffix, serves=serves)
            conn.expects_data = lambda: relay.client_spoke  # silence matters once asked
            holder.append(conn)
            self.relays[conn.id] = conn
            return conn

        try:
            await run_relay(ws, session, make, open_timeout=10.0, first_frame=first)
        except* CapacityError as eg:
            log.warning("route %s: session %d refused: %s", self.name, session.id, eg.exceptions[0])
            await ws.close(1013, "upstream capacity reached")
        finally:
            for conn in holder:
                self.relays.pop(conn.id, None)

    # ---------------------------------------------------------------- runtime control
    def set_weight(self, endpoint: str, weight: int) -> None:
        if endpoint not in {e.name for e in self.cfg.endpoints}:
            names = ", ".join(e.name for e in self.cfg.endpoints)
            raise KeyError(f"route {self.name} has no endpoint {endpoint!r} (endpoints: {names})")
        self.weights[endpoint] = weight

    def set_strategy(self, strategy: Any) -> None:
        self.strategy_override = strategy
        self.balancer.strategy = strategy

    def reset_strategy(self) -> None:
        """Drop the operator's strategy: the config file's applies again."""
        self.strategy_override = None
        self.balancer.strategy = self.cfg.strategy

    def reset_weight(self, endpoint: str | None = None) -> list[str]:
        """Drop the operator's weight of ``endpoint`` (all when None); the names reset."""
        names = list(self.weights) if endpoint is None else [endpoint]
        if endpoint is not None and endpoint not in {e.name for e in self.cfg.endpoints}:
            known = ", ".join(e.name for e in self.cfg.endpoints)
            raise KeyError(f"route {self.name} has no endpoint {endpoint!r} (endpoints: {known})")
        for name in names:
            self.weights.pop(name, None)
        return names

    def drain(self, conn_id: str, reason: str) -> int:
        """No new placements; move subscriptions away make-before-break, then close."""
        conn = self.pool.get(conn_id)
        if conn is None:
            raise KeyError(conn_id)
        self.drained.add(conn_id)
        if self.hub is None:
            self.retire(conn)
            return 0
        started = self.hub.drain(conn_id, reason)
        suffix = self.suffix_of.get(conn_id, self.dialect.url_suffix)
        floor = self.cfg.min_connections if suffix == self.dialect.url_suffix else 1
        if self._pooled(suffix) <= floor:
            self.grow(force=True, suffix=suffix)  # the drained one leaves: keep the floor
        return started

    def plan_rebalance(self, now: float, *, dry_run: bool, force: bool = False) -> list[Move]:
        """Moves that would even out subscriptions (executed make-before-break unless dry).

        The background loop goes through the planner's hysteresis (sustained imbalance,
        bounded rate); an operator's explicit request (``force``) skips the waiting.
        """
        if self.hub is None:
            return []
        hub = self.hub
        loads: dict[str, list[str]] = {}
        by_name: dict[str, Any] = {}
        for sub in hub.registry.subscriptions():
            if sub.conn_id is not None and sub.state.value == "confirmed":
                loads.setdefault(sub.conn_id, []).append(str(sub.key))
                by_name[str(sub.key)] = sub
        candidates = hub.candidates()
        if dry_run or force:
            # A preview must not advance the real planner's hysteresis clock.
            preview = Rebalancer(
                imbalance_ratio=self.rebalancer.imbalance_ratio,
                sustain=0.0,
                min_interval=0.0,
                max_moves_per_run=self.rebalancer.max_moves_per_run,
            )
            moves = preview.plan(loads, candidates, now)
            if dry_run:
                return moves
        else:
            moves = self.rebalancer.plan(loads, candidates, now)
        for mv in moves:
            moving = by_name.get(mv.subscription)
            if moving is not None:
                hub.move(moving, mv.target, "rebalance")
        return moves

    # ---------------------------------------------------------------- balancing views
    def _adaptive_switched(self, switch: AdaptiveSwitch) -> None:
        for cb in self.env.on_adaptive_switch:
            cb(self.name, switch)

    def candidates(self, now: float, picked: PickCounts | None = None) -> list[Candidate]:
        """The route's open pooled connections as the balancer sees them.

        The hub's own placements use :meth:`Hub.candidates`; this view serves callers
        that hand connections out (``Gateway.get_connection``, which counts its picks
        in ``picked``) and the health job's look for ``adaptive``.
        """
        hub = self.hub
        out = []
        for c in self.pool.values():
            if not c.state.is_up:
                continue
            out.append(
                Candidate(
                    id=c.id,
                    weight=float(self.endpoint_weight(c.settings.endpoint)),
                    subscriptions=hub.registry.load(c.id) if hub else 0,
                    capacity=self.cfg.max_subscriptions_per_connection if hub else 0,
                    message_rate=c.metrics._rate_in.rate(now),
                    latency=c.metrics.latency_peak.value,
                    health=self.health_of(c),
                    connected_at=c.opened_at,
                    picked=picked.value(c.id, now) if picked is not None else 0.0,
                )
            )
        return out

    def observe_balance(self, now: float) -> None:
        """Give ``adaptive`` a fresh look at the pool (the health job), without a pick."""
        if self.balancer.strategy is StrategyName.ADAPTIVE:
            cands = self.hub.candidates() if self.hub is not None else self.candidates(now)
            self.balancer.observe(cands, now)

    # ---------------------------------------------------------------- views
    def connections(self) -> list[UpstreamConnection]:
        return [*self.pool.values(), *self.relays.values()]

    def open_connections(self) -> int:
        return sum(1 for c in self.connections() if c.state.is_up)

    def healthy(self) -> bool:
        return any(c.state is ConnState.OPEN for c in self.connections())

    def reconfigure(self, cfg: RouteConfig) -> None:
        """Apply a changed route config; live connections on removed endpoints are rotated."""
        old_endpoints = {e.name for e in self.cfg.endpoints}
        if cfg.strategy != self.cfg.strategy:
            self.strategy_override = None  # the file changed the strategy: the file wins
        self.cfg = cfg
        self.balancer.strategy = self.strategy_override or cfg.strategy
        # Operator weights survive a reload for endpoints that still exist (stable names).
        self.weights = {
            k: v for k, v in self.weights.items() if k in {e.name for e in cfg.endpoints}
        }
        self.balancer.slow_start = cfg.slow_start
        base = self.dialect.url_suffix
        self._targets[base] = max(self._targets.get(base, 0), self._floor(cfg))
        self._configure_budgets()
        gone = old_endpoints - {e.name for e in cfg.endpoints}
        for conn in self.connections():
            if conn.settings.endpoint not in gone:
                settings = self._settings(conn.settings.endpoint, conn.settings.url)
                conn.update_settings(
                    dataclasses.replace(settings, reconnect=conn.settings.reconnect)
                )
        for conn in list(self.pool.values()):
            if conn.settings.endpoint in gone:
                if self.hub is not None:
                    self.hub.rotate(conn.id, "endpoint removed by reload")
                else:
                    self.retire(conn)
        self._changed.set()

    @property
    def conn_type(self) -> ConnectionType:
        return self.cfg.type

    def __repr__(self) -> str:
        return f"<RouteRuntime {self.name} pool={len(self.pool)} sessions={len(self.sessions)}>"
