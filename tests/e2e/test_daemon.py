"""The daemon as operators run it: a subprocess with a config file, driven by the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.harness import WSGATE, ThreadServer, run_daemon, wait_until


async def _echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


def _raw_route(url: str, name: str = "echo") -> str:
    return f"""
[routes.{name}]
dialect = "raw"
type = "market_data"
stale_after = 30
[[routes.{name}.endpoints]]
url = "{url}"
"""


def test_relay_status_connections_and_sigterm() -> None:
    with ThreadServer(_echo) as up, run_daemon(_raw_route(up.url)) as d:

        async def client() -> tuple[str, list[dict[str, object]]]:
            async with connect(f"ws://127.0.0.1:{d.port}/echo") as ws:
                await ws.send("ping-1")
                echoed = str(await asyncio.wait_for(ws.recv(), 10))
                # A raw route keeps no pool: the open upstream is this session's own relay.
                r = await asyncio.to_thread(d.cli, "connections", "--json", "--socket", d.socket)
                return echoed, json.loads(r.stdout)

        echoed, rows = asyncio.run(client())
        assert echoed == "ping-1"
        assert [(row["state"], row["route"]) for row in rows] == [("open", "echo")]
        st = d.status()
        assert st["routes"][0]["name"] == "echo"
        assert st["config_path"] == str(d.config)
        assert {j["name"] for j in st["jobs"]} == {"health", "analytics", "alerts", "cleanup"}
        # The session is gone, and so is its upstream: nothing idle stays open.
        wait_until(lambda: d.status()["routes"][0]["connections"]["up"] == 0, 10, "relay closed")
        d.signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert not os.path.exists(d.socket)


def test_unknown_route_404_and_oversize_frame_1009() -> None:
    with ThreadServer(_echo) as up, run_daemon(_raw_route(up.url)) as d:

        async def client() -> tuple[int, int | None]:
            try:
                async with connect(f"ws://127.0.0.1:{d.port}/nope"):
                    pass
            except InvalidStatus as exc:
                status = exc.response.status_code
            async with connect(f"ws://127.0.0.1:{d.port}/echo", max_size=None) as ws:
                await ws.send("x" * (2 * 1024 * 1024))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return status, ws.close_code

        status, code = asyncio.run(client())
        assert status == 404
        assert code == 1009


def test_upstream_lost_closes_session_1013() -> None:
    async def drop_after_first(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.abort()

    with ThreadServer(drop_after_first) as up, run_daemon(_raw_route(up.url)) as d:

        async def client() -> int | None:
            async with connect(f"ws://127.0.0.1:{d.port}/echo") as ws:
                await ws.send("hello")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return ws.close_code

        assert asyncio.run(client()) == 1013


def test_sighup_reload_good_then_bad_keeps_serving() -> None:
    with ThreadServer(_echo) as up, run_daemon(_raw_route(up.url)) as d:
        text = d.config.read_text()
        d.config.write_text(text + _raw_route(up.url, "echo2"))
        d.signal(signal.SIGHUP)
        d.wait_log("reload (SIGHUP) applied")
        assert {r["name"] for r in d.status()["routes"]} == {"echo", "echo2"}
        d.config.write_text(text + '\n[routes.bad]\ndialect = "rwa"\n')
        d.signal(signal.SIGHUP)
        d.wait_log("reload (SIGHUP) rejected")
        assert "routes.bad.dialect" in d.logs()
        st = d.status()
        assert {r["name"] for r in st["routes"]} == {"echo", "echo2"}
        assert st["last_reload"]["ok"] is False
        r = d.cli("reload", "--socket", d.socket)
        assert r.returncode == 1
        assert "routes.bad.dialect" in r.stderr and "line" in r.stderr

        async def still_serving() -> str:
            async with connect(f"ws://127.0.0.1:{d.port}/echo2") as ws:
                await ws.send("after bad reload")
                return str(await asyncio.wait_for(ws.recv(), 10))

        assert asyncio.run(still_serving()) == "after bad reload"


def test_second_daemon_refused_and_garbage_on_control_socket() -> None:
    with ThreadServer(_echo) as up, run_daemon(_raw_route(up.url)) as d:
        second = subprocess.run(
            [*WSGATE, "run", "--config", str(d.config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode != 0
        assert "lock" in (second.stderr + second.stdout).lower() or "another" in second.stderr
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(d.socket)
            s.sendall(b"this is not json\n")
            reply = json.loads(s.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
        assert d.status()["node_id"] == "node-1"


def test_cli_exit_code_3_when_no_daemon() -> None:
    path = os.path.join(tempfile.mkdtemp(dir="/tmp"), "none.sock")
    r = subprocess.run(
        [*WSGATE, "status", "--socket", path], capture_output=True, text=True, timeout=20
    )
    assert r.returncode == 3
    assert path in r.stderr


def test_sd_notify_ready_reloading_stopping() -> None:
    directory = Path(tempfile.mkdtemp(dir="/tmp"))
    addr = str(directory / "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(addr)
    rx.settimeout(15)
    try:
        env = {"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "2000000"}
        with ThreadServer(_echo) as up, run_daemon(_raw_route(up.url), extra_env=env) as d:
            msgs = [rx.recv(4096).decode()]
            while not any("READY=1" in m for m in msgs):
                msgs.append(rx.recv(4096).decode())
            d.signal(signal.SIGHUP)
            while not any("RELOADING=1" in m for m in msgs):
                msgs.append(rx.recv(4096).decode())
            d.signal(signal.SIGTERM)
            while not any("STOPPING=1" in m for m in msgs):
                msgs.append(rx.recv(4096).decode())
            assert d.proc.wait(10) == 0
        joined = "\n".join(msgs)
        assert "MONOTONIC_USEC=" in joined
        assert "WATCHDOG=1" in joined
        assert "STATUS=" in joined
    finally:
        rx.close()


DEMO_ROUTES = """
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
[[routes.bitfinex.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"
[routes.binance]
dialect = "binance"
type = "market_data"
rest_url = "https://api.binance.com/api/v3"
[[routes.binance.endpoints]]
url = "wss://stream.binance.com:9443"
"""


def test_demo_mode_serves_simulated_feeds_and_stops_cleanly_with_clients_attached() -> None:
    """`--demo --config` points the file's routes at the in-process simulator."""
    with run_daemon(DEMO_ROUTES, args=("--demo", "--seed", "7")) as d:

        async def client() -> list[object]:
            async with connect(f"ws://127.0.0.1:{d.port}/bitfinex") as ws:
                info = json.loads(await asyncio.wait_for(ws.recv(), 10))
                await ws.send(
                    json.dumps({"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"})
                )
                frames = [info]
                while len(frames) < 3:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                # Still attached when the daemon is told to stop: it must close us with 1001.
                d.signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                frames.append(ws.close_code)
                return frames

        frames = asyncio.run(client())
        assert frames[0] == {
            "event": "info",
            "version": 2,
            "serverId": "wsgate",
            "platform": {"status": 1},
        }
        assert isinstance(frames[2], list) and frames[2][0] == frames[1]["chanId"]  # type: ignore[index]
        assert frames[-1] == 1001
        assert d.proc.wait(15) == 0
        assert "demo bot (bitfinex)" in d.logs() or "demo:" in d.logs()


def test_fast_path_and_full_cli_print_the_same_document() -> None:
    with ThreadServer(_echo) as up, run_daemon(_raw_route(up.url)) as d:
        fast = d.cli("connections", "--json", "--socket", d.socket)
        full = subprocess.run(
            [sys.executable, "-m", "wsgate.cli.app", "connections", "--json", "--socket", d.socket],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert fast.returncode == full.returncode == 0
        strip = ("age", "state_age", "last_message_age", "next_retry_in", "msg_rate")
        norm = [
            [{k: v for k, v in row.items() if k not in strip} for row in json.loads(out)]
            for out in (fast.stdout, full.stdout)
        ]
        assert norm[0] == norm[1]
        missing = d.cli("status", "--json", "--socket", d.socket + ".nope")
        assert missing.returncode == 3 and "no wsgate daemon" in missing.stderr
