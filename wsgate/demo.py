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
    cfg: Config, bitfinex_url: str, binance_url: str, binance_rest_url: str
) -> Config:
    """Rewrite every bitfinex/binance route of ``cfg`` to the in-process simulator."""
    urls: dict[str, list[str]] = {}
    for r in cfg.routes:
        if r.dialect.value == "bitfinex":
            urls[r.name] = [bitfinex_url]
        elif r.dialect.value == "binance":
            urls[r.name] = [binance_url]
    cfg = with_endpoints(cfg, urls)
    routes = tuple(
        dataclasses.replace(r, rest_url=binance_rest_url) if r.dialect.value == "binance" else r
        for r in cfg.routes
    )
    return dataclasses.replace(cfg, routes=routes)
