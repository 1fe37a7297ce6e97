"""Security and abuse, end to end: the daemon as a subprocess, attacked through its surfaces."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from tests.e2e.harness import ThreadServer, run_daemon
from wsgate.control import wire
from wsgate.control.client import ControlClient
from wsgate.errors import ControlError


async def _echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


def raw_route(url: str, name: str = "echo", extra: str = "") -> str:
    return f"""
[routes.{name}]
dialect = "raw"
type = "market_data"
stale_after = 30
{extra}
[[routes.{name}.endpoints]]
url = "{url}"
"""


def test_bad_control_parameters_are_invalid_params_without_a_traceback() -> None:
    with ThreadServer(_echo) as up, run_daemon(raw_route(up.url)) as d:
        with ControlClient(d.socket, timeout=10) as client:
            for params in ({"limit": 1e308}, {"limit": -1}, {"limit": "all"}, {"limti": 3}):
                with pytest.raises(ControlError) as info:
                    client.call("alerts.history", params)
                assert info.value.code == wire.INVALID_PARAMS, (params, info.value)
            with pytest.raises(ControlError) as info:
                client.call("routes.weight", {"route": "echo", "endpoint": "x", "weight": 1e308})
            assert info.value.code == wire.INVALID_PARAMS
            assert client.call("alerts.history", {"limit": 5}) == {"events": []}
        logs = d.logs()
        assert "Traceback" not in logs and "OverflowError" not in logs, logs[-3000:]


ROUTE_TOKEN = "rt-0123456789abcdef"
EVENTS_TOKEN = "ev-0123456789abcdef"
UPSTREAM_PASSWORD = "up-0123456789abcdef"


def test_raw_route_consumes_the_gateway_token_and_every_published_url_is_masked() -> None:
    seen: list[tuple[str, str]] = []

    async def recorder(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append((ws.request.path, str(ws.request.headers)))
        async for msg in ws:
            await ws.send(msg)

    with ThreadServer(recorder) as up:
        upstream = f"ws://wsgate:{UPSTREAM_PASSWORD}@127.0.0.1:{up.port}"
        body = raw_route(upstream, extra='token_env = "WSGATE_ROUTE_TOKEN"')
        env = {"WSGATE_ROUTE_TOKEN": ROUTE_TOKEN, "WSGATE_EVENTS_TOKEN": EVENTS_TOKEN}
        gateway = 'events_token_env = "WSGATE_EVENTS_TOKEN"'
        with run_daemon(body, extra_env=env, gateway=gateway) as d:
            base = f"ws://127.0.0.1:{d.port}"

            async def bots() -> list[str]:
                got = []
                async with connect(f"{base}/echo/ws/2?token={ROUTE_TOKEN}&foo=1") as ws:
                    await ws.send("one")
                    got.append(str(await asyncio.wait_for(ws.recv(), 10)))
                bearer = {"Authorization": f"Bearer {ROUTE_TOKEN}"}
                async with connect(f"{base}/echo/ws/2?foo=2", additional_headers=bearer) as ws:
                    await ws.send("two")
                    got.append(str(await asyncio.wait_for(ws.recv(), 10)))
                events = f"{base}/_wsgate/events?backlog=200&token={EVENTS_TOKEN}"
                async with connect(events) as ws:
                    while True:
                        frame = str(await asyncio.wait_for(ws.recv(), 10))
                        got.append(frame)
                        if json.loads(frame).get("kind") == "hello":
                            break
                    # The backlog follows the hello; read what is there within a moment.
                    try:
                        while True:
                            got.append(str(await asyncio.wait_for(ws.recv(), 1.0)))
                    except TimeoutError:
                        pass
                return got

            frames = asyncio.run(bots())
            assert frames[:2] == ["one", "two"]
            relayed = [path for path, _ in seen if path.startswith("/ws/2")]
            assert sorted(relayed) == ["/ws/2?foo=1", "/ws/2?foo=2"], seen
            assert all(ROUTE_TOKEN not in headers for _, headers in seen), seen
            published: list[Any] = [frames]
            with ControlClient(d.socket, timeout=10) as client:
                for method in ("status", "connections", "events.recent", "routes", "config.show"):
                    published.append(client.call(method))
            text = json.dumps(published) + d.logs()
            assert "connecting to ws://***@127.0.0.1" in text  # the masked form is what shows
            for secret in (ROUTE_TOKEN, EVENTS_TOKEN, UPSTREAM_PASSWORD):
                assert secret not in text, (secret, text[-3000:])
