"""The shape of a wsgate config: frozen dataclasses, their defaults, the reload diff, the dump.

Built only by :mod:`wsgate.config` (which validates); everyone else reads them. Every
collection is a tuple so a whole :class:`Config` is hashable and compares by value,
which is what the reload diff relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from wsgate import paths
from wsgate.core.types import ConnectionType, DialectName, Severity, StrategyName

__all__ = [
    "ALERT_RULE_TYPES",
    "CHANNEL_KINDS",
    "CHANNEL_KIND_KEYS",
    "AlertChannelConfig",
    "AlertRuleConfig",
    "AlertsConfig",
    "BudgetConfig",
    "ClientConfig",
    "ClusterConfig",
    "Config",
    "ConfigDiff",
    "DaemonConfig",
    "EndpointConfig",
    "GatewayConfig",
    "JobsConfig",
    "MetricsConfig",
    "RouteConfig",
    "TlsConfig",
    "default_connect_budget",
    "default_max_lifetime",
    "default_max_subscriptions",
    "default_message_budget",
    "default_rule",
    "diff_config",
    "split_listen",
]

CHANNEL_KINDS = ("email", "webhook", "slack", "discord", "log", "console")


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"`` -> ("127.0.0.1", 8765);
    ``"[::1]:80"`` -> ("::1", 80); input is validated."""
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True)
class DaemonConfig:
    node_id: str = "node-1"
    control_socket: str = field(default_factory=paths.default_control_socket)
    state_dir: str = field(default_factory=paths.default_state_dir)
    max_connections: int = 1000
    log_level: str = "info"
    log_format: str = "text"  # "text" | "json"; under systemd lines carry <priority> prefixes
    control_group: str | None = None  # group allowed read commands
    admin_group: str | None = None  # group allowed mutating commands
    shutdown_timeout: float = 5.0


@dataclass(frozen=True)
class ClientConfig:
    """One ``[[gateway.clients]]`` identity: a bot (or a group of bots) with its own token.

    The token itself is never part of the config: ``token_env`` names a variable and
    ``token_file`` a file the gateway reads at start and at every reload.
    """

    name: str
    token_env: str | None = None
    token_file: str | None = None
    routes: tuple[str, ...] | None = None  # None: every route
    max_sessions: int | None = None  # None: only the gateway's and the routes' limits
    max_subscriptions: int | None = None  # across all its sessions; None: no own limit

    def allows(self, route: str) -> bool:
        return self.routes is None or route in self.routes


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:8765"
    max_sessions: int = 10000
    max_message_bytes: int = 1048576
    send_buffer_bytes: int = 4194304
    slow_consumer_close_code: int = 1013
    client_messages_per_second: float = 50.0
    linger: float = 30.0
    origins: tuple[str, ...] = ()
    events_token_env: str | None = None
    # Without events_token_env the event stream is refused unless the operator opens it.
    events_require_token: bool = True
    # Subscriptions one bot session may hold on a shared route (routes may set their own).
    max_subscriptions_per_session: int = 1024
    # wss for bots: a PEM certificate chain and its key (re-read on every reload). A
    # non-loopback listen address needs them unless allow_plaintext says otherwise.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    allow_plaintext: bool = False
    # Per-bot identities. With any configured, every bot route needs a token: a client's
    # (its name, routes and limits apply) or the route's own token_env (the simple case).
    clients: tuple[ClientConfig, ...] = ()

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True)
class JobsConfig:
    health_check_interval: float = 30.0
    analytics_interval: float = 60.0
    alert_check_interval: float = 30.0
    cleanup_interval: float = 300.0


@dataclass(frozen=True)
class MetricsConfig:
    history_points: int = 1000
    listen: str = "127.0.0.1:9108"
    history_retention: float = 604800.0
    # Count every upstream frame (rates, health, anomaly). Off only to measure its cost:
    # message rates then read 0 and rate-based health and alerts go blind.
    per_message: bool = True

    @property
    def enabled(self) -> bool:
        return self.listen != ""

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0] if self.listen else ""

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1] if self.listen else 0


@dataclass(frozen=True)
class EndpointConfig:
    url: str
    name: str
    weight: int = 1
    # What the endpoint serves: "streams" (market and user data streams: every route's
    # default) or "ws_api" (a Binance WebSocket API host, ws-api.binance.com or
    # ws-fapi.binance.com: its sessions go there, and nothing else does).
    serves: str = "streams"


@dataclass(frozen=True)
class BudgetConfig:
    """Token bucket: ``count`` events per ``per`` seconds."""

    count: int
    per: float

    @property
    def rate(self) -> float:
        return self.count / self.per


@dataclass(frozen=True)
class TlsConfig:
    verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True)
class RouteConfig:
    name: str
    dialect: DialectName
    type: ConnectionType
    endpoints: tuple[EndpointConfig, ...]
    max_subscriptions_per_connection: int
    connect_budget: BudgetConfig
    message_budget: BudgetConfig
    max_lifetime: float | None
    strategy: StrategyName = StrategyName.ADAPTIVE
    stale_after: float = 20.0
    min_connections: int = 1
    max_connections: int = 10
    max_sessions: int | None = None
    max_subscriptions_per_session: int | None = None  # unset: the gateway's
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    app_ping_interval: float = 15.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    min_uptime: float = 5.0
    rest_url: str | None = None
    token_env: str | None = None
    tls: TlsConfig = TlsConfig()
    use_proxy: bool = False
    slow_start: float = 30.0
    linger: float | None = None
    required: bool = True
    # "node": each node subscribes upstream for its own bots (one node's behaviour).
    # "cluster": with [cluster] engine = "nats", one owner node per subscription key keeps
    # the upstream subscription and the other nodes follow it (wsgate.cluster.data_plane).
    share: str = "node"
    channel_cadence: tuple[tuple[str, float], ...] = ()  # sorted by channel name

    def cadence(self, channel: str) -> float | None:
        """Silence limit in seconds for ``channel``, or None when only ``stale_after`` applies."""
        for name, seconds in self.channel_cadence:
            if name == channel:
                return seconds
        return None

    def endpoints_serving(self, serves: str) -> tuple[EndpointConfig, ...]:
        """The endpoints for ``serves``; WebSocket API sessions go to the route's streams
        endpoints when none is marked ``ws_api`` (one host serving both, or a route of its own
        pointed at the WebSocket API host)."""
        found = tuple(e for e in self.endpoints if e.serves == serves)
        if serves == "ws_api" and not found:
            return self.endpoints
        return found

    def endpoint(self, name: str) -> EndpointConfig:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)


@dataclass(frozen=True)
class AlertChannelConfig:
    name: str
    kind: str
    enabled: bool = False
    min_severity: Severity = Severity.WARNING
    matchers: tuple[tuple[str, str], ...] = ()
    send_resolved: bool = True
    url: str | None = None
    url_env: str | None = None
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    security: str = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    from_addr: str | None = None
    to_addrs: tuple[str, ...] = ()
    rate: BudgetConfig = BudgetConfig(10, 60.0)
    timeout: float = 10.0


@dataclass(frozen=True)
class AlertRuleConfig:
    type: str
    severity: Severity
    fire: float
    clear: float
    pending_samples: int
    window: int
    keep_firing_for: float
    enabled: bool = True
    labels: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, float], ...] = ()  # type-specific secondary thresholds

    @property
    def fires_above(self) -> bool:
        """True when a value above ``fire`` fires; system_health fires on a score below it."""
        return self.type != "system_health"


# type: (severity, fire, clear, pending_samples, window, keep_firing_for). Units are
# documented next to each rule in etc/wsgate.toml.
_RULE_DEFAULTS: dict[str, tuple[Severity, float, float, int, int, float]] = {
    "connection_failure": (Severity.CRITICAL, 1.0, 0.0, 1, 1, 0.0),
    "high_latency": (Severity.WARNING, 0.5, 0.3, 3, 5, 60.0),
    "high_error_rate": (Severity.WARNING, 0.05, 0.02, 3, 5, 60.0),
    "frequent_reconnects": (Severity.WARNING, 5.0, 2.0, 1, 1, 300.0),
    "load_balancer_issue": (Severity.WARNING, 3.0, 2.0, 3, 5, 60.0),
    "cluster_node_down": (Severity.CRITICAL, 3.0, 0.0, 1, 1, 0.0),
    "performance_degradation": (Severity.WARNING, 2.0, 1.5, 3, 5, 120.0),
    "capacity_warning": (Severity.WARNING, 0.8, 0.7, 2, 3, 60.0),
    "anomaly_detected": (Severity.INFO, 4.0, 3.0, 1, 1, 300.0),
    "system_health": (Severity.WARNING, 60.0, 70.0, 3, 5, 60.0),
}
ALERT_RULE_TYPES: tuple[str, ...] = tuple(_RULE_DEFAULTS)


def default_rule(rule_type: str) -> AlertRuleConfig:
    severity, fire, clear, pending, window, keep = _RULE_DEFAULTS[rule_type]
    return AlertRuleConfig(rule_type, severity, fire, clear, pending, window, keep)


@dataclass(frozen=True)
class AlertsConfig:
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 14400.0
    send_resolved: bool = True
    flap_threshold: int = 4
    flap_window: float = 600.0
    # A consequence of a fault that resolved stays muted this long; it pages on its own only
    # if it persists past it (see wsgate/core/alerts/causes.py).
    cause_hold: float = 60.0
    channels: tuple[AlertChannelConfig, ...] = ()
    rules: tuple[AlertRuleConfig, ...] = tuple(default_rule(t) for t in ALERT_RULE_TYPES)

    def channel(self, name: str) -> AlertChannelConfig:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise KeyError(name)

    def rule(self, rule_type: str) -> AlertRuleConfig:
        for rule in self.rules:
            if rule.type == rule_type:
                return rule
        raise KeyError(rule_type)


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]``: the engine that lets nodes know each other (see wsgate.cluster)."""

    engine: str = "none"  # "none" | "nats"
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str = "wsgate"  # prefix of every subject and bucket
    heartbeat_interval: float = 2.0
    node_down_after: float = 10.0
    lease_ttl: float = 5.0
    credentials_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.engine != "none"


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    gateway: GatewayConfig
    jobs: JobsConfig
    metrics: MetricsConfig
    routes: tuple[RouteConfig, ...]
    alerts: AlertsConfig
    source_path: str | None
    source_sha256: str
    cluster: ClusterConfig = ClusterConfig()
    # (dotted key, "$WSGATE_..." or "--flag") for each value set outside the file.
    overrides: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return (
            f"<Config {self.source_path or '<text>'} sha256={self.source_sha256[:12]} "
            f"node={self.daemon.node_id!r} routes={list(self.route_names)} "
            f"channels={[c.name for c in self.alerts.channels if c.enabled]}>"
        )

    @property
    def route_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.routes)

    def route(self, name: str) -> RouteConfig:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)


def default_max_subscriptions(dialect: DialectName) -> int:
    # USD-M: the market-streams page says 1024 per connection, the options page on the same
    # host 200; 200 is safe on both readings.
    return {
        DialectName.BITFINEX: 25,
        DialectName.BINANCE: 1024,
        DialectName.BINANCE_USDM: 200,
        # OKX caps the args of one request (64 KB), not channels; its 480 ops/hour are per
        # connection, so spreading keys also spreads that budget.
        DialectName.OKX: 100,
        # Bybit: the args of one public connection may total 21,000 characters.
        DialectName.BYBIT: 200,
    }.get(dialect, 1)


def default_max_lifetime(dialect: DialectName) -> float | None:
    # Binance closes every connection after 24 h; rotate make-before-break 5 min earlier.
    return 86100.0 if dialect in (DialectName.BINANCE, DialectName.BINANCE_USDM) else None


def default_connect_budget(host: str) -> BudgetConfig:
    """Documented per-IP connect limits of the exchange host; 20/60 s when unknown."""
    host = host.lower()
    if host == "api.bitfinex.com":
        return BudgetConfig(5, 15.0)
    if host.endswith("binance.com") or "binance" in host:
        return BudgetConfig(300, 300.0)
    if host.endswith("okx.com"):
        return BudgetConfig(3, 1.0)  # 3 connection requests per second per IP
    if "bybit" in host:
        return BudgetConfig(500, 300.0)  # 500 connections per 5 minutes per domain
    return BudgetConfig(20, 60.0)


MAX_OKX_OPS = 480


def default_message_budget(dialect: DialectName) -> BudgetConfig:
    """Client->exchange messages per connection; Binance documents 5/s (USD-M 10/s), OKX
    480 subscribe/unsubscribe/login messages an hour (pings share this budget here)."""
    if dialect is DialectName.OKX:
        return BudgetConfig(MAX_OKX_OPS, 3600.0)
    count = {
        DialectName.BINANCE: 5,
        DialectName.BINANCE_USDM: 10,
        DialectName.BITFINEX: 10,
    }.get(dialect, 50)
    return BudgetConfig(count, 1.0)


# --- reload diff -----------------------------------------------------------------------------

_LIVE_GATEWAY = (
    "max_sessions",
    "max_message_bytes",
    "send_buffer_bytes",
    "slow_consumer_close_code",
    "client_messages_per_second",
    "linger",
    "origins",
    "events_token_env",
    "events_require_token",
    "max_subscriptions_per_session",
    "allow_plaintext",
    "clients",
)
_LIVE_DAEMON = (
    "max_connections",
    "log_level",
    "control_group",
    "admin_group",
    "shutdown_timeout",
)
_RESTART_KEYS = (
    ("daemon", "node_id"),
    ("daemon", "control_socket"),
    ("daemon", "state_dir"),
    ("gateway", "listen"),
    ("gateway", "tls_cert_file"),
    ("gateway", "tls_key_file"),
    ("metrics", "listen"),
)
_JOB_FIELDS = (
    ("health", "health_check_interval"),
    ("analytics", "analytics_interval"),
    ("alerts", "alert_check_interval"),
    ("cleanup", "cleanup_interval"),
)


@dataclass(frozen=True)
class ConfigDiff:
    """What a reload changes. Names are route/channel/job names or dotted config keys.

    ``alerts_changed`` covers the alert settings other than channels (timings, flap
    detection, rules); channels are listed in ``channels_changed`` (added, removed or
    changed). ``metrics_changed`` is any change in [metrics], the listener included;
    a listener change is also in ``restart_required``. ``daemon_changed`` lists daemon
    fields that apply live.
    """

    routes_added: tuple[str, ...] = ()
    routes_removed: tuple[str, ...] = ()
    routes_changed: tuple[str, ...] = ()
    jobs_changed: tuple[str, ...] = ()
    channels_changed: tuple[str, ...] = ()
    alerts_changed: bool = False
    metrics_changed: bool = False
    gateway_changed: tuple[str, ...] = ()
    daemon_changed: tuple[str, ...] = ()
    restart_required: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self == ConfigDiff()

    def summary(self) -> list[str]:
        if self.empty:
            return ["no changes"]
        lines: list[str] = []
        for label, names in (
            ("route added", self.routes_added),
            ("route removed", self.routes_removed),
            ("route changed", self.routes_changed),
            ("job interval changed", self.jobs_changed),
            ("alert channel changed", self.channels_changed),
            ("gateway setting changed", self.gateway_changed),
            ("daemon setting changed", self.daemon_changed),
        ):
            lines.extend(f"{label}: {name}" for name in names)
        if self.alerts_changed:
            lines.append("alert settings or rules changed")
        if self.metrics_changed:
            lines.append("metrics settings changed")
        lines.extend(
            f"{key} changed: takes effect only after a restart" for key in self.restart_required
        )
        return lines


def _changed_fields(old: object, new: object, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if getattr(old, n) != getattr(new, n))


def diff_config(old: Config, new: Config) -> ConfigDiff:
    old_routes = {r.name: r for r in old.routes}
    new_routes = {r.name: r for r in new.routes}
    old_channels = {c.name: c for c in old.alerts.channels}
    new_channels = {c.name: c for c in new.alerts.channels}
    all_channels = list(old_channels) + [n for n in new_channels if n not in old_channels]
    old_alerts = replace(old.alerts, channels=())
    new_alerts = replace(new.alerts, channels=())
    return ConfigDiff(
        routes_added=tuple(n for n in new_routes if n not in old_routes),
        routes_removed=tuple(n for n in old_routes if n not in new_routes),
        routes_changed=tuple(
            n for n in old_routes if n in new_routes and old_routes[n] != new_routes[n]
        ),
        jobs_changed=tuple(
            job for job, f in _JOB_FIELDS if getattr(old.jobs, f) != getattr(new.jobs, f)
        ),
        channels_changed=tuple(
            n for n in all_channels if old_channels.get(n) != new_channels.get(n)
        ),
        alerts_changed=old_alerts != new_alerts,
        metrics_changed=old.metrics != new.metrics,
        gateway_changed=_changed_fields(old.gateway, new.gateway, _LIVE_GATEWAY),
        daemon_changed=_changed_fields(old.daemon, new.daemon, _LIVE_DAEMON),
        restart_required=tuple(
            f"{section}.{key}"
            for section, key in _RESTART_KEYS
            if getattr(getattr(old, section), key) != getattr(getattr(new, section), key)
        )
        + (("cluster",) if old.cluster != new.cluster else ()),
    )


# --- which keys belong to which channel kind ---------------------------------------------------

CHANNEL_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("url", "url_env", "url_file", "secret_env", "secret_file"),
    "slack": ("url", "url_env", "url_file"),
    "discord": ("url", "url_env", "url_file"),
    "email": (
        "smtp_host",
        "smtp_port",
        "security",
        "username",
        "password_env",
        "password_file",
        "from_addr",
        "to_addrs",
    ),
    "log": (),
    "console": (),
}
