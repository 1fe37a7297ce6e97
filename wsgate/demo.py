"""The built-in demo: the production schema with every endpoint pointed at the simulator."""

from __future__ import annotations

import dataclasses

from wsgate.config import Config, parse_config, with_endpoints

__all__ = ["DEMO_TOML", "demo_config", "point_at_simulator"]

DEMO_TOML = """
[daemon]
node_id = "demo"

[gateway]
listen = "127.0.0.1:8765"
events_require_token = false    # the demo's dashboard stream is open on loopback

[jobs]
health_check_interval = 5
analytics_interval = 10
alert_check_interval = 5
cleanup_interval = 60

[metrics]
listen = "127.0.0.1:9108"

[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
strategy = "least_latency"
stale_after = 20
[[routes.bitfinex.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"

[routes.bitfinex_auth]
dialect = "bitfinex"
type = "trading"
strategy = "health_based"
min_connections = 0
[[routes.bitfinex_auth.endpoints]]
url = "wss://api.bitfinex.com/ws/2"

[routes.binance]
dialect = "binance"
type = "market_data"
strategy = "adaptive"
rest_url = "https://api.binance.com/api/v3"
[[routes.binance.endpoints]]
url = "wss://stream.binance.com:9443"

[routes.binance_usdm]
dialect = "binance_usdm"
type = "market_data"
strategy = "adaptive"
rest_url = "https://fapi.binance.com/fapi/v1"
[[routes.binance_usdm.endpoints]]
url = "wss://fstream.binance.com"

[routes.okx]
dialect = "okx"
type = "market_data"
strategy = "adaptive"
[[routes.okx.endpoints]]
url = "wss://ws.okx.com:8443"

[routes.bybit]
dialect = "bybit"
type = "market_data"
strategy = "adaptive"
[[routes.bybit.endpoints]]
url = "wss://stream.bybit.com"

[alerts.channels.log]
enabled = true
min_severity = "info"

[alerts.channels.console]
enabled = true
min_severity = "warning"
"""


def demo_config() -> Config:
    return parse_config(DEMO_TOML, "<demo>")


def point_at_simulator(
    cfg: Config,
    bitfinex_url: str,
    binance_url: str,
    binance_rest_url: str,
    *,
    binance_usdm_url: str | None = None,
    binance_usdm_rest_url: str | None = None,
    okx_url: str | None = None,
    bybit_url: str | None = None,
) -> Config:
    """Rewrite every route of a simulated venue in ``cfg`` to the in-process simulator."""
    ws: dict[str, str | None] = {
        "bitfinex": bitfinex_url,
        "binance": binance_url,
        "binance_usdm": binance_usdm_url,
        "okx": okx_url,
        "bybit": bybit_url,
    }
    rest: dict[str, str | None] = {
        "binance": binance_rest_url,
        "binance_usdm": binance_usdm_rest_url,
    }
    urls: dict[str, list[str]] = {}
    for r in cfg.routes:
        url = ws.get(r.dialect.value)
        if url is not None:
            urls[r.name] = [url]
    cfg = with_endpoints(cfg, urls)
    routes = tuple(
        dataclasses.replace(r, rest_url=rest[r.dialect.value])
        if rest.get(r.dialect.value) is not None
        else r
        for r in cfg.routes
    )
    return dataclasses.replace(cfg, routes=routes)
