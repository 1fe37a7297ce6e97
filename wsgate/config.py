"""TOML -> frozen :class:`Config`, validated completely; diff for reload; masked dump.

Every problem in a file is collected (not only the first) and raised together as one
:class:`~wsgate.errors.ConfigError`, each with its key path, line and a hint where one
helps. The dataclasses live in :mod:`wsgate.config_schema`, the line locator and the
collecting table reader in :mod:`wsgate.config_locate`; this module holds the rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import tomli

from wsgate.config_alerts import build_alerts
from wsgate.config_cluster import build_cluster, check_node_id
from wsgate.config_dump import config_to_dict, config_view
from wsgate.config_env import Override, apply_overrides, env_overrides
from wsgate.config_locate import (
    Problems,
    SourceLocator,
    Table,
    nesting_problem,
    read_budget,
    short,
    syntax_problem,
    toml_type,
)
from wsgate.config_schema import (
    AlertChannelConfig,
    AlertRuleConfig,
    AlertsConfig,
    BudgetConfig,
    Config,
    ConfigDiff,
    DaemonConfig,
    EndpointConfig,
    GatewayConfig,
    JobsConfig,
    MetricsConfig,
    RouteConfig,
    TlsConfig,
    default_connect_budget,
    default_max_lifetime,
    default_max_subscriptions,
    default_message_budget,
    diff_config,
    split_listen,
)
from wsgate.core.types import ConnectionType, DialectName, StrategyName
from wsgate.errors import ConfigError, ConfigProblem

__all__ = [
    "AlertChannelConfig",
    "AlertRuleConfig",
    "AlertsConfig",
    "BudgetConfig",
    "Config",
    "ConfigDiff",
    "DaemonConfig",
    "EndpointConfig",
    "GatewayConfig",
    "JobsConfig",
    "MetricsConfig",
    "Override",
    "RouteConfig",
    "TlsConfig",
    "config_to_dict",
    "config_view",
    "diff_config",
    "load_config",
    "parse_config",
    "with_endpoints",
]

log = logging.getLogger("wsgate.config")

_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LOG_LEVELS = ("debug", "info", "warning", "error")


# Bounds on values that would hurt at once: each is far past any real need, and its
# reason is the hint of the error, so `config check` says why as well as what.
_SUN_PATH_MAX = 107  # bytes of a Unix socket path (108 in sockaddr_un, one for the NUL)
_BYTES_PER_HISTORY_POINT = 58  # measured: ~57 KiB per connection at 1000 points
_LIMITS: dict[str, tuple[float | None, float | None, str]] = {
    # key: (lowest, highest, why)
    "metrics.history_points": (
        10,
        100_000,
        "history is allocated up front for every upstream connection, about "
        f"{_BYTES_PER_HISTORY_POINT} bytes per point (100000 points = 5.5 MiB per connection)",
    ),
    "jobs": (
        1.0,
        86_400.0,
        "a job scores every connection each run: more often than once a second burns a core "
        "for nothing, less often than once a day is never",
    ),
    "gateway.max_sessions": (
        1,
        1_000_000,
        "every session holds a file descriptor and its buffers; the process limit "
        "(LimitNOFILE=65536 in the unit) is far below this",
    ),
    "routes.max_sessions": (1, 1_000_000, "every session holds a file descriptor and buffers"),
    "daemon.max_connections": (
        1,
        100_000,
        "each upstream connection holds a socket, TLS state and its metric history",
    ),
    "gateway.max_message_bytes": (
        1,
        64 * 1024 * 1024,
        "a bot frame is read whole into memory before anything checks it",
    ),
    "gateway.send_buffer_bytes": (
        1,
        256 * 1024 * 1024,
        "this much may be queued for every slow session at once",
    ),
    "max_subscriptions_per_session": (
        1,
        100_000,
        "one session holding this many shared subscriptions fills a route's connections "
        "for every other bot",
    ),
    "daemon.shutdown_timeout": (
        0.1,
        300.0,
        "a stop that takes longer is killed by systemd (TimeoutStopSec) anyway",
    ),
}


def _bounded(t: Table, key: str, value: Any, default: Any, limits: str | None = None) -> Any:
    """``value`` if within ``_LIMITS``; else a problem that gives the reason, and the default."""
    lo, hi, why = _LIMITS[limits or ".".join((*map(str, t.path), key))]
    if value is None or isinstance(value, bool):
        return value
    if lo is not None and value < lo:
        t.problem(key, f"must be >= {_plain_number(lo)}, got {short(value)}", why)
        return default
    if hi is not None and value > hi:
        t.problem(key, f"must be <= {_plain_number(hi)}, got {short(value)}", why)
        return default
    return value


def _plain_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# --- public entry points ---------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str],
    *,
    overrides: Sequence[Override] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate a config file; every problem (I/O included) raises ConfigError.

    ``WSGATE_<SECTION>_<KEY>`` variables of ``environ`` (default: the process environment)
    and then ``overrides`` (command-line flags) take precedence over the file
    (:mod:`wsgate.config_env`).
    """
    filename = os.fspath(path)
    try:
        with open(filename, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem("<file>", f"cannot read config file: {reason}")], filename
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = ConfigProblem("<file>", "file is not valid UTF-8", line)
        raise ConfigError([problem], filename) from None
    return _parse(text, filename, hashlib.sha256(data).hexdigest(), overrides, environ)


def parse_config(
    text: str,
    filename: str | None = None,
    *,
    overrides: Sequence[Override] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate TOML text; ``source_sha256`` is the hash of the UTF-8 encoded text."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _parse(text, filename, digest, overrides, environ)


def _secret_env_names(doc: Any) -> set[str]:
    """Every value of an ``*_env`` key anywhere in the document: secrets, never overrides."""
    names: set[str] = set()
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                    names.add(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return names


def _parse(
    text: str,
    filename: str | None,
    digest: str,
    overrides: Sequence[Override] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    try:
        doc = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError([syntax_problem(exc)], filename) from None
    except RecursionError:
        # tomli refuses inline arrays/tables nested past its limit with a RecursionError.
        raise ConfigError([nesting_problem(text)], filename) from None
    env = os.environ if environ is None else environ
    applied = [*env_overrides(env, _secret_env_names(doc), doc), *overrides]
    override_problems = apply_overrides(doc, applied)
    problems = Problems(SourceLocator(text))
    cfg = _build(Table(problems, (), doc), filename, digest)
    if problems.items or override_problems or cfg is None:
        raise ConfigError(_blame(problems.sorted(), applied) + override_problems, filename)
    sources: dict[str, str] = {}
    for ov in applied:
        sources[ov.key] = ov.source  # a flag after the variable wins, as it did in doc
    log.debug("config %s parsed: %d routes", filename or "<text>", len(cfg.routes))
    return dataclasses.replace(cfg, overrides=tuple(sorted(sources.items())))


def _blame(problems: list[ConfigProblem], applied: Sequence[Override]) -> list[ConfigProblem]:
    """A problem with an overridden key names the variable or flag that set it."""
    sources = {ov.key: ov.source for ov in applied}
    out = []
    for p in problems:
        source = sources.get(p.path)
        if source is not None:
            p = dataclasses.replace(p, line=None, hint=f"set by {source}")
        out.append(p)
    return out


# --- building ------------------------------------------------------------------------------


def _build(root: Table, filename: str | None, digest: str) -> Config | None:
    daemon = _build_daemon(root.table("daemon"))
    gateway = _build_gateway(root.table("gateway"))
    jobs = _build_jobs(root.table("jobs"))
    metrics = _build_metrics(root.table("metrics"))
    routes = _build_routes(root, daemon.max_connections)
    alerts = build_alerts(root.table("alerts"))
    cluster = build_cluster(root.table("cluster"))
    check_node_id(root, daemon.node_id, cluster)
    _check_share(root, routes or (), cluster.enabled)
    _check_listeners(root, gateway, metrics)
    root.finish()
    if routes is None:
        return None
    return Config(daemon, gateway, jobs, metrics, routes, alerts, filename, digest, cluster)


def _check_share(root: Table, routes: tuple[RouteConfig, ...], clustered: bool) -> None:
    for r in routes:
        if r.share != "cluster":
            continue
        if not clustered:
            root.problems.add(
                ("routes", r.name, "share"),
                f'routes.{r.name}.share = "cluster" needs a cluster to share with',
                'set [cluster] engine = "nats" (and servers), or share = "node"',
            )
        elif r.dialect is DialectName.RAW:
            root.problems.add(
                ("routes", r.name, "share"),
                f'routes.{r.name}.share = "cluster" on a raw route: raw sessions are '
                "dedicated relays, nothing is shared",
                'remove share, or use share = "node"',
            )


def _check_listeners(root: Table, gateway: GatewayConfig, metrics: MetricsConfig) -> None:
    if not metrics.enabled:
        return
    wildcard = ("", "0.0.0.0", "::")
    same_port = metrics.port == gateway.port and metrics.port != 0
    if same_port and (
        metrics.host == gateway.host or metrics.host in wildcard or gateway.host in wildcard
    ):
        root.problems.add(
            ("metrics", "listen"),
            f"metrics.listen {metrics.listen!r} is the address of gateway.listen "
            f"({gateway.listen!r})",
            "the two listeners cannot share an address; give metrics another port, "
            'or "" to turn it off',
        )


def _control_socket(t: Table, default: str) -> str:
    path: str = t.string("control_socket", default)
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        t.problem(
            "control_socket",
            f"path is {len(os.fsencode(path))} bytes, longer than a Unix socket path can be "
            f"({_SUN_PATH_MAX} bytes)",
            "choose a shorter path, e.g. /run/wsgate/control.sock",
        )
        return default
    return path


def _build_daemon(t: Table | None) -> DaemonConfig:
    if t is None:
        return DaemonConfig()
    d = DaemonConfig()
    cfg = DaemonConfig(
        node_id=t.string("node_id", d.node_id),
        control_socket=_control_socket(t, d.control_socket),
        state_dir=t.string("state_dir", d.state_dir),
        max_connections=_bounded(
            t, "max_connections", t.integer("max_connections", d.max_connections), d.max_connections
        ),
        log_level=t.string("log_level", d.log_level, choices=_LOG_LEVELS),
        log_format=t.string("log_format", d.log_format, choices=("text", "json")),
        control_group=t.string("control_group", None),
        admin_group=t.string("admin_group", None),
        shutdown_timeout=_bounded(
            t,
            "shutdown_timeout",
            t.number("shutdown_timeout", d.shutdown_timeout, minimum=0.0),
            d.shutdown_timeout,
        ),
    )
    t.finish()
    return cfg


def _build_gateway(t: Table | None) -> GatewayConfig:
    d = GatewayConfig()
    if t is None:
        return d
    listen = t.string("listen", d.listen)
    if not t.check_listen("listen", listen):
        listen = d.listen
    max_message = _bounded(
        t,
        "max_message_bytes",
        t.integer("max_message_bytes", d.max_message_bytes),
        d.max_message_bytes,
    )
    send_buffer = _bounded(
        t,
        "send_buffer_bytes",
        t.integer("send_buffer_bytes", d.send_buffer_bytes),
        d.send_buffer_bytes,
    )
    if send_buffer < max_message:
        t.problem(
            "send_buffer_bytes",
            f"must be >= max_message_bytes ({max_message}) so one message fits, got {send_buffer}",
        )
    close_code = t.integer("slow_consumer_close_code", d.slow_consumer_close_code)
    if close_code not in (1008, 1013):
        t.problem("slow_consumer_close_code", f"expected 1008 or 1013, got {short(close_code)}")
        close_code = d.slow_consumer_close_code
    cfg = GatewayConfig(
        listen=listen,
        max_sessions=_bounded(
            t, "max_sessions", t.integer("max_sessions", d.max_sessions), d.max_sessions
        ),
        max_message_bytes=max_message,
        send_buffer_bytes=send_buffer,
        slow_consumer_close_code=close_code,
        client_messages_per_second=t.number(
            "client_messages_per_second", d.client_messages_per_second
        ),
        linger=t.number("linger", d.linger, minimum=0.0),
        origins=t.strings("origins"),
        events_token_env=t.env_name("events_token_env"),
        events_require_token=t.boolean("events_require_token", d.events_require_token),
        max_subscriptions_per_session=_bounded(
            t,
            "max_subscriptions_per_session",
            t.integer("max_subscriptions_per_session", d.max_subscriptions_per_session),
            d.max_subscriptions_per_session,
            "max_subscriptions_per_session",
        ),
        **_gateway_tls(t, listen),
    )
    t.finish()
    return cfg


_LOOPBACK = ("127.", "::1", "localhost")


def _gateway_tls(t: Table, listen: str) -> dict[str, Any]:
    cert: str | None = t.string("tls_cert_file", None)
    key: str | None = t.string("tls_key_file", None)
    plain: bool = t.boolean("allow_plaintext", False)
    wanted = cert is not None or key is not None  # a TLS problem is reported, not this one
    if (cert is None) != (key is None):
        missing = "tls_key_file" if key is None else "tls_cert_file"
        t.problem(
            missing,
            f"{missing} is required with {'tls_cert_file' if key is None else 'tls_key_file'}",
        )
        cert = key = None
    elif cert is not None and key is not None:
        try:
            load_server_tls(cert, key)
        except (OSError, ssl.SSLError) as exc:
            t.problem(
                "tls_cert_file",
                f"cannot load the certificate {cert!r} with key {key!r}: {exc}",
                "give a PEM certificate chain and its private key, readable by wsgate",
            )
            cert = key = None
    loopback = split_listen(listen)[0].startswith(_LOOPBACK)
    if not loopback and not wanted and not plain:
        t.problem(
            "listen",
            f"gateway.listen {listen!r} is not a loopback address and the gateway has no TLS",
            "set tls_cert_file and tls_key_file (bots then use wss://), or allow_plaintext = "
            "true when a TLS front or a private network protects it",
        )
    return {"tls_cert_file": cert, "tls_key_file": key, "allow_plaintext": plain}


def load_server_tls(cert: str, key: str, ctx: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """A server TLS context with ``cert``/``key`` (or ``ctx`` with them re-read)."""
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _build_jobs(t: Table | None) -> JobsConfig:
    d = JobsConfig()
    if t is None:
        return d
    cfg = JobsConfig(
        **{
            f.name: _bounded(
                t,
                f.name,
                t.number(f.name, getattr(d, f.name), minimum=0.0),
                getattr(d, f.name),
                "jobs",
            )
            for f in dataclasses.fields(JobsConfig)
        }
    )
    t.finish()
    return cfg


def _build_metrics(t: Table | None) -> MetricsConfig:
    d = MetricsConfig()
    if t is None:
        return d
    listen = t.string("listen", d.listen, allow_empty=True)
    if not t.check_listen("listen", listen, allow_empty=True):
        listen = d.listen
    cfg = MetricsConfig(
        history_points=_bounded(
            t, "history_points", t.integer("history_points", d.history_points), d.history_points
        ),
        listen=listen,
        history_retention=t.number("history_retention", d.history_retention),
        per_message=t.boolean("per_message", d.per_message),
    )
    t.finish()
    return cfg


# --- routes ----------------------------------------------------------------------------------

# Route defaults come from RouteConfig's own field defaults: written once, in config_schema.
# How far a route's shared subscriptions are shared: this node's bots, or the cluster's.
SHARE_MODES = ("node", "cluster")

_RD: dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(RouteConfig)
    if f.default is not dataclasses.MISSING
}


def endpoint_default_name(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _name_endpoints(
    urls: Sequence[tuple[str, int, str | None]], t: Table | None
) -> tuple[EndpointConfig, ...]:
    """(url, weight, explicit name) -> endpoints with unique names; duplicates reported on t."""
    taken: dict[str, int] = {}
    for index, (_, _, name) in enumerate(urls):
        if name is None:
            continue
        if name in taken and t is not None:
            t.problems.add(
                (*t.path, index, "name"),
                f"duplicate endpoint name {name!r} (already used by endpoints[{taken[name]}])",
                "give each endpoint of a route a different name",
            )
        taken.setdefault(name, index)
    defaults = [endpoint_default_name(u) for u, _, n in urls if n is None]
    out: list[EndpointConfig] = []
    for index, (url, weight, name) in enumerate(urls):
        if name is None:
            name = endpoint_default_name(url)
            if name in taken or defaults.count(name) > 1:
                name = f"{name}#{index}"
            taken.setdefault(name, index)
        out.append(EndpointConfig(url=url, name=name, weight=weight))
    return tuple(out)


def _build_endpoints(t: Table) -> tuple[EndpointConfig, ...]:
    raw = t.data.get("endpoints")
    t.has("endpoints")
    if raw is None:
        t.problem(
            "endpoints",
            "missing required key 'endpoints': a route needs at least one endpoint",
            f"add a [[{'.'.join(str(p) for p in t.path)}.endpoints]] table with a url",
        )
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        t.problem("endpoints", "expected an array of tables ([[...endpoints]] with url = ...)")
        return ()
    if not raw:
        t.problem("endpoints", "a route needs at least one endpoint")
        return ()
    parsed: list[tuple[str, int, str | None]] = []
    ok = True
    for index, item in enumerate(raw):
        ep = Table(t.problems, (*t.at("endpoints"), index), item)
        url = ep.string("url")
        weight = ep.integer("weight", 1, lo=0)
        name = ep.string("name", None)
        ep.finish()
        if url is None or not ep.check_url("url", url, ("ws", "wss")):
            ok = False
            continue
        parsed.append((url, weight, name))
    if ok and all(w == 0 for _, w, _ in parsed):
        t.problem("endpoints", "every endpoint has weight 0; at least one needs weight > 0")
    return _name_endpoints(parsed, Table(t.problems, t.at("endpoints"), {})) if ok else ()


def _build_tls(t: Table | None) -> TlsConfig:
    if t is None:
        return TlsConfig()
    tls = TlsConfig(
        verify=t.boolean("verify", True),
        ca_file=t.string("ca_file", None),
        client_cert=t.string("client_cert", None),
        client_key=t.string("client_key", None),
    )
    if tls.client_key is not None and tls.client_cert is None:
        t.problem("client_key", "client_key needs client_cert")
    t.finish()
    return tls


def _cadence(t: Table) -> tuple[tuple[str, float], ...]:
    sub = t.table("channel_cadence")
    if sub is None:
        return ()
    out = []
    for channel in sorted(sub.data):
        seconds = sub.number(channel)
        if seconds is not None:
            out.append((channel, seconds))
    return tuple(out)


def _build_route(name: str, t: Table, daemon_max: int) -> RouteConfig | None:
    dialect = t.enum("dialect", DialectName)
    ctype = t.enum("type", ConnectionType)
    strategy = t.enum("strategy", StrategyName, StrategyName.ADAPTIVE)
    endpoints = _build_endpoints(t)
    d_for_defaults = dialect or DialectName.RAW
    first_host = (urlsplit(endpoints[0].url).hostname or "") if endpoints else ""
    # Raw routes, Binance user data and order entry are per-session relays (1:1): every
    # session opens its own upstream, at the session's own path (/ws/<listenKey>, /ws-api/v3,
    # a raw route's path and query), so a connection opened before a session arrives can
    # serve nobody; a pooled probe would only be one more connection the exchange counts.
    private_binance = (
        dialect in (DialectName.BINANCE, DialectName.BINANCE_USDM)
        and ctype is not None
        and ctype.authenticated
    )
    relay_only = dialect is DialectName.RAW or private_binance
    min_conn = t.integer("min_connections", 0 if relay_only else _RD["min_connections"], lo=0)
    if relay_only and min_conn:
        t.problem(
            "min_connections",
            f"a {'raw' if dialect is DialectName.RAW else f'{dialect} {ctype}'} route "
            "relays each session on an upstream connection of its own, opened when the "
            f"session arrives; min_connections does not apply (got {min_conn})",
            "remove min_connections (or set 0); max_connections caps the concurrent sessions",
        )
    max_conn = t.integer("max_connections", _RD["max_connections"], lo=1)
    if min_conn > max_conn:
        t.problem(
            "min_connections",
            f"min_connections ({min_conn}) must be <= max_connections ({max_conn})",
        )
    if max_conn > daemon_max:
        t.problem(
            "max_connections",
            f"must be <= daemon.max_connections ({daemon_max}), got {max_conn}",
        )
    backoff_initial = t.number("backoff_initial", _RD["backoff_initial"])
    backoff_max = t.number("backoff_max", _RD["backoff_max"])
    if backoff_max < backoff_initial:
        t.problem("backoff_max", f"must be >= backoff_initial ({backoff_initial:g})")
    lifetime = t.number("max_lifetime", default_max_lifetime(d_for_defaults), minimum=0.0)
    rest_url = t.string("rest_url", None)
    if rest_url is not None and not t.check_url("rest_url", rest_url, ("http", "https")):
        rest_url = None
    route = RouteConfig(
        name=name,
        dialect=d_for_defaults,
        type=ctype or ConnectionType.MARKET_DATA,
        strategy=strategy or StrategyName.ADAPTIVE,
        endpoints=endpoints,
        max_subscriptions_per_connection=t.integer(
            "max_subscriptions_per_connection", default_max_subscriptions(d_for_defaults), lo=1
        ),
        stale_after=t.number("stale_after", _RD["stale_after"]),
        min_connections=min_conn,
        max_connections=max_conn,
        max_sessions=_bounded(
            t, "max_sessions", t.integer("max_sessions", None), None, "routes.max_sessions"
        ),
        max_subscriptions_per_session=_bounded(
            t,
            "max_subscriptions_per_session",
            t.integer("max_subscriptions_per_session", None),
            None,
            "max_subscriptions_per_session",
        ),
        ping_interval=t.number("ping_interval", _RD["ping_interval"]),
        ping_timeout=t.number("ping_timeout", _RD["ping_timeout"]),
        app_ping_interval=t.number("app_ping_interval", _RD["app_ping_interval"]),
        # 0 switches rotation off, which TOML cannot say with a null.
        max_lifetime=lifetime or None,
        connect_budget=read_budget(t, "connect_budget", default_connect_budget(first_host)),
        message_budget=read_budget(t, "message_budget", default_message_budget(d_for_defaults)),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        min_uptime=t.number("min_uptime", _RD["min_uptime"], minimum=0.0),
        rest_url=rest_url,
        token_env=t.env_name("token_env"),
        tls=_build_tls(t.table("tls")),
        use_proxy=t.boolean("use_proxy", _RD["use_proxy"]),
        slow_start=t.number("slow_start", _RD["slow_start"], minimum=0.0),
        linger=t.number("linger", None, minimum=0.0),
        required=t.boolean("required", _RD["required"]),
        share=t.string("share", _RD["share"], choices=SHARE_MODES),
        channel_cadence=_cadence(t),
    )
    t.finish()
    if dialect is None or ctype is None or not endpoints:
        return None
    return route


def _build_routes(root: Table, daemon_max: int) -> tuple[RouteConfig, ...] | None:
    table = root.table("routes", required=True)
    if table is None:
        return None
    routes: list[RouteConfig] = []
    complete = True
    for name, body in table.data.items():
        table.has(name)
        if not _ROUTE_NAME.fullmatch(name):
            table.problem(
                name,
                f"invalid route name {name!r}",
                "use letters, digits, '_', '-' or '.', starting with a letter or digit",
            )
        if not isinstance(body, dict):
            table.problem(
                name, f"expected table [routes.{name}], got {toml_type(body)} {short(body)}"
            )
            complete = False
            continue
        route = _build_route(name, Table(table.problems, table.at(name), body), daemon_max)
        if route is None:
            complete = False
        else:
            routes.append(route)
    if not table.data:
        table.problem(None, "no routes defined", "add a [routes.<name>] table with endpoints")
        return None
    total_min = sum(r.min_connections for r in routes)
    if total_min > daemon_max:
        table.problem(
            None,
            f"routes need {total_min} connections at minimum, more than "
            f"daemon.max_connections ({daemon_max})",
        )
    return tuple(routes) if complete else None


def with_endpoints(cfg: Config, urls: Mapping[str, list[str]]) -> Config:
    """Point each named route at ``urls`` (weight 1 each), keeping everything else.

    Used by ``wsgate run --demo`` to aim the configured routes at the simulator. An
    unknown route name raises KeyError; a bad URL or an empty list raises ConfigError.
    """
    problems = Problems(None)
    replaced: dict[str, RouteConfig] = {}
    for name, url_list in urls.items():
        route = cfg.route(name)
        t = Table(problems, ("routes", name, "endpoints"), {})
        if not url_list:
            t.problem(None, "a route needs at least one endpoint")
        good = [(u, 1, None) for i, u in enumerate(url_list) if t.check_url(i, u, ("ws", "wss"))]
        if len(good) == len(url_list) and good:
            replaced[name] = dataclasses.replace(route, endpoints=_name_endpoints(good, t))
    if problems.items:
        raise ConfigError(problems.items, cfg.source_path)
    routes = tuple(replaced.get(r.name, r) for r in cfg.routes)
    return dataclasses.replace(cfg, routes=routes)
