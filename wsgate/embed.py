"""The in-process API: the daemon's own objects, for programs that embed wsgate.

::

    import asyncio
    from wsgate import Gateway

    async def main() -> None:
        async with Gateway("etc/wsgate.toml") as gw:
            print(gw.url("bitfinex"))                  # ws://127.0.0.1:8765/bitfinex
            conn = gw.get_connection("market_data", strategy="least_latency")
            print(conn.id, conn.state.label)
            print(gw.overview()["health"], gw.performance("market_data"))

    asyncio.run(main())

No control socket and no signal handlers unless asked for: the host program owns
the process. Everything else — pools, hubs, balancers, jobs — is the daemon itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from wsgate.config import Config, EndpointConfig, load_config
from wsgate.config.routes import endpoint_default_name
from wsgate.core.balancer import PickCounts
from wsgate.core.types import ConnectionType, StrategyName
from wsgate.errors import NoCandidateError, WsgateError
from wsgate.runtime.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from wsgate.daemon import Daemon
    from wsgate.runtime.routing.routes import RouteRuntime

__all__ = ["Gateway"]


class Gateway:
    def __init__(
        self,
        config: Config | str | os.PathLike[str],
        *,
        seed: int | None = None,
        control_socket: bool = False,
    ) -> None:
        if isinstance(config, Config):
            self.config, self._path = config, config.source_path
        else:
            self._path = os.fspath(config)
            self.config = load_config(self._path)
        self._seed = seed
        self._control = control_socket
        self._daemon: Daemon | None = None
        self._task: asyncio.Task[int] | None = None
        self._picked = PickCounts(half_life=30.0)  # get_connection's own recent picks

    # ---------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Gateway:
        from wsgate.daemon import Daemon

        self._daemon = Daemon(
            self.config,
            config_path=self._path,
            seed=self._seed,
            control=self._control,
            signals=False,
        )
        self._task = asyncio.create_task(self._daemon.serve(), name="wsgate")
        ready = asyncio.create_task(self._daemon.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not self._daemon.ready.is_set():
            ready.cancel()
            await self._task  # re-raises the startup error (bind failure, lock, ...)
            raise WsgateError("wsgate stopped during startup")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._daemon is not None and self._task is not None:
            self._daemon.stop("embedding program left the context")
            await self._task

    @property
    def daemon(self) -> Daemon:
        """The running :class:`wsgate.daemon.Daemon` (routes, gateway, jobs, ...)."""
        if self._daemon is None:
            raise WsgateError("use `async with Gateway(...)` first")
        return self._daemon

    def url(self, route: str) -> str:
        d = self.daemon
        scheme = "wss" if d.gateway.tls is not None else "ws"
        return f"{scheme}://{d.config.gateway.host}:{d.gateway.port}/{route}"

    # ---------------------------------------------------------------- connections
    def register_connection(
        self, route: str, url: str, *, weight: int = 1, name: str | None = None
    ) -> str:
        """Add an upstream endpoint to a route at run time; returns its stable name.

        It lasts until the next config reload, which makes the file the truth again.
        """
        rt = self._route(route)
        taken = {e.name for e in rt.cfg.endpoints}
        if name is not None and name in taken:
            raise WsgateError(f"route {route} already has an endpoint named {name!r}")
        if name is None:
            # Same rule as the config file: "<host>:<port>", "#<index>" when that collides.
            name = endpoint_default_name(url)
            if name in taken:
                name = f"{name}#{len(rt.cfg.endpoints)}"
        ep = EndpointConfig(url=url, name=name, weight=weight)
        rt.reconfigure(dataclasses.replace(rt.cfg, endpoints=(*rt.cfg.endpoints, ep)))
        return ep.name

    def get_connection(
        self,
        conn_type: ConnectionType | str,
        *,
        strategy: StrategyName | str | None = None,
        route: str | None = None,
    ) -> UpstreamConnection:
        """The upstream connection the balancer picks among open connections of this type."""
        ctype = ConnectionType(conn_type)
        strat = StrategyName(strategy) if strategy is not None else None
        now = time.monotonic()
        for rt in self.daemon.routes.values():
            if rt.cfg.type is not ctype or route not in (None, rt.name):
                continue
            cands = rt.candidates(now, self._picked)
            if not cands:
                continue
            decision = rt.balancer.pick(cands, now, strategy=strat)
            # A handed-out connection leaves no other trace (no subscription, no
            # session): count it, decaying, so the next pick sees it.
            self._picked.add(decision.candidate_id, now)
            chosen: UpstreamConnection = rt.pool[decision.candidate_id]
            return chosen
        raise NoCandidateError(f"no open upstream connection of type {ctype.value}")

    # ---------------------------------------------------------------- views
    def _route(self, name: str) -> RouteRuntime:
        try:
            return self.daemon.routes[name]
        except KeyError:
            raise WsgateError(f"no route {name!r}") from None

    def overview(self) -> dict[str, Any]:
        """The seed's get_system_overview(): totals, per type, per route, overall health.

        Scored now (the health job's own computation), not as of its last run.
        """
        result: dict[str, Any] = self.daemon.analytics.run_health().as_dict()
        return result

    def performance(self, conn_type: ConnectionType | str) -> dict[str, Any]:
        """Performance metrics of one connection type (its slice of the overview)."""
        ctype = ConnectionType(conn_type)
        for entry in self.overview()["by_type"]:
            if entry["type"] == ctype.value:
                return dict(entry)
        raise WsgateError(f"unknown connection type {conn_type!r}")

    def active_alerts(self) -> list[dict[str, Any]]:
        alerting = getattr(self.daemon, "alerting", None)
        if alerting is None:
            return []
        return [a.to_dict() for a in alerting.engine.active()]
