"""The ``[routes.<name>]`` tables: endpoints, upstream TLS, cadences and every route key."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from wsgate.config.bounds import bounded
from wsgate.config.locate import Table, read_budget, short, toml_type
from wsgate.config.schema import (
    EndpointConfig,
    RouteConfig,
    TlsConfig,
    default_connect_budget,
    default_max_lifetime,
    default_max_subscriptions,
    default_message_budget,
)
from wsgate.core.types import ConnectionType, DialectName, StrategyName

__all__ = [
    "ENDPOINT_SERVES",
    "SHARE_MODES",
    "build_routes",
    "endpoint_default_name",
    "name_endpoints",
]

_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Route defaults come from RouteConfig's own field defaults: written once, in config_schema.
# How far a route's shared subscriptions are shared: this node's bots, or the cluster's.
SHARE_MODES = ("node", "cluster")
# What an endpoint serves: the venue's streams, or (Binance) its WebSocket API host.
ENDPOINT_SERVES = ("streams", "ws_api")

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


def name_endpoints(
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
    serves: list[str] = []
    ok = True
    for index, item in enumerate(raw):
        ep = Table(t.problems, (*t.at("endpoints"), index), item)
        url = ep.string("url")
        weight = ep.integer("weight", 1, lo=0)
        name = ep.string("name", None)
        serves.append(ep.string("serves", "streams", choices=ENDPOINT_SERVES))
        ep.finish()
        if url is None or not ep.check_url("url", url, ("ws", "wss")):
            ok = False
            continue
        parsed.append((url, weight, name))
    if ok and all(w == 0 for _, w, _ in parsed):
        t.problem("endpoints", "every endpoint has weight 0; at least one needs weight > 0")
    if not ok:
        return ()
    named = name_endpoints(parsed, Table(t.problems, t.at("endpoints"), {}))
    return tuple(dataclasses.replace(e, serves=s) for e, s in zip(named, serves, strict=True))


def _check_serves(
    t: Table,
    dialect: DialectName | None,
    ctype: ConnectionType | None,
    endpoints: Sequence[EndpointConfig],
) -> None:
    """``serves = "ws_api"`` only where sessions of the WebSocket API exist."""
    for index, ep in enumerate(endpoints):
        if ep.serves != "ws_api":
            continue
        if dialect not in (DialectName.BINANCE, DialectName.BINANCE_USDM) or not (
            ctype is not None and ctype.authenticated
        ):
            t.problems.add(
                (*t.at("endpoints"), index, "serves"),
                'serves = "ws_api" marks a Binance WebSocket API host: it needs a binance or '
                f"binance_usdm route of type user_data or trading (this one is {dialect} "
                f"{ctype})",
                'remove serves (or set "streams"), or move the endpoint to such a route',
            )


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
    _check_serves(t, dialect, ctype, endpoints)
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
        max_sessions=bounded(
            t, "max_sessions", t.integer("max_sessions", None), None, "routes.max_sessions"
        ),
        max_subscriptions_per_session=bounded(
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


def build_routes(root: Table, daemon_max: int) -> tuple[RouteConfig, ...] | None:
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
