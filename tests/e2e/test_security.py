"""Security and abuse, end to end: the daemon as a subprocess, attacked through its surfaces."""

from __future__ import annotations

import pytest
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
