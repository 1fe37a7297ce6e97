"""The daemon's own loops: owned by this daemon, and under the one error policy.

Two embedded Gateways in one event loop: stopping one leaves the other whole.

Regression: the daemon used to cancel its helpers by scanning ``asyncio.all_tasks()`` for
the names "loop-lag", "watchdog" and "rebalance", so stopping one embedded Gateway
cancelled the other's rebalancer and loop-lag probe. Every task now has an owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import generate_latest
from websockets.asyncio.client import connect

import wsgate.daemon
import wsgate.runtime.ops.alerting
from tests.simstack import daemon_head
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.control.api import status
from wsgate.control.metrics_http import build_registry
from wsgate.core.states import ConnState
from wsgate.runtime.upstream.uplink import SEND_QUEUE
from wsgate.sim import Simulator


def _config(bitfinex_url: str, tmp: str) -> str:
    return (
        daemon_head(tmp)
        + f"""
[jobs]
health_check_interval = 1
analytics_interval = 1
alert_check_interval = 1
cleanup_interval = 1
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
min_connections = 2
app_ping_interval = 0.2
[[routes.bitfinex.endpoints]]
url = "{bitfinex_url}"
"""
    )


async def _until(cond: Callable[[], bool], what: str, within: float = 15.0) -> None:
    async def loop() -> None:
        while not cond():  # noqa: ASYNC110 - in-process state without an event
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(loop(), within)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


def _open(gw: Gateway) -> int:
    return sum(c.state is ConnState.OPEN for c in gw.daemon.routes["bitfinex"].pool.values())


def _job_runs(gw: Gateway) -> dict[str, int]:
    return {j.name: j.runs for j in gw.daemon.jobs.statistics()}


async def _ticker(gw: Gateway) -> int:
    """Subscribe through the gateway and count ticker updates for a moment."""
    async with connect(gw.url("bitfinex")) as ws:
        await ws.recv()  # info
        await ws.send(json.dumps({"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ack["event"] == "subscribed"
        n = 0
        while n < 3:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if isinstance(msg, list) and msg[0] == ack["chanId"] and msg[1] != "hb":
                n += 1
        return n


def test_stopping_one_gateway_leaves_the_other_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsgate.daemon, "REBALANCE_EVERY", 0.2)

    async def scenario() -> None:
        async with Simulator(seed=5) as sim:
            a = Gateway(parse_config(_config(sim.bitfinex_url, tempfile.mkdtemp(dir="/tmp"))))
            b = Gateway(parse_config(_config(sim.bitfinex_url, tempfile.mkdtemp(dir="/tmp"))))
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(b)
                async with a:
                    for gw in (a, b):
                        await _until(lambda gw=gw: _open(gw) == 2, "both pools open")
                    assert await _ticker(a) == 3
                # A stopped. B keeps every helper, job, probe and connection.
                d = b.daemon
                conns = list(d.routes["bitfinex"].pool.values())
                lag, reb, jobs = d.loop_lag_samples, d.rebalance_runs, _job_runs(b)
                pinged = [c.metrics.latency_app.last_update or 0.0 for c in conns]
                await _until(lambda: d.loop_lag_samples >= lag + 2, "B's loop-lag probe")
                await _until(lambda: d.rebalance_runs >= reb + 2, "B's rebalancer")
                await _until(lambda: all(_job_runs(b)[n] > jobs[n] for n in jobs), "every job of B")
                await _until(
                    lambda: all(
                        (c.metrics.latency_app.last_update or 0.0) > t
                        for c, t in zip(conns, pinged, strict=True)
                    ),
                    "B's application pings answered",
                )
                assert all(c.state is ConnState.OPEN for c in conns)
                assert await _ticker(b) == 3
                assert d.faults.statistics().total == 0

    asyncio.run(scenario())


def test_failing_daemon_loops_are_counted_and_keep_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rebalancer and the alerts tick under the error policy (runtime.faults)."""
    monkeypatch.setattr(wsgate.daemon, "REBALANCE_EVERY", 0.2)
    monkeypatch.setattr(wsgate.runtime.ops.alerting, "TICK", 0.1)

    async def scenario() -> None:
        async with Simulator(seed=5) as sim:
            cfg = parse_config(_config(sim.bitfinex_url, tempfile.mkdtemp(dir="/tmp")))
            async with Gateway(cfg) as gw:
                d = gw.daemon
                rt = d.routes["bitfinex"]
                assert d.alerting is not None
                engine = d.alerting.engine
                rt.plan_rebalance, rebal = _failing(2, rt.plan_rebalance)
                engine.expire_silences, ticks = _failing(2, engine.expire_silences)
                await _until(lambda: rebal[0] > 3, "rebalance runs after the failures")
                await _until(lambda: ticks[0] > 3, "alert ticks after the failures")
                assert d.faults.count("daemon.rebalance") == 2
                assert d.faults.count("alerts.tick") == 2
                shown = status(d)["handler_errors"]["by_site"]  # wsgate status
                assert shown["daemon.rebalance"] == 2 and shown["alerts.tick"] == 2
                scraped = generate_latest(build_registry(d)).decode()  # /metrics
                assert 'wsgate_handler_errors_total{site="daemon.rebalance"} 2.0' in scraped
                await _until(lambda: _open(gw) == 2, "pool still open")
                assert await _ticker(gw) == 3

    asyncio.run(scenario())


def _failing(times: int, real: Callable[..., Any]) -> tuple[Callable[..., Any], list[int]]:
    calls = [0]

    def f(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise RuntimeError(f"injected failure {calls[0]}")
        return real(*args, **kwargs)

    return f, calls


def test_dropped_upstream_sends_are_shown_in_status_and_metrics() -> None:
    """A full upstream send queue drops the frame and says so (status, /metrics)."""

    async def scenario() -> None:
        async with Simulator(seed=5) as sim:
            cfg = parse_config(_config(sim.bitfinex_url, tempfile.mkdtemp(dir="/tmp")))
            async with Gateway(cfg) as gw:
                await _until(lambda: _open(gw) == 2, "pool open")
                d = gw.daemon
                hub = d.routes["bitfinex"].hub
                assert hub is not None
                u = next(iter(hub.ups.values()))
                ping = '{"event":"ping","cid":1}'
                for _ in range(SEND_QUEUE - len(u.queue) + 3):  # no await: the writer waits
                    u.send(ping)
                assert u.dropped_sends == 3
                assert status(d)["routes"][0]["dropped_sends"] == 3
                scraped = generate_latest(build_registry(d)).decode()
                assert (
                    'wsgate_messages_dropped_total{reason="upstream_send",route="bitfinex"} 3.0'
                    in scraped
                )
                u.queue.clear()  # not 4096 pings to the simulator

    asyncio.run(scenario())
