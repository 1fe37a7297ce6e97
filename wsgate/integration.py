"""The specification's integration API, as thin adapters over :class:`wsgate.Gateway`.

Programs written against the specification run on wsgate with only their import line
changed::

    from wsgate.integration import (
        ConnectionConfig, ConnectionType, IntegrationConfig, LoadBalancingStrategy,
        WebSocketConnection, WebSocketIntegrationManager,
    )

    manager = WebSocketIntegrationManager(IntegrationConfig(cluster_node_id="node-1"))
    await manager.start()
    ok = await manager.register_connection(WebSocketConnection(),
            ConnectionConfig(url=URL, connection_type=ConnectionType.MARKET_DATA))
    conn = await manager.get_connection(ConnectionType.MARKET_DATA,
                                        strategy=LoadBalancingStrategy.LEAST_LATENCY)
    print(manager.get_system_overview()["health"]["overall_health_score"])
    await manager.stop()

What registering means in wsgate's model: the connection's URL becomes an *endpoint*
of the route for its connection type (one route per type and exchange dialect, named
after the type). The gateway opens its own upstream connection to that endpoint and
measures it like every other one (pings, message rates, errors, health score, alerts).
The connection object itself is then connected *through* the gateway, to the route's
loopback URL: it speaks the exchange's protocol exactly as before, and its
subscriptions are shared and placed by the route's balancer. ``register_connection``
answers True once the gateway's upstream to the endpoint is open and the connection
object is connected through it.

``get_connection`` asks the route's balancer (the same one that places subscriptions,
with the strategy asked for) which open upstream connection of that type to use, and
hands back the registered connection object of that upstream's endpoint.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsgate.config.routes import endpoint_default_name
from wsgate.config.schema import (
    AlertsConfig,
    Config,
    DaemonConfig,
    EndpointConfig,
    GatewayConfig,
    JobsConfig,
    MetricsConfig,
    RouteConfig,
    default_connect_budget,
    default_max_lifetime,
    default_max_subscriptions,
    default_message_budget,
)
from wsgate.core.types import ConnectionType, DialectName, Severity, StrategyName
from wsgate.embed import Gateway
from wsgate.errors import NoCandidateError, WsgateError
from wsgate.integration_views import (
    ActiveAlert,
    AlertManager,
    ConnectionAnalytics,
    PerformanceMetrics,
    _ms,
)
from wsgate.redact import mask_text, mask_url

__all__ = [
    "ActiveAlert",
    "AlertManager",
    "ConnectionAnalytics",
    "ConnectionConfig",
    "ConnectionType",
    "IntegrationConfig",
    "LoadBalancingStrategy",
    "PerformanceMetrics",
    "Severity",
    "WebSocketConnection",
    "WebSocketConnectionInterface",
    "WebSocketIntegrationManager",
]

log = logging.getLogger("wsgate.integration")


class LoadBalancingStrategy(StrEnum):
    """The specification's seven strategies (wsgate's StrategyName has these values too)."""

    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"
    LEAST_LOAD = "least_load"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_LATENCY = "least_latency"
    HEALTH_BASED = "health_based"
    ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class IntegrationConfig:
    """The specification's knobs; each maps onto one key of a wsgate config.

    ``listen``, ``state_dir`` and ``seed`` are wsgate's additions: by default the
    gateway listens on a free loopback port and keeps its SQLite state in a private
    temporary directory that ``stop()`` removes.
    """

    max_connections: int = 1000  # daemon.max_connections
    enable_analytics: bool = True
    enable_alerts: bool = True
    enable_load_balancing: bool = True
    cluster_node_id: str = "node-1"  # daemon.node_id
    health_check_interval: float = 30  # jobs.*
    analytics_interval: float = 60
    alert_check_interval: float = 30
    cleanup_interval: float = 300
    listen: str = "127.0.0.1:0"
    state_dir: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise WsgateError(
                f"IntegrationConfig.max_connections must be >= 1, got {self.max_connections}"
            )
        for key in (
            "health_check_interval",
            "analytics_interval",
            "alert_check_interval",
            "cleanup_interval",
        ):
            if not 1 <= getattr(self, key) <= 86400:  # the config file's bounds for [jobs]
                raise WsgateError(
                    f"IntegrationConfig.{key} must be 1..86400 seconds, got {getattr(self, key)!r}"
                )

    def to_config(self, state_dir: str) -> Config:
        """The wsgate config this stands for (no routes yet: registrations add them)."""
        alerts = AlertsConfig()
        if not self.enable_alerts:
            alerts = dataclasses.replace(
                alerts, rules=tuple(dataclasses.replace(r, enabled=False) for r in alerts.rules)
            )
        return Config(
            daemon=DaemonConfig(
                node_id=self.cluster_node_id,
                control_socket=f"{state_dir}/control.sock",
                state_dir=state_dir,
                max_connections=self.max_connections,
            ),
            gateway=GatewayConfig(listen=self.listen),
            jobs=JobsConfig(
                health_check_interval=float(self.health_check_interval),
                analytics_interval=float(self.analytics_interval),
                alert_check_interval=float(self.alert_check_interval),
                cleanup_interval=float(self.cleanup_interval),
            ),
            metrics=MetricsConfig(listen=""),
            routes=(),
            alerts=alerts,
            source_path=None,
            source_sha256="",
        )


@dataclass(frozen=True)
class ConnectionConfig:
    """One exchange endpoint to register; ``url`` is the exchange's WebSocket URL.

    ``exchange`` names the protocol spoken on it (``bitfinex``, ``binance`` or ``raw``
    for an opaque 1:1 relay); None infers it from the URL. ``connect_timeout`` bounds
    how long ``register_connection`` waits for the gateway's upstream to open.
    """

    url: str
    connection_type: ConnectionType = ConnectionType.MARKET_DATA
    exchange: str | None = None
    weight: int = 1
    name: str | None = None
    strategy: LoadBalancingStrategy | StrategyName | None = None  # route default; None: adaptive
    heartbeat_interval: float = 20.0  # WebSocket ping interval towards the exchange
    connect_timeout: float = 10.0
    max_subscriptions: int | None = None  # per upstream connection; None = the exchange's

    def __repr__(self) -> str:
        # The embedding application may log the config: its URL's credentials stay masked.
        fields = ", ".join(
            f"{f.name}={mask_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"ConnectionConfig({fields})"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise WsgateError(
                f"ConnectionConfig.url: expected a ws:// or wss:// URL, got {mask_url(self.url)!r}"
            )
        object.__setattr__(self, "connection_type", ConnectionType(self.connection_type))
        if self.strategy is not None:
            object.__setattr__(self, "strategy", StrategyName(self.strategy))
        if self.weight < 0:
            raise WsgateError(f"ConnectionConfig.weight must be >= 0, got {self.weight}")
        if not self.connect_timeout > 0 or not self.heartbeat_interval > 0:
            raise WsgateError("ConnectionConfig.connect_timeout and heartbeat_interval must be > 0")
        self.dialect  # noqa: B018 - validates `exchange` now, not at registration

    @property
    def dialect(self) -> DialectName:
        if self.exchange is not None:
            try:
                return DialectName(self.exchange.lower())
            except ValueError:
                raise WsgateError(
                    f"ConnectionConfig.exchange: expected one of "
                    f"{', '.join(d.value for d in DialectName)}, got {self.exchange!r}"
                ) from None
        parts = urlsplit(self.url)
        host, path = (parts.hostname or "").lower(), parts.path
        if "bitfinex" in host or path.rstrip("/") == "/ws/2":
            return DialectName.BITFINEX
        if "binance" in host or path.startswith(("/stream", "/ws")):
            return DialectName.BINANCE
        return DialectName.RAW


# ---------------------------------------------------------------- connections
class WebSocketConnectionInterface(abc.ABC):
    """A connection a program may implement itself and register.

    The gateway needs nothing more than moving messages to measure it: registration
    points the connection at the gateway (``connect(url)`` with the route's loopback
    URL), and the gateway measures the traffic it relays upstream (ping RTT, message
    rates, errors, health) on its own connection to the exchange.
    """

    @abc.abstractmethod
    async def connect(self, url: str) -> bool:
        """Open the connection to ``url``; False (not an exception) when it cannot."""

    @abc.abstractmethod
    async def send(self, message: str | bytes | Mapping[str, Any] | list[Any]) -> bool:
        """Send one message (dicts and lists are sent as JSON text); False when closed."""

    @abc.abstractmethod
    async def receive(self, timeout: float | None = None) -> str | bytes | None:  # noqa: ASYNC109
        """The next message; None on timeout or when the connection is closed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; closing a closed connection does nothing."""

    @abc.abstractmethod
    def is_connected(self) -> bool: ...


class WebSocketConnection(WebSocketConnectionInterface):
    """wsgate's own implementation (websockets' asyncio client).

    Registered, it connects through the gateway; ``url`` says where it is connected,
    ``route`` and ``endpoint`` which gateway route and exchange endpoint it belongs to.
    """

    def __init__(self, *, max_size: int = 1 << 20, open_timeout: float = 10.0) -> None:
        self._max_size = max_size
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self.url: str | None = None
        self.route: str | None = None
        self.endpoint: str | None = None
        self.messages_sent = 0
        self.messages_received = 0

    async def connect(self, url: str) -> bool:
        await self.close()
        try:
            self._ws = await connect(url, max_size=self._max_size, open_timeout=self._open_timeout)
        except (OSError, TimeoutError, WsgateError) as exc:
            log.warning("connection to %s failed: %s", mask_url(url), mask_text(str(exc)))
            return False
        except Exception as exc:  # InvalidHandshake and friends: a refusal, reported as False
            log.warning("connection to %s refused: %s", mask_url(url), mask_text(str(exc)))
            return False
        self.url = url
        return True

    async def send(self, message: str | bytes | Mapping[str, Any] | list[Any]) -> bool:
        ws = self._ws
        if ws is None:
            return False
        data = message if isinstance(message, (str, bytes)) else json.dumps(message)
        try:
            await ws.send(data)
        except ConnectionClosed:
            return False
        self.messages_sent += 1
        return True

    async def receive(self, timeout: float | None = None) -> str | bytes | None:  # noqa: ASYNC109
        ws = self._ws
        if ws is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                msg = await ws.recv()
        except (TimeoutError, ConnectionClosed):
            return None
        self.messages_received += 1
        return msg

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    def is_connected(self) -> bool:
        from websockets.protocol import State

        return self._ws is not None and self._ws.state is State.OPEN

    def __repr__(self) -> str:
        state = "connected" if self.is_connected() else "closed"
        return f"<WebSocketConnection {state} route={self.route} endpoint={self.endpoint}>"


# ---------------------------------------------------------------- the manager
@dataclass
class _Registration:
    connection: WebSocketConnectionInterface
    config: ConnectionConfig
    route: str
    endpoint: str


class WebSocketIntegrationManager:
    def __init__(self, config: IntegrationConfig | None = None) -> None:
        self.config = config or IntegrationConfig()
        self._gw: Gateway | None = None
        self._tmp: str | None = None
        self._registrations: list[_Registration] = []
        self._lock = asyncio.Lock()
        self.analytics: ConnectionAnalytics | None = None
        self.alert_manager: AlertManager | None = None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._gw is not None:
            return
        state_dir = self.config.state_dir
        if state_dir is None:
            state_dir = self._tmp = tempfile.mkdtemp(prefix="wsgate-")
        gw = Gateway(self.config.to_config(state_dir), seed=self.config.seed)
        try:
            await gw.__aenter__()
        except BaseException:
            self._remove_tmp()
            raise
        self._gw = gw
        if self.config.enable_analytics:
            self.analytics = ConnectionAnalytics(gw)
        if self.config.enable_alerts:
            self.alert_manager = AlertManager(gw)

    async def stop(self) -> None:
        gw, self._gw = self._gw, None
        if gw is None:
            return
        for reg in self._registrations:
            with contextlib.suppress(Exception):
                await reg.connection.close()
        self._registrations.clear()
        try:
            await gw.__aexit__(None, None, None)
        finally:
            self._remove_tmp()
            self.analytics = self.alert_manager = None

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def __aenter__(self) -> WebSocketIntegrationManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def gateway(self) -> Gateway:
        """The wsgate Gateway underneath (routes, pools, balancers, jobs)."""
        if self._gw is None:
            raise WsgateError("call `await manager.start()` first")
        return self._gw

    # ---------------------------------------------------------------- connections
    async def register_connection(
        self, connection: WebSocketConnectionInterface, connection_config: ConnectionConfig
    ) -> bool:
        """Add the URL as an endpoint and connect ``connection`` through the gateway.

        True once the gateway's upstream to the endpoint is open (and measured, when a
        latency sample comes within the timeout) and ``connection`` is connected
        through the gateway; False when either fails in ``connect_timeout`` -- then
        the endpoint is removed again and nothing stays behind.
        """
        if not isinstance(connection, WebSocketConnectionInterface):
            raise TypeError(
                "register_connection needs a WebSocketConnectionInterface, "
                f"got {type(connection).__name__}"
            )
        if not isinstance(connection_config, ConnectionConfig):
            raise TypeError(
                "register_connection needs a ConnectionConfig, "
                f"got {type(connection_config).__name__}"
            )
        gw = self.gateway
        cc = connection_config
        async with self._lock:
            route, endpoint = self._add_endpoint(cc)
        rt = gw.daemon.routes[route]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cc.connect_timeout
        up = await _wait_for(lambda: _open_on(rt, endpoint), deadline)
        if up is None:
            log.warning(
                "register_connection: %s did not open within %gs; endpoint removed",
                mask_url(cc.url),
                cc.connect_timeout,
            )
            self._remove_endpoint(route, endpoint)
            return False
        # Measured before it is handed out: the first RTT sample comes within moments.
        await _wait_for(lambda: up.metrics.effective_latency(), min(deadline, loop.time() + 2.0))
        if connection.is_connected():
            await connection.close()  # registered connections talk through the gateway
        if not await connection.connect(gw.url(route)):
            self._remove_endpoint(route, endpoint)
            return False
        if isinstance(connection, WebSocketConnection):
            connection.route, connection.endpoint = route, endpoint
        self._registrations.append(_Registration(connection, cc, route, endpoint))
        log.info("registered %s on route %s as endpoint %s", mask_url(cc.url), route, endpoint)
        return True

    def _add_endpoint(self, cc: ConnectionConfig) -> tuple[str, str]:
        daemon = self.gateway.daemon
        dialect = cc.dialect
        name = cc.connection_type.value
        rt = daemon.routes.get(name)
        if rt is not None and rt.cfg.dialect is not dialect:
            name = f"{name}_{dialect.value}"
            rt = daemon.routes.get(name)
        if rt is None:
            ep = EndpointConfig(
                url=cc.url, name=cc.name or endpoint_default_name(cc.url), weight=cc.weight
            )
            daemon.add_route(self._route_config(name, dialect, cc, ep))
            return name, ep.name
        taken = {e.name for e in rt.cfg.endpoints}
        ep_name = cc.name or endpoint_default_name(cc.url)
        if ep_name in taken:
            if cc.name is not None:
                raise WsgateError(f"route {name} already has an endpoint named {cc.name!r}")
            ep_name = f"{ep_name}#{len(rt.cfg.endpoints)}"
        endpoints = (*rt.cfg.endpoints, EndpointConfig(url=cc.url, name=ep_name, weight=cc.weight))
        # One pooled upstream per registered endpoint, so every endpoint is measured.
        rt.reconfigure(
            dataclasses.replace(
                rt.cfg,
                endpoints=endpoints,
                min_connections=len(endpoints),
                max_connections=max(rt.cfg.max_connections, len(endpoints)),
            )
        )
        return name, ep_name

    def _route_config(
        self, name: str, dialect: DialectName, cc: ConnectionConfig, ep: EndpointConfig
    ) -> RouteConfig:
        host = urlsplit(cc.url).hostname or ""
        return RouteConfig(
            name=name,
            dialect=dialect,
            type=cc.connection_type,
            endpoints=(ep,),
            max_subscriptions_per_connection=cc.max_subscriptions
            or default_max_subscriptions(dialect),
            connect_budget=default_connect_budget(host),
            message_budget=default_message_budget(dialect),
            max_lifetime=default_max_lifetime(dialect),
            strategy=StrategyName(cc.strategy or StrategyName.ADAPTIVE),
            ping_interval=cc.heartbeat_interval,
            max_connections=min(10, self.config.max_connections),
        )

    def _remove_endpoint(self, route: str, endpoint: str) -> None:
        rt = self.gateway.daemon.routes.get(route)
        if rt is None:
            return
        endpoints = tuple(e for e in rt.cfg.endpoints if e.name != endpoint)
        if not endpoints:
            # The route had only this endpoint: stop its connection, keep an empty route out.
            rt.stop()
            del self.gateway.daemon.routes[route]
            daemon = self.gateway.daemon
            daemon.config = dataclasses.replace(
                daemon.config, routes=tuple(r for r in daemon.config.routes if r.name != route)
            )
            return
        rt.reconfigure(
            dataclasses.replace(rt.cfg, endpoints=endpoints, min_connections=len(endpoints))
        )

    async def get_connection(
        self,
        connection_type: ConnectionType | str,
        strategy: LoadBalancingStrategy | StrategyName | str | None = None,
    ) -> WebSocketConnectionInterface | None:
        """The registered connection whose endpoint the balancer picks; None when none is open."""
        ctype = ConnectionType(connection_type)
        regs = [r for r in self._registrations if r.config.connection_type is ctype]
        if not regs:
            return None
        if not self.config.enable_load_balancing:
            return next((r.connection for r in regs if r.connection.is_connected()), None)
        try:
            up = self.gateway.get_connection(ctype, strategy=strategy)
        except NoCandidateError as exc:
            log.warning("get_connection(%s): %s", ctype.value, exc)
            return None
        for r in regs:
            if r.route == up.settings.route and r.endpoint == up.settings.endpoint:
                return r.connection
        return None

    def get_system_overview(self) -> dict[str, Any]:
        """Totals, health (``overall_health_score`` 0-100), per type and per route, balancing."""
        gw = self.gateway
        ov = gw.overview()
        score = ov.get("health")
        overall = 0.0 if score is None else round(float(score), 2)
        status = (
            "unknown"
            if score is None
            else "healthy"
            if overall >= 80
            else "degraded"
            if overall >= 50
            else "critical"
        )
        daemon = gw.daemon
        return {
            "node_id": self.config.cluster_node_id,
            "uptime_seconds": time.monotonic() - daemon.started_mono,
            "health": {
                "overall_health_score": overall,
                "status": status,
                "by_type": {t["type"]: t["health"] for t in ov["by_type"]},
                "by_route": {r["route"]: r["health"] for r in ov["by_route"]},
            },
            "connections": {
                "total": ov["connections"],
                "up": ov["up"],
                "down": ov["down"],
                "registered": len(self._registrations),
                "sessions": len(daemon.gateway.sessions),
            },
            "performance": {
                "messages_per_second": ov["msg_rate"],
                "avg_latency_ms": _ms(ov["avg_latency"]),
                "errors": ov["errors"],
                "reconnects": ov["reconnects"],
            },
            "load_balancing": {
                "enabled": self.config.enable_load_balancing,
                "routes": {
                    name: rt.balancer.statistics().strategy.value
                    for name, rt in daemon.routes.items()
                },
            },
            "alerts": {
                "enabled": self.alert_manager is not None,
                "active": len(self.alert_manager.get_active_alerts()) if self.alert_manager else 0,
            },
            "analytics": {"enabled": self.analytics is not None},
            "by_type": ov["by_type"],
            "by_route": ov["by_route"],
        }


async def _wait_for(probe: Any, deadline: float) -> Any:
    """Poll ``probe()`` until it returns something truthy or the loop time passes ``deadline``."""
    loop = asyncio.get_running_loop()
    while True:
        value = probe()
        if value:
            return value
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.02)


def _open_on(rt: Any, endpoint: str) -> Any:
    for conn in rt.pool.values():
        if conn.settings.endpoint == endpoint and conn.state.is_up:
            return conn
    return None
