"""The runtime of one route: its pool of upstream connections and its sessions."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection

from wsgate.config import RouteConfig
from wsgate.core.states import ConnState, Transition
from wsgate.core.types import DialectName
from wsgate.runtime.relay import Relay, run_relay
from wsgate.runtime.session import Session
from wsgate.runtime.upstream import (
    HostBudgets,
    UpstreamConnection,
    UpstreamSettings,
    make_ssl_context,
)

__all__ = ["RouteEnv", "RouteRuntime"]

log = logging.getLogger("wsgate.route")


@dataclass
class RouteEnv:
    """What every route shares: budgets, randomness, clock, limits, event listeners."""

    budgets: HostBudgets
    rng: random.Random
    clock: Callable[[], float] = time.monotonic
    history_points: int = 1000
    max_connections: int = 1000
    on_transition: list[Callable[[UpstreamConnection, Transition], None]] = field(
        default_factory=list
    )
    total_connections: Callable[[], int] = lambda: 0

    def transition(self, conn: UpstreamConnection, t: Transition) -> None:
        for cb in self.on_transition:
            cb(conn, t)


class RouteRuntime:
    def __init__(self, cfg: RouteConfig, env: RouteEnv) -> None:
        self.cfg = cfg
        self.env = env
        self.pool: dict[str, UpstreamConnection] = {}
        self.relays: dict[str, UpstreamConnection] = {}
        self.sessions: set[Session] = set()
        self._ids = itertools.count(1)
        self._rr = itertools.count()
        self._stopped = asyncio.Event()
        self._changed = asyncio.Event()
        self._configure_budgets()

    @property
    def name(self) -> str:
        return self.cfg.name

    def _configure_budgets(self) -> None:
        for ep in self.cfg.endpoints:
            s = self._settings(ep.name, ep.url)
            self.env.budgets.configure(
                s.host, self.cfg.connect_budget.count, self.cfg.connect_budget.per
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
            max_lifetime=c.max_lifetime,
            use_proxy=c.use_proxy,
            ssl_context=ctx,
            reconnect=reconnect,
            history_points=self.env.history_points,
        )

    def pick_endpoint(self) -> tuple[str, str]:
        """Smooth choice among endpoints with weight > 0 (the balancer refines this)."""
        eps = [e for e in self.cfg.endpoints if e.weight > 0] or list(self.cfg.endpoints)
        expanded = [e for e in eps for _ in range(max(1, e.weight))]
        ep = expanded[next(self._rr) % len(expanded)]
        return ep.name, ep.url

    def _check_capacity(self) -> None:
        from wsgate.errors import CapacityError

        if self.env.total_connections() >= self.env.max_connections:
            raise CapacityError(
                f"daemon.max_connections = {self.env.max_connections} upstream connections reached"
            )
        if len(self.pool) + len(self.relays) >= self.cfg.max_connections:
            raise CapacityError(
                f"routes.{self.name}.max_connections = {self.cfg.max_connections} reached"
            )

    def _new_connection(self, sink: object, *, dedicated: bool) -> UpstreamConnection:
        self._check_capacity()
        endpoint, url = self.pick_endpoint()
        n = next(self._ids)
        conn_id = f"{self.name}-{'s' if dedicated else 'c'}{n}"
        return UpstreamConnection(
            conn_id,
            self._settings(endpoint, url, reconnect=not dedicated),
            sink,  # type: ignore[arg-type]
            self.env.budgets,
            self.env.rng,
            clock=self.env.clock,
            on_transition=self.env.transition,
            expects_data=(lambda: False) if not dedicated else None,
        )

    # ---------------------------------------------------------------- pool
    async def run(self) -> None:
        """Keep ``min_connections`` shared upstream connections alive until stopped."""
        async with asyncio.TaskGroup() as tg:
            while not self._stopped.is_set():
                while len(self.pool) < self.cfg.min_connections:
                    try:
                        conn = self._new_connection(self, dedicated=False)
                    except Exception as exc:
                        log.error("route %s: cannot open a pool connection: %s", self.name, exc)
                        break
                    self.pool[conn.id] = conn
                    tg.create_task(self._run_pooled(conn), name=conn.id)
                self._changed.clear()
                await self._changed.wait()
            for conn in self.pool.values():
                conn.stop()

    async def _run_pooled(self, conn: UpstreamConnection) -> None:
        try:
            await conn.run()
        finally:
            self.pool.pop(conn.id, None)
            self._changed.set()

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()
        for conn in list(self.relays.values()):
            conn.stop()

    # UpstreamSink for pool connections: frames are consumed by the dialect hub when present.
    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        pass

    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None:
        pass

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        pass

    # ---------------------------------------------------------------- sessions
    async def serve_session(self, ws: ServerConnection, session: Session) -> None:
        self.sessions.add(session)
        try:
            await self._serve_relay(ws, session)
        finally:
            self.sessions.discard(session)

    async def _serve_relay(self, ws: ServerConnection, session: Session) -> None:
        holder: list[UpstreamConnection] = []

        def make(relay: Relay) -> UpstreamConnection:
            conn = self._new_connection(relay, dedicated=True)
            conn._expects_data = lambda: relay.client_spoke  # raw: silence matters once asked
            holder.append(conn)
            self.relays[conn.id] = conn
            return conn

        try:
            await run_relay(ws, session, make, open_timeout=10.0)
        except* Exception as eg:
            from wsgate.errors import CapacityError

            if any(isinstance(e, CapacityError) for e in eg.exceptions):
                await ws.close(1013, "upstream capacity reached")
            else:
                raise
        finally:
            for conn in holder:
                self.relays.pop(conn.id, None)

    # ---------------------------------------------------------------- views
    def connections(self) -> list[UpstreamConnection]:
        return [*self.pool.values(), *self.relays.values()]

    def open_connections(self) -> int:
        return sum(1 for c in self.connections() if c.state.is_up)

    def healthy(self) -> bool:
        return any(c.state in (ConnState.OPEN,) for c in self.connections())

    def reconfigure(self, cfg: RouteConfig) -> None:
        self.cfg = cfg
        self._configure_budgets()
        self._changed.set()

    @property
    def dialect(self) -> DialectName:
        return self.cfg.dialect

    def __repr__(self) -> str:
        return f"<RouteRuntime {self.name} pool={len(self.pool)} sessions={len(self.sessions)}>"
