"""The in-process Gateway API against the built-in simulator: the README example, run."""

from __future__ import annotations

import asyncio
import json
import tempfile

import pytest
from websockets.asyncio.client import connect

from tests.e2e.harness import until
from tests.simstack import daemon_head
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.errors import NoCandidateError
from wsgate.sim import Simulator


def _config(bitfinex_url: str, tmp: str) -> str:
    return (
        daemon_head(tmp)
        + f"""
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
min_connections = 2
[[routes.bitfinex.endpoints]]
url = "{bitfinex_url}"
"""
    )


def test_gateway_context_manager_end_to_end() -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with Simulator(seed=5) as sim:
            cfg = parse_config(_config(sim.bitfinex_url, tmp))
            async with Gateway(cfg, seed=1) as gw:
                pool = gw.daemon.routes["bitfinex"].pool
                await until(lambda: sum(c.state.is_up for c in pool.values()) == 2, 10, "2 up")
                conn = gw.get_connection("market_data", strategy="round_robin")
                other = gw.get_connection("market_data", strategy="round_robin")
                assert {conn.id, other.id} == set(gw.daemon.routes["bitfinex"].pool)
                with pytest.raises(NoCandidateError):
                    gw.get_connection("trading")
                async with connect(gw.url("bitfinex")) as ws:
                    await ws.recv()  # info
                    await ws.send(
                        json.dumps({"event": "subscribe", "channel": "ticker", "symbol": "BTCUSD"})
                    )
                    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert ack["event"] == "subscribed" and ack["symbol"] == "tBTCUSD"
                    data = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert data[0] == ack["chanId"]
                ov = gw.overview()
                assert ov["connections"] == 2 and ov["up"] == 2
                assert gw.performance("market_data")["connections"] == 2
                assert gw.performance("trading")["connections"] == 0
                name = gw.register_connection("bitfinex", sim.bitfinex_url + "?mirror=1")
                assert name in {e.name for e in gw.daemon.routes["bitfinex"].cfg.endpoints}
                assert gw.active_alerts() == [] or isinstance(gw.active_alerts(), list)

    asyncio.run(scenario())
