"""Analytics as operators see it: a demo daemon subprocess, the CLI, /metrics, the events route."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.e2e.harness import DaemonProc, free_port, run_daemon, wait_until

DEMO_ROUTES = """
[jobs]
health_check_interval = 1  # the config minimum
analytics_interval = 1
alert_check_interval = 30
cleanup_interval = 30

[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
app_ping_interval = 0.3
[[routes.bitfinex.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"

[routes.binance]
dialect = "binance"
type = "market_data"
rest_url = "https://api.binance.com/api/v3"
[[routes.binance.endpoints]]
url = "wss://stream.binance.com:9443"
"""


@contextmanager
def demo_daemon() -> Iterator[tuple[DaemonProc, int]]:
    """`wsgate run --demo` with a config of its own: simulator endpoints, metrics on."""
    metrics_port = free_port()
    with run_daemon(
        DEMO_ROUTES,
        args=("--demo", "--seed", "5"),
        gateway="events_require_token = false",
        metrics=f"127.0.0.1:{metrics_port}",
    ) as d:
        yield d, metrics_port


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _json(d: DaemonProc, *args: str) -> Any:
    r = d.cli(*args, "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_health_in_status_connections_and_metrics() -> None:
    with demo_daemon() as (d, mport):

        def scored() -> bool:
            st = d.status()
            h = st.get("health") or {}
            return h.get("score") is not None and all(
                r.get("health") is not None for r in st["routes"]
            )

        wait_until(scored, 20, "health scores in status")
        st = d.status()
        assert set(st["health"]["by_route"]) == {"bitfinex", "binance"}
        assert st["health"]["by_type"]["market_data"] is not None
        rows = _json(d, "connections")
        assert rows and all(0 <= r["health"] <= 100 for r in rows)
        human = d.cli("status", "--socket", d.socket)
        assert human.returncode == 0 and "health" in human.stdout

        wait_until(lambda: _get(mport, "/readyz")[0] == 200, 20, "/readyz 200")
        assert _get(mport, "/healthz") == (200, "ok\n")
        status, text = _get(mport, "/metrics")
        assert status == 200
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        scores = {
            (s.labels["scope"], s.labels["name"]): s.value
            for s in fams["wsgate_health_score"].samples
        }
        assert ("system", "overall") in scores
        assert {("route", "bitfinex"), ("route", "binance")} <= set(scores)

        def job_runs() -> dict[str, float]:
            text = _get(mport, "/metrics")[1]
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            return {s.labels["job_name"]: s.value for s in fams["wsgate_job_runs"].samples}

        # Both jobs run every second (the config's minimum); the first runs may lag a scrape.
        wait_until(
            lambda: job_runs()["health"] >= 1 and job_runs()["analytics"] >= 1,
            20,
            "health and analytics job runs",
        )

        # The history behind the sparkline: real roll-ups, NaN latencies shown as gaps.
        conn = next(r["id"] for r in rows if r["route"] == "bitfinex")
        wait_until(
            lambda: len(_json(d, "connections", "show", conn)["history"]) >= 3, 20, "history"
        )
        show = _json(d, "connections", "show", conn)
        assert show["health"] is not None and show["health_detail"]["worst"]
        assert any(p["latency"] is not None for p in show["history"])
        human = d.cli("connections", "show", conn, "--socket", d.socket)
        assert human.returncode == 0 and "latency  " in human.stdout
        binance = next(r["id"] for r in rows if r["route"] == "binance")
        shown = d.cli("connections", "show", binance, "--socket", d.socket)
        assert shown.returncode == 0, shown.stderr  # no latency at all: no sparkline, no crash


def test_events_stream_sees_an_operator_reconnect() -> None:
    with demo_daemon() as (d, _mport):
        wait_until(
            lambda: any(r["state"] == "open" for r in _json(d, "connections")), 20, "open conn"
        )
        conn = next(r["id"] for r in _json(d, "connections") if r["route"] == "bitfinex")

        async def watch() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            async with connect(f"ws://127.0.0.1:{d.port}/_wsgate/events") as ws:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert hello["kind"] == "hello"
                r = await asyncio.to_thread(
                    d.cli, "connections", "reconnect", conn, "--socket", d.socket
                )
                assert r.returncode == 0, r.stderr
                while not any(
                    e["kind"] == "transition"
                    and e["data"]["connection"] == conn
                    and e["data"]["new"] == "open"
                    for e in got
                ):
                    got.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
            return got

        events = asyncio.run(watch())
        mine = [e for e in events if e["kind"] == "transition" and e["data"]["connection"] == conn]
        assert mine[0]["data"]["old"] == "open"
        assert "operator" in mine[0]["data"]["reason"]
        assert mine[0]["data"]["route"] == "bitfinex"
