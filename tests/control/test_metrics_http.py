"""Prometheus, /healthz, /readyz and the events route of a daemon running in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from wsgate.config import parse_config
from wsgate.control.metrics_http import MetricsServer, readiness
from wsgate.core.states import ConnState
from wsgate.daemon import Daemon
from wsgate.errors import BindError
from wsgate.sim import Simulator

JOBS = """
[jobs]
health_check_interval = 3600
analytics_interval = 3600
alert_check_interval = 3600
cleanup_interval = 3600
"""


def _bitfinex(url: str, name: str = "bitfinex", extra: str = "") -> str:
    return f"""
[routes.{name}]
dialect = "bitfinex"
type = "market_data"
app_ping_interval = 0.2
{extra}
[[routes.{name}.endpoints]]
url = "{url}"
"""


@contextlib.asynccontextmanager
async def live_daemon(body: str, gateway_extra: str = "") -> AsyncIterator[Daemon]:
    # Unix socket paths are limited to 108 bytes: keep the directory short.
    directory = tempfile.mkdtemp(prefix="wsg-", dir="/tmp")
    text = f"""
[daemon]
control_socket = "{directory}/ctl.sock"
state_dir = "{directory}/state"
shutdown_timeout = 2
[gateway]
listen = "127.0.0.1:0"
{gateway_extra}
[metrics]
listen = "127.0.0.1:0"
{JOBS}
{body}
"""
    d = Daemon(parse_config(text, "<test>"), config_path=None, signals=False)
    task = asyncio.create_task(d.serve())
    ready = asyncio.create_task(d.ready.wait())
    try:
        await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # startup failed: raise its error
        assert d.ready.is_set(), "daemon not ready in 10 s"
        yield d
    finally:
        ready.cancel()
        d.stop()
        await asyncio.wait_for(task, 15)
        shutil.rmtree(directory, ignore_errors=True)


async def wait_for(cond: Callable[[], bool], limit: float = 10.0, what: str = "") -> None:
    async def poll() -> None:
        while not cond():  # noqa: ASYNC110 - the state belongs to the daemon under test
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), limit)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit}s waiting for {what}") from None


async def http(
    port: int, raw: bytes | str, *, path: str = "/", method: str = "GET", accept: str = ""
) -> tuple[int, dict[str, str], bytes]:
    if isinstance(raw, str):
        raw = raw.encode()
    if not raw:
        hdr = f"Accept: {accept}\r\n" if accept else ""
        raw = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{hdr}\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def _samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, []).extend(fam.samples)
    return out


def _port(d: Daemon) -> int:
    assert d.metrics_http is not None
    return d.metrics_http.port


def test_metrics_scrape_and_latency_matches_injected() -> None:
    async def main() -> None:
        async with Simulator(seed=3) as sim:
            sim.bitfinex.faults.latency(100)  # every frame from the exchange is 100 ms late
            body = (
                _bitfinex(sim.bitfinex_url)
                + f"""
[routes.binance]
dialect = "binance"
type = "market_data"
rest_url = "{sim.binance_rest_url}"
[[routes.binance.endpoints]]
url = "{sim.binance_url}"
"""
            )
            async with live_daemon(body) as d:
                rt = d.routes["bitfinex"]
                await wait_for(lambda: rt.open_connections() == 1, what="bitfinex open")
                conn = rt.connections()[0]
                await wait_for(
                    lambda: (
                        (conn.metrics.snapshot(0).latency_p50 or 0) > 0
                        and conn.metrics.latency_app.value is not None
                    ),
                    what="app-ping samples",
                )
                for job in ("health", "analytics", "cleanup"):
                    await d.jobs.run_now(job)
                status, headers, text = await http(_port(d), b"", path="/metrics")
                assert status == 200
                assert headers["content-type"].startswith("text/plain")
                fams = _samples(text.decode())
                # The memory bound, confirmed on a live connection with a full history.
                for i in range(1000):
                    conn.metrics.roll_up(float(i), 0)
                live_bytes = conn.metrics.memory_bytes()
        print(f"\nlive connection, 1000 history points: {live_bytes} bytes")
        assert live_bytes < 64 * 1024

        for name in (
            "wsgate_upstream_messages_received",
            "wsgate_upstream_bytes_received",
            "wsgate_upstream_bytes_sent",
            "wsgate_upstream_latency_ewma_seconds",
            "wsgate_upstream_rtt_seconds",
            "wsgate_handshakes_rejected",
            "wsgate_messages_dropped",
            "wsgate_session_subscriptions",
            "process_open_fds",
            "process_max_fds",
            "wsgate_connection_state",
            "wsgate_upstream_reconnects",
            "wsgate_upstream_errors",
            "wsgate_sessions",
            "wsgate_health_score",
            "wsgate_alerts_active",
            "wsgate_job_duration_seconds",
            "wsgate_job_failures",
            "wsgate_subscriptions",
            "wsgate_fanout_deliveries",
        ):
            assert name in fams, f"{name} missing from /metrics"
        app = [
            s
            for s in fams["wsgate_upstream_latency_ewma_seconds"]
            if s.labels["kind"] == "app" and s.labels["route"] == "bitfinex"
        ]
        assert len(app) == 1
        # The simulator sends every frame 100 ms late: the sample cannot be shorter; on a busy
        # machine it is longer by the scheduling delay (no upper timing bound in a unit test
        # beyond "it is this pong's delay, not a timeout").
        assert 0.100 <= app[0].value < 1.0, app[0].value
        msgs = {
            s.labels["route"]: s
            for s in fams["wsgate_upstream_messages_received"]
            if s.name == "wsgate_upstream_messages_received_total"
        }
        assert msgs["bitfinex"].labels == {
            "route": "bitfinex",
            "connection": conn.id,
            "type": "market_data",
        }
        assert msgs["bitfinex"].value > 0
        open_states = [
            s.labels["connection"]
            for s in fams["wsgate_connection_state"]
            if s.labels["state"] == "open" and s.value == 1.0
        ]
        assert conn.id in open_states
        health = {
            (s.labels["scope"], s.labels["name"]): s.value for s in fams["wsgate_health_score"]
        }
        assert health[("connection", conn.id)] == 100.0
        assert ("system", "overall") in health and ("type", "market_data") in health
        severities = {s.labels["severity"] for s in fams["wsgate_alerts_active"]}
        assert {"info", "warning", "critical"} <= severities
        jobs = {s.labels["job_name"] for s in fams["wsgate_job_duration_seconds"]}
        rtt = {
            s.labels["le"]: s.value
            for s in fams["wsgate_upstream_rtt_seconds"]
            if s.name.endswith("_bucket")
            and s.labels["route"] == "bitfinex"
            and s.labels["kind"] == "app"
        }
        assert rtt["+Inf"] >= 1 and rtt["0.05"] == 0  # ~100 ms injected: never under 50 ms
        assert all("job" not in s.labels for f in fams.values() for s in f)
        assert {"health", "analytics", "cleanup"} <= jobs
        sessions = {s.labels["route"]: s.value for s in fams["wsgate_sessions"]}
        assert sessions == {"bitfinex": 0.0, "binance": 0.0}

    asyncio.run(main())


def test_openmetrics_when_asked() -> None:
    async def main() -> None:
        async with (
            Simulator(seed=1, binance=False) as sim,
            live_daemon(_bitfinex(sim.bitfinex_url)) as d,
        ):
            status, headers, body = await http(
                _port(d), b"", path="/metrics", accept="application/openmetrics-text"
            )
        assert status == 200
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")

    asyncio.run(main())


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws/2"  # nothing listens: connection refused


def test_healthz_and_readyz() -> None:
    async def main() -> None:
        async with Simulator(seed=1, binance=False) as sim:
            good = _bitfinex(sim.bitfinex_url)
            optional_dead = _bitfinex(_dead_url(), "spare", "required = false")
            async with live_daemon(good + optional_dead) as d:
                assert (await http(_port(d), b"", path="/healthz"))[:1] == (200,)
                rt = d.routes["bitfinex"]
                await wait_for(lambda: rt.open_connections() == 1, what="bitfinex open")
                status, headers, body = await http(_port(d), b"", path="/readyz")
                assert status == 200, body
                assert headers["content-type"] == "application/json"
                assert json.loads(body) == {"ready": True, "reasons": []}

            required_dead = _bitfinex(_dead_url(), "spare")
            async with live_daemon(good + required_dead) as d:
                assert (await http(_port(d), b"", path="/healthz"))[0] == 200
                await wait_for(lambda: d.routes["bitfinex"].open_connections() == 1)
                status, _, body = await http(_port(d), b"", path="/readyz")
                assert status == 503
                doc = json.loads(body)
                assert doc["ready"] is False
                assert doc["reasons"] == ["route spare: no open upstream connection"]

    asyncio.run(main())


def test_not_ready_before_start() -> None:
    async def main() -> tuple[bool, dict[str, Any]]:
        text = f"[metrics]\nlisten = ''\n{_bitfinex('ws://127.0.0.1:9/ws/2')}"
        directory = tempfile.mkdtemp(prefix="wsg-", dir="/tmp")
        text = f'[daemon]\nstate_dir = "{directory}"\n' + text
        d = Daemon(parse_config(text, "<t>"), config_path=None, signals=False)
        try:
            return readiness(d)
        finally:
            d.store.close()
            shutil.rmtree(directory, ignore_errors=True)

    ok, doc = asyncio.run(main())
    assert not ok
    assert doc["reasons"][0].startswith("starting")
    assert doc["reasons"][1:] == ["route bitfinex: not started"]


def test_http_hygiene() -> None:
    async def main() -> None:
        server = MetricsServer(
            "127.0.0.1",
            0,
            CollectorRegistry(),
            lambda: (True, {"ready": True}),
            max_request_bytes=1024,
            timeout=0.3,
        )
        await server.start()
        try:
            p = server.port
            status, headers, _ = await http(p, b"", path="/metrics", method="POST")
            assert status == 405 and headers["allow"] == "GET, HEAD"
            assert (await http(p, b"", path="/nope"))[0] == 404
            status, headers, body = await http(p, b"", path="/healthz", method="HEAD")
            assert status == 200 and headers["content-length"] == "3" and body == b""
            big = "GET /metrics HTTP/1.1\r\nX-Pad: " + "a" * 4000 + "\r\n\r\n"
            assert (await http(p, big))[0] == 431
            assert (await http(p, "GARBAGE\r\n\r\n"))[0] == 400
            # A client that never finishes its request is cut off after the timeout.
            reader, writer = await asyncio.open_connection("127.0.0.1", p)
            writer.write(b"GET /metrics HTTP/1.1\r\n")
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert data.startswith(b"HTTP/1.1 408")
            assert (await http(p, b"", path="/readyz"))[0] == 200
            st = server.statistics()
            assert st.requests == 7 and st.rejected == 5
        finally:
            await server.close()

    asyncio.run(main())


def test_bind_error_fails_startup() -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            directory = tempfile.mkdtemp(prefix="wsg-", dir="/tmp")
            text = f"""
[daemon]
control_socket = "{directory}/ctl.sock"
state_dir = "{directory}/state"
[gateway]
listen = "127.0.0.1:0"
[metrics]
listen = "127.0.0.1:{port}"
{_bitfinex("ws://127.0.0.1:9/ws/2")}
"""
            d = Daemon(parse_config(text, "<t>"), config_path=None, signals=False)
            try:
                with pytest.raises(BaseException) as info:
                    await asyncio.wait_for(d.serve(), 15)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        errors = (
            info.value.exceptions if isinstance(info.value, BaseExceptionGroup) else [info.value]
        )
        # The daemon names the key and the address; the OSError stays the cause.
        bind = [e for e in errors if isinstance(e, BindError)]
        assert bind and bind[0].key == "metrics.listen", errors
        assert isinstance(bind[0].__cause__, OSError)
        assert f"127.0.0.1:{port}" in str(bind[0])
        assert not d.ready.is_set()

    asyncio.run(main())


def test_events_route_requires_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_TEST_EVENTS_TOKEN", "s3cret")

    async def main() -> list[dict[str, Any]]:
        async with (
            Simulator(seed=1, binance=False) as sim,
            live_daemon(
                _bitfinex(sim.bitfinex_url), 'events_token_env = "WSGATE_TEST_EVENTS_TOKEN"'
            ) as d,
        ):
            rt = d.routes["bitfinex"]
            await wait_for(lambda: rt.open_connections() == 1, what="bitfinex open")
            base = f"ws://127.0.0.1:{d.gateway.port}/_wsgate/events"
            with pytest.raises(InvalidStatus) as info:
                async with connect(base):
                    pass
            assert info.value.response.status_code == 401
            got: list[dict[str, Any]] = []
            async with connect(base + "?token=s3cret&kinds=transition") as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert hello == {"kind": "hello", "data": {"kinds": ["transition"]}}
                conn = rt.connections()[0]
                conn.request_reconnect("test")
                while not any(e["data"]["new"] == "open" for e in got):
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            assert conn.state is ConnState.OPEN
            return got

    got = asyncio.run(main())
    assert all(e["kind"] == "transition" for e in got)
    assert got[0]["data"]["old"] == "open" and got[0]["data"]["route"] == "bitfinex"
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
