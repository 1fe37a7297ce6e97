"""adaptive's choice, end to end: status, `wsgate routes`, /metrics, the event stream;
and Gateway.get_connection counting its own picks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable

from prometheus_client import generate_latest

from tests.simstack import daemon_head
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.control.api import status
from wsgate.control.metrics_http import build_registry
from wsgate.sim import Simulator


def _config(url: str, tmp: str, *, strategy: str, weights: tuple[int, int]) -> str:
    return (
        daemon_head(tmp)
        + f"""
[jobs]
health_check_interval = 1
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
strategy = "{strategy}"
min_connections = 2
slow_start = 0
[[routes.bitfinex.endpoints]]
url = "{url}"
weight = {weights[0]}
name = "main"
[[routes.bitfinex.endpoints]]
url = "{url}?mirror=1"
weight = {weights[1]}
name = "mirror"
"""
    )


async def _until(cond: Callable[[], object], limit: float = 15.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # noqa: ASYNC110 - state of the daemon, polled
            await asyncio.sleep(0.05)


def test_adaptive_choice_is_visible_everywhere() -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with Simulator(seed=5) as sim:
            cfg = parse_config(_config(sim.bitfinex_url, tmp, strategy="adaptive", weights=(1, 2)))
            async with Gateway(cfg, seed=1, control_socket=True) as gw:
                d = gw.daemon
                rt = d.routes["bitfinex"]
                await _until(lambda: sum(c.state.is_up for c in rt.pool.values()) == 2)
                # The health job looks even though nothing was placed yet.
                await _until(lambda: rt.balancer.statistics().adaptive is not None)
                doc = status(d)["routes"][0]
                assert doc["strategy"] == "adaptive"
                assert doc["adaptive"]["strategy"] == "weighted_round_robin"
                assert doc["adaptive"]["reason"] == "weights configured"
                assert doc["adaptive"]["held_for"] >= 0
                events = d.events.recent(kinds=["adaptive"])
                assert events and events[0].data == {
                    "route": "bitfinex",
                    "old": None,
                    "new": "weighted_round_robin",
                    "reason": "weights configured",
                }
                text = generate_latest(build_registry(d)).decode()
                assert (
                    'wsgate_route_adaptive_strategy{route="bitfinex",'
                    'strategy="weighted_round_robin"} 1.0'
                ) in text
                assert (
                    'wsgate_route_adaptive_strategy{route="bitfinex",strategy="least_latency"} 0.0'
                    in text
                )
                assert 'wsgate_route_adaptive_switches_total{route="bitfinex"} 0.0' in text
                sock = cfg.daemon.control_socket

                def cli() -> subprocess.CompletedProcess[str]:
                    return subprocess.run(
                        [sys.executable, "-m", "wsgate", "routes", "--socket", sock],
                        capture_output=True,
                        text=True,
                        timeout=30,
                        env={**os.environ, "NO_COLOR": "1"},
                    )

                out = await asyncio.to_thread(cli)
                assert out.returncode == 0, out.stderr
                assert "adaptive applies weighted_round_robin: weights configured" in out.stdout

    asyncio.run(scenario())


def test_get_connection_counts_its_own_picks() -> None:
    async def scenario() -> None:
        tmp = tempfile.mkdtemp(dir="/tmp")
        async with Simulator(seed=6) as sim:
            cfg = parse_config(
                _config(sim.bitfinex_url, tmp, strategy="least_connections", weights=(1, 1))
            )
            async with Gateway(cfg, seed=2) as gw:
                rt = gw.daemon.routes["bitfinex"]
                await _until(lambda: sum(c.state.is_up for c in rt.pool.values()) == 2)
                for strategy in ("least_connections", "least_load"):
                    got = Counter(
                        gw.get_connection("market_data", strategy=strategy).id for _ in range(6)
                    )
                    assert sorted(got.values()) == [3, 3], (strategy, got)

    asyncio.run(scenario())
