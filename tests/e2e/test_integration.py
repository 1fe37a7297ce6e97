"""wsgate.integration: the specification's own usage example, run against the simulator."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from wsgate.integration import (
    ConnectionConfig,
    ConnectionType,
    IntegrationConfig,
    LoadBalancingStrategy,
    WebSocketConnection,
    WebSocketConnectionInterface,
    WebSocketIntegrationManager,
)
from wsgate.sim import Simulator


async def spec_example(URL: str) -> None:  # the example's own name
    # The specification's example, verbatim but for its import line (above).
    manager = WebSocketIntegrationManager(IntegrationConfig(cluster_node_id="node-1"))
    await manager.start()
    ok = await manager.register_connection(WebSocketConnection(),
            ConnectionConfig(url=URL, connection_type=ConnectionType.MARKET_DATA))  # fmt: skip
    conn = await manager.get_connection(ConnectionType.MARKET_DATA, strategy=LoadBalancingStrategy.LEAST_LATENCY)  # fmt: skip  # noqa: E501
    print(manager.get_system_overview()["health"]["overall_health_score"])
    for m in manager.analytics.get_performance_metrics(ConnectionType.MARKET_DATA): print(m.avg_latency_ms)  # type: ignore[union-attr]  # fmt: skip  # noqa: E501, E701
    for a in manager.alert_manager.get_active_alerts(): print(a.title, a.severity.value)  # type: ignore[union-attr]  # fmt: skip  # noqa: E701
    await manager.stop()
    print("ok", ok, conn is not None)


def test_the_specification_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        async with Simulator(seed=3) as sim:
            await asyncio.wait_for(spec_example(sim.bitfinex_url), 60)

    asyncio.run(scenario())
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "ok True True"
    score = float(lines[0])
    assert 0.0 <= score <= 100.0 and score > 50.0  # one healthy open connection
    latencies = [float(x) for x in lines[1:-1] if re.fullmatch(r"[0-9.e-]+", x)]
    assert len(latencies) == 1 and 0.0 < latencies[0] < 1000.0  # measured, in milliseconds


class MinimalConnection(WebSocketConnectionInterface):
    """A caller's own implementation: only the abstract methods."""

    def __init__(self) -> None:
        self.ws: ClientConnection | None = None
        self.urls: list[str] = []

    async def connect(self, url: str) -> bool:
        self.urls.append(url)
        self.ws = await connect(url)
        return True

    async def send(self, message: object) -> bool:
        assert self.ws is not None
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))
        return True

    async def receive(self, timeout: float | None = None) -> str | bytes | None:  # noqa: ASYNC109
        assert self.ws is not None
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    def is_connected(self) -> bool:
        return self.ws is not None and self.ws.state is State.OPEN


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/ws/2"


def test_registered_connections_are_endpoints_measured_and_balanced() -> None:
    async def scenario() -> None:
        async with Simulator(seed=4) as sim:
            cfg = IntegrationConfig(enable_analytics=False, enable_alerts=False, seed=7)
            async with WebSocketIntegrationManager(cfg) as manager:
                assert manager.analytics is None and manager.alert_manager is None
                own = MinimalConnection()
                mine = WebSocketConnection()
                assert await manager.register_connection(
                    own, ConnectionConfig(url=sim.bitfinex_url, name="primary")
                )
                assert await manager.register_connection(
                    mine, ConnectionConfig(url=sim.bitfinex_url + "?mirror=1", name="mirror")
                )
                # Both are endpoints of one route, each with its own measured upstream.
                rt = manager.gateway.daemon.routes["market_data"]
                assert [e.name for e in rt.cfg.endpoints] == ["primary", "mirror"]
                ups = {c.settings.endpoint for c in rt.pool.values() if c.state.is_up}
                assert ups == {"primary", "mirror"}
                # The connections talk through the gateway, in the exchange's protocol.
                gw_url = manager.gateway.url("market_data")
                assert own.urls == [gw_url] and mine.url == gw_url
                info = json.loads(await own.receive(10) or "{}")
                assert info["event"] == "info"
                assert await mine.send(
                    {"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"}
                )
                seen = []
                for _ in range(5):
                    msg = await mine.receive(10)
                    assert msg is not None
                    seen.append(json.loads(msg))
                assert any(isinstance(m, dict) and m.get("event") == "subscribed" for m in seen)
                # Round robin over the two endpoints hands out both registered objects.
                picks = {
                    id(
                        await manager.get_connection(
                            ConnectionType.MARKET_DATA, LoadBalancingStrategy.ROUND_ROBIN
                        )
                    )
                    for _ in range(4)
                }
                assert picks == {id(own), id(mine)}
                assert await manager.get_connection(ConnectionType.TRADING) is None
                # A URL that does not answer: False, and nothing stays behind.
                dead = WebSocketConnection()
                assert not await manager.register_connection(
                    dead, ConnectionConfig(url=_dead_url(), connect_timeout=0.5)
                )
                assert [e.name for e in rt.cfg.endpoints] == ["primary", "mirror"]
                assert not dead.is_connected()
                ov = manager.get_system_overview()
                assert ov["connections"]["registered"] == 2
                assert ov["node_id"] == "node-1"
                assert 0 <= ov["health"]["overall_health_score"] <= 100

    asyncio.run(scenario())


def test_bad_input_gets_a_clear_error() -> None:
    from wsgate.errors import WsgateError

    with pytest.raises(WsgateError, match="ws:// or wss://"):
        ConnectionConfig(url="https://api.bitfinex.com")
    with pytest.raises(WsgateError, match="exchange"):
        ConnectionConfig(url="wss://x.example/ws", exchange="kraken")
    with pytest.raises(WsgateError, match="health_check_interval"):
        IntegrationConfig(health_check_interval=0)
    assert ConnectionConfig(url="wss://api-pub.bitfinex.com/ws/2").dialect.value == "bitfinex"
    assert ConnectionConfig(url="wss://stream.binance.com:9443/ws").dialect.value == "binance"
    assert ConnectionConfig(url="wss://example.com/feed").dialect.value == "raw"
    assert len(LoadBalancingStrategy) == 7
    assert [t.name for t in ConnectionType] == ["MARKET_DATA", "USER_DATA", "TRADING", "SYSTEM"]


def test_registration_urls_reach_the_embedding_apps_logs_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    password, token = "pw-0123456789abcdef", "tk-0123456789abcdef"

    def secret_url(url: str) -> str:
        return url.replace("ws://", f"ws://bot:{password}@", 1) + f"?token={token}"

    async def scenario() -> list[str]:
        shown: list[str] = []
        async with Simulator(seed=5) as sim:
            cfg = IntegrationConfig(enable_alerts=False, seed=7)
            async with WebSocketIntegrationManager(cfg) as manager:
                assert manager.analytics is not None
                cc = ConnectionConfig(url=secret_url(sim.bitfinex_url), name="primary")
                shown.append(repr(cc))
                assert await manager.register_connection(WebSocketConnection(), cc)
                dead = ConnectionConfig(url=secret_url(_dead_url()), connect_timeout=0.5)
                assert not await manager.register_connection(WebSocketConnection(), dead)
                assert not await WebSocketConnection(open_timeout=0.5).connect(
                    secret_url(_dead_url())
                )
                views = manager.analytics.get_performance_metrics(ConnectionType.MARKET_DATA)
                shown.extend(m.url for m in views)
        return shown

    with caplog.at_level("DEBUG", logger="wsgate"):
        shown = asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any("registered ws://***@127.0.0.1" in m and "token=***" in m for m in messages)
    assert any("did not open" in m for m in messages), messages
    assert any("connection to ws://***@127.0.0.1" in m for m in messages), messages
    for text in [*messages, *shown]:
        assert password not in text and token not in text, text
