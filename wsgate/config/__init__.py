"""TOML -> frozen :class:`Config`, validated completely; diff for reload; masked dump.

Every problem in a file is collected (not only the first) and raised together as one
:class:`~wsgate.errors.ConfigError`, each with its key path, line and a hint where one
helps. The dataclasses live in :mod:`wsgate.config.schema`, the line locator and the
collecting table reader in :mod:`wsgate.config.locate`; this module holds the rules.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import tomli

from wsgate.config.alerts import build_alerts
from wsgate.config.bounds import SUN_PATH_MAX, bounded
from wsgate.config.clients import build_clients
from wsgate.config.cluster import build_cluster, check_node_id
from wsgate.config.dump import config_to_dict, config_view
from wsgate.config.env import Override, apply_overrides, env_overrides
from wsgate.config.locate import (
    Problems,
    SourceLocator,
    Table,
    nesting_problem,
    short,
    syntax_problem,
)
from wsgate.config.routes import build_routes, name_endpoints
from wsgate.config.schema import (
    AlertChannelConfig,
    AlertRuleConfig,
    AlertsConfig,
    BudgetConfig,
    ClientConfig,
    Config,
    ConfigDiff,
    DaemonConfig,
    EndpointConfig,
    GatewayConfig,
    JobsConfig,
    MetricsConfig,
    RouteConfig,
    TlsConfig,
    diff_config,
    split_listen,
)
from wsgate.core.types import DialectName
from wsgate.errors import ConfigError, ConfigProblem

__all__ = [
    "AlertChannelConfig",
    "AlertRuleConfig",
    "AlertsConfig",
    "BudgetConfig",
    "ClientConfig",
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

_LOG_LEVELS = ("debug", "info", "warning", "error")


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
    (:mod:`wsgate.config.env`).
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
    secrets = _secret_env_names(doc)
    applied = [*env_overrides(env, secrets, doc), *overrides]
    merged = copy.deepcopy(doc)
    override_problems = apply_overrides(merged, applied)
    more = _secret_env_names(merged) - secrets
    if more:  # a list set from the environment (gateway.clients) names secret variables too
        applied = [*env_overrides(env, secrets | more, doc), *overrides]
        merged = copy.deepcopy(doc)
        override_problems = apply_overrides(merged, applied)
    doc = merged
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
    """A problem with an overridden key (or with an item or key inside an overridden list,
    ``cluster.servers[1]``) names the variable or flag that set it, not a line of the file."""
    sources = {ov.key: ov.source for ov in applied}
    out = []
    for p in problems:
        source = sources.get(p.path) or next(
            (s for key, s in sources.items() if p.path.startswith((key + "[", key + "."))), None
        )
        if source is not None:
            hint = f"{p.hint}; set by {source}" if p.hint else f"set by {source}"
            p = dataclasses.replace(p, line=None, hint=hint)
        out.append(p)
    return out


# --- building ------------------------------------------------------------------------------


def _build(root: Table, filename: str | None, digest: str) -> Config | None:
    daemon = _build_daemon(root.table("daemon"))
    routes = build_routes(root, daemon.max_connections)
    declared = root.data.get("routes")  # names, even of routes with problems of their own
    route_names = tuple(declared) if isinstance(declared, dict) else ()
    gateway = _build_gateway(root.table("gateway"), route_names)
    jobs = _build_jobs(root.table("jobs"))
    metrics = _build_metrics(root.table("metrics"))
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
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        t.problem(
            "control_socket",
            f"path is {len(os.fsencode(path))} bytes, longer than a Unix socket path can be "
            f"({SUN_PATH_MAX} bytes)",
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
        max_connections=bounded(
            t, "max_connections", t.integer("max_connections", d.max_connections), d.max_connections
        ),
        log_level=t.string("log_level", d.log_level, choices=_LOG_LEVELS),
        log_format=t.string("log_format", d.log_format, choices=("text", "json")),
        control_group=t.string("control_group", None),
        admin_group=t.string("admin_group", None),
        shutdown_timeout=bounded(
            t,
            "shutdown_timeout",
            t.number("shutdown_timeout", d.shutdown_timeout, minimum=0.0),
            d.shutdown_timeout,
        ),
    )
    t.finish()
    return cfg


def _build_gateway(t: Table | None, route_names: tuple[str, ...]) -> GatewayConfig:
    d = GatewayConfig()
    if t is None:
        return d
    listen = t.string("listen", d.listen)
    if not t.check_listen("listen", listen):
        listen = d.listen
    max_message = bounded(
        t,
        "max_message_bytes",
        t.integer("max_message_bytes", d.max_message_bytes),
        d.max_message_bytes,
    )
    send_buffer = bounded(
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
        max_sessions=bounded(
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
        max_subscriptions_per_session=bounded(
            t,
            "max_subscriptions_per_session",
            t.integer("max_subscriptions_per_session", d.max_subscriptions_per_session),
            d.max_subscriptions_per_session,
            "max_subscriptions_per_session",
        ),
        **_gateway_tls(t, listen),
        clients=build_clients(t, route_names),
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
            f.name: bounded(
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
        history_points=bounded(
            t, "history_points", t.integer("history_points", d.history_points), d.history_points
        ),
        listen=listen,
        history_retention=t.number("history_retention", d.history_retention),
        per_message=t.boolean("per_message", d.per_message),
    )
    t.finish()
    return cfg


# --- routes ----------------------------------------------------------------------------------


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
            replaced[name] = dataclasses.replace(route, endpoints=name_endpoints(good, t))
    if problems.items:
        raise ConfigError(problems.items, cfg.source_path)
    routes = tuple(replaced.get(r.name, r) for r in cfg.routes)
    return dataclasses.replace(cfg, routes=routes)
