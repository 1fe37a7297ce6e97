"""Per-bot identities ([[gateway.clients]]) end to end: real bots on 127.0.0.1, the simulator.

Two clients with their own tokens (one from the environment, one from a file) and their
own routes; a wrong token, a forbidden route, max_sessions and max_subscriptions
(answered in each venue's own error format, the session staying open); the client's
name in status, /metrics and the sessions; the route's shared token still working
beside them; and what a reload changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import simstack
from tests.e2e.harness import ThreadServer, free_port, run_daemon, until
from tests.simstack import Route
from wsgate import Gateway
from wsgate.cli import render
from wsgate.cli.top import TopState, render_top
from wsgate.config import parse_config
from wsgate.control.api import status
from wsgate.control.api_analytics import top_snapshot
from wsgate.control.metrics_bots import BotSideCollector
from wsgate.sim import Simulator

ALPHA = "alpha-token-0123456789abcdef"
BETA = "beta-token-fedcba9876543210"
GAMMA = "gamma-token-5555555555555555"
ROUTE_TOKEN = "route-shared-token-42"

ROUTES = {
    "bitfinex": Route("bitfinex"),
    "binance": Route("binance", rest=False),
    "okx": Route("okx"),
    "bybit": Route("bybit"),
    "shared": Route("bitfinex", token_env="WSGATE_T_ROUTE"),
}


def _clients(beta_file: Path, alpha_routes: str = '["bitfinex", "shared"]') -> str:
    return f"""
linger = 0.5
[[gateway.clients]]
name = "alpha"
token_env = "WSGATE_T_ALPHA"
routes = {alpha_routes}
max_sessions = 2
max_subscriptions = 2

[[gateway.clients]]
name = "beta"
token_file = "{beta_file}"
routes = ["binance"]
max_subscriptions = 1

[[gateway.clients]]
name = "gamma"
token_env = "WSGATE_T_GAMMA"
routes = ["okx", "bybit"]
max_subscriptions = 1
"""


@pytest.fixture
def beta_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WSGATE_T_ALPHA", ALPHA)
    monkeypatch.setenv("WSGATE_T_GAMMA", GAMMA)
    monkeypatch.setenv("WSGATE_T_ROUTE", ROUTE_TOKEN)
    path = tmp_path / "beta.token"
    path.write_text(BETA + "\n")
    path.chmod(0o600)
    return path


@asynccontextmanager
async def _stack(gateway: str) -> AsyncIterator[tuple[Gateway, Simulator]]:
    async with simstack.stack(ROUTES, seed=21, gateway_seed=4, gateway=gateway) as (gw, sim):
        yield gw, sim


async def _recv(ws: ClientConnection) -> Any:
    raw = await asyncio.wait_for(ws.recv(), 10)
    return raw if raw == "pong" else json.loads(raw)


async def _until(ws: ClientConnection, pred: Callable[[Any], bool], limit: int = 400) -> Any:
    for _ in range(limit):
        msg = await _recv(ws)
        if pred(msg):
            return msg
    raise AssertionError("expected message never arrived")


async def _refused(url: str, **kw: Any) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kw):
            pass
    response = info.value.response
    return response.status_code, response.body.decode() if response.body else ""


def _bfx_sub(channel: str, symbol: str) -> str:
    return json.dumps({"event": "subscribe", "channel": channel, "symbol": symbol})


def _is_bfx_subscribed(m: Any) -> bool:
    return isinstance(m, dict) and m.get("event") == "subscribed"


def _is_bfx_error(m: Any) -> bool:
    return isinstance(m, dict) and m.get("event") == "error"


def _metrics(gw: Gateway) -> str:
    registry = CollectorRegistry()
    registry.register(BotSideCollector(gw.daemon))
    return generate_latest(registry).decode()


def test_clients_tokens_routes_limits_and_visibility(beta_file: Path) -> None:
    async def scenario() -> None:
        async with _stack(_clients(beta_file)) as (gw, _sim):
            bfx, bnc = gw.url("bitfinex"), gw.url("binance")
            # No token, a wrong one, and a client's token on a route it may not use.
            code, body = await _refused(bfx)
            assert code == 401 and "token" in body
            code, _ = await _refused(f"{bfx}?token=not-a-client")
            assert code == 401
            code, body = await _refused(f"{bnc}/ws/btcusdt@trade?token={ALPHA}")
            assert code == 403, body
            assert "client alpha may not use route binance" in body and "bitfinex" in body
            # A route without its own token is closed to anonymous bots once clients exist.
            code, _ = await _refused(gw.url("okx") + "/ws/v5/public")

            bearer = {"Authorization": f"Bearer {ALPHA}"}
            a1 = await connect(f"{bfx}?token={ALPHA}")
            a2 = await connect(bfx, additional_headers=bearer)
            # max_sessions = 2: the third is refused with 429 and the reason.
            code, body = await _refused(f"{bfx}?token={ALPHA}")
            assert code == 429 and "client alpha: max_sessions (2) reached" in body
            # max_subscriptions = 2 across both sessions: the third subscribe gets Bitfinex's
            # own error event, and the session stays open and keeps its data.
            await a1.send(_bfx_sub("trades", "tBTCUSD"))
            await _until(a1, _is_bfx_subscribed)
            await a2.send(_bfx_sub("ticker", "tBTCUSD"))
            await _until(a2, _is_bfx_subscribed)
            await a2.send(_bfx_sub("trades", "tETHUSD"))
            err = await _until(a2, _is_bfx_error)
            assert err["code"] == 10305, err
            assert "client alpha: 2 across its sessions" in err["msg"], err
            await _until(a2, lambda m: isinstance(m, list) and m[1] != "hb")  # still fed
            await a2.send(json.dumps({"event": "ping", "cid": 5}))
            pong = await _until(a2, lambda m: isinstance(m, dict) and m.get("event") == "pong")
            assert pong["cid"] == 5

            # beta (token from a file): Binance's own error form, with the request's id.
            b1 = await connect(f"{bnc}/ws?token={BETA}")
            await b1.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
            ok = await _until(b1, lambda m: isinstance(m, dict) and m.get("id") == 1)
            assert ok == {"result": None, "id": 1}
            await b1.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
            refused = await _until(b1, lambda m: isinstance(m, dict) and m.get("id") == 7)
            assert refused["error"]["code"] == 2 and "client beta" in refused["error"]["msg"]
            await _until(b1, lambda m: isinstance(m, dict) and m.get("e") == "trade")

            # gamma: OKX's and Bybit's own error forms.
            g1 = await connect(f"{gw.url('okx')}/ws/v5/public?token={GAMMA}")
            arg = {"channel": "trades", "instId": "BTC-USDT"}
            await g1.send(json.dumps({"id": "s1", "op": "subscribe", "args": [arg]}))
            await _until(g1, lambda m: isinstance(m, dict) and m.get("event") == "subscribe")
            arg2 = {"channel": "trades", "instId": "ETH-USDT"}
            await g1.send(json.dumps({"id": "s2", "op": "subscribe", "args": [arg2]}))
            okx_err = await _until(g1, lambda m: isinstance(m, dict) and m.get("event") == "error")
            assert okx_err["id"] == "s2" and "client gamma" in okx_err["msg"], okx_err
            g2 = await connect(f"{gw.url('bybit')}/v5/public/spot?token={GAMMA}")
            await g2.send(
                json.dumps({"req_id": "r1", "op": "subscribe", "args": ["publicTrade.BTCUSDT"]})
            )
            bybit_err = await _until(
                g2, lambda m: isinstance(m, dict) and m.get("op") == "subscribe"
            )
            assert bybit_err["success"] is False and bybit_err["req_id"] == "r1", bybit_err
            assert "client gamma" in bybit_err["ret_msg"]

            # The route's own shared token still opens its route (anonymous, no client).
            # Its User-Agent names nothing in the metrics: a bot cannot mint label values.
            anon = await connect(
                f"{gw.url('shared')}?token={ROUTE_TOKEN}", user_agent_header="minted-label/1.0"
            )

            # Visibility: status, the sessions, /metrics.
            doc = status(gw.daemon)
            by_name = {c["name"]: c for c in doc["clients"]}
            assert by_name["alpha"]["sessions"] == 2 and by_name["alpha"]["subscriptions"] == 2
            assert by_name["alpha"]["refused"] == {
                "route": 1,
                "max_sessions": 1,
                "max_subscriptions": 1,
            }
            assert by_name["beta"]["sessions"] == 1 and by_name["beta"]["subscriptions"] == 1
            assert by_name["gamma"]["sessions"] == 2 and by_name["gamma"]["token"] == "ok"
            json.dumps(doc)  # `status --json` prints exactly this
            rows = {s.id: s.statistics() for s in gw.daemon.gateway.sessions}
            clients = sorted(str(r.client) for r in rows.values())
            assert clients == ["None", "alpha", "alpha", "beta", "gamma", "gamma"]
            text = _metrics(gw)
            assert 'wsgate_client_sessions_open{client="alpha"} 2.0' in text
            assert 'wsgate_client_subscriptions{client="alpha"} 2.0' in text
            assert 'wsgate_client_refused_total{client="alpha",reason="max_sessions"} 1.0' in text
            assert 'wsgate_client_sessions_open{client="beta"} 1.0' in text
            assert 'wsgate_handshakes_rejected_total{reason="too_many"} 1.0' in text
            by_client = sorted(
                (labels["route"], labels["client"], value)
                for labels, value in (
                    (dict(re.findall(r'(\w+)="([^"]*)"', body)), value)
                    for body, value in re.findall(
                        r"wsgate_sessions_by_client\{([^}]*)\} (\S+)", text
                    )
                )
            )
            assert by_client == [
                ("binance", "beta", "1.0"),
                ("bitfinex", "alpha", "2.0"),
                ("bybit", "gamma", "1.0"),
                ("okx", "gamma", "1.0"),
                ("shared", "anonymous", "1.0"),
            ]
            assert "minted" not in text and doc["anonymous_sessions"] == 1
            for secret in (ALPHA, BETA, GAMMA, ROUTE_TOKEN):
                assert secret not in text and secret not in json.dumps(doc)

            # The operator's views: `wsgate status` and `wsgate top` (view 4, and the
            # client column of view 3).
            console = Console(file=io.StringIO(), width=200)
            with patch.object(render, "_console", console):
                render.render_status(doc)
            shown = console.file.getvalue()  # type: ignore[attr-defined]
            assert "clients" in shown and "alpha" in shown and "2/2" in shown, shown
            assert "route=1 max_sessions=1 max_subscriptions=1" in shown, shown
            assert re.search(r"anonymous\s*│\s*-\s*│\s*1\s", shown), shown
            state = TopState("clients")
            state.snapshot = top_snapshot(gw.daemon)
            top = Console(file=io.StringIO(), width=200)
            top.print(render_top(state))
            table = top.file.getvalue()  # type: ignore[attr-defined]
            assert "gamma" in table and "okx,bybit" in table, table
            state.view = "sessions"
            assert {r["client"] for r in state.rows()} == {None, "alpha", "beta", "gamma"}
            top = Console(file=io.StringIO(), width=200)
            top.print(render_top(state))
            assert "anonymous" in top.file.getvalue()  # type: ignore[attr-defined]

            # A session that ends frees its slot and its subscriptions.
            await a1.close()
            a3 = await connect(f"{bfx}?token={ALPHA}")
            await a3.send(_bfx_sub("trades", "tETHUSD"))
            await _until(a3, _is_bfx_subscribed)
            for ws in (a2, a3, b1, g1, g2, anon):
                await ws.close()

    asyncio.run(scenario())


def test_reload_swaps_identities_for_new_connections_only(beta_file: Path) -> None:
    async def scenario() -> None:
        async with _stack(_clients(beta_file)) as (gw, sim):
            d = gw.daemon
            bfx = gw.url("bitfinex")
            a1 = await connect(f"{bfx}?token={ALPHA}")
            await a1.send(_bfx_sub("trades", "tBTCUSD"))
            await _until(a1, _is_bfx_subscribed)
            # alpha loses bitfinex; beta's token file is rotated in place.
            await asyncio.to_thread(beta_file.write_text, "beta-rotated-token-000000000\n")
            tmp = os.path.dirname(d.config.daemon.control_socket)  # the stack's own
            text = simstack.stack_config(
                sim, tmp, ROUTES, gateway=_clients(beta_file, alpha_routes='["shared"]')
            )
            d._reload_source = lambda: parse_config(text)
            result = await d.reload("test")
            keys = [c["key"] for c in result["changed"]]
            assert keys == ["gateway.clients"], result["changed"]
            detail = result["changed"][0]["detail"]
            assert detail == 'alpha.routes: ["bitfinex","shared"] -> ["shared"]', detail
            note = next(n for n in result["applied"] if n.startswith("gateway.clients"))
            assert "new token for beta" in note and "open sessions keep" in note, note
            assert ALPHA not in json.dumps(result) and "beta-rotated" not in json.dumps(result)
            # The open session keeps running (and counting) under its identity...
            await _until(a1, lambda m: isinstance(m, list) and m[1] != "hb")
            assert d.gateway.clients.clients["alpha"].statistics().sessions == 1
            # ... while a new one is judged by the new table.
            code, body = await _refused(f"{bfx}?token={ALPHA}")
            assert code == 403 and "its routes: shared" in body
            code, _ = await _refused(f"{gw.url('binance')}/ws?token={BETA}")
            assert code == 401
            b = await connect(f"{gw.url('binance')}/ws?token=beta-rotated-token-000000000")
            # Removing every client opens the routes without tokens again, as before.
            plain = simstack.stack_config(sim, tmp, ROUTES)
            d._reload_source = lambda: parse_config(plain)
            result = await d.reload("test")
            note = next(n for n in result["applied"] if n.startswith("gateway.clients"))
            assert "0 client(s)" in note and "run on" in note
            anon = await connect(gw.url("bitfinex"))
            removed = {c.name: c for c in d.gateway.clients.statistics()}
            assert removed["alpha"].configured is False and removed["alpha"].sessions == 1
            for ws in (a1, b, anon):
                await ws.close()
            assert dataclasses.asdict(removed["alpha"])["name"] == "alpha"

    asyncio.run(scenario())


def test_parallel_handshakes_cannot_pass_max_sessions_together(beta_file: Path) -> None:
    async def scenario() -> None:
        async with _stack(_clients(beta_file)) as (gw, _sim):
            url = f"{gw.url('bitfinex')}?token={ALPHA}"

            async def one() -> ClientConnection | int:
                try:
                    return await connect(url)
                except InvalidStatus as exc:
                    return exc.response.status_code

            got = await asyncio.gather(*(one() for _ in range(8)))
            opened = [ws for ws in got if not isinstance(ws, int)]
            assert len(opened) == 2 and sorted(c for c in got if isinstance(c, int)) == [429] * 6
            assert gw.daemon.gateway.clients.clients["alpha"].refused["max_sessions"] == 6
            for ws in opened:
                await ws.close()
            # Closed sessions free their slots (the handler's end releases them).
            alpha = gw.daemon.gateway.clients.clients["alpha"]
            await until(lambda: not alpha.sessions, 10, "alpha's sessions to end")
            assert not gw.daemon.gateway._admitted
            again = await connect(url)
            await again.close()

    asyncio.run(scenario())


def test_daemon_shows_the_client_in_status_metrics_and_logs_never_its_token() -> None:
    """The real daemon as a subprocess: `wsgate status`, /metrics over HTTP, its log."""
    seen: list[str] = []

    async def echo(ws: ServerConnection) -> None:
        seen.append(ws.request.path if ws.request else "")
        async for msg in ws:
            await ws.send(msg)

    clients = '[[gateway.clients]]\nname = "alpha"\ntoken_env = "WSGATE_T_ALPHA"\nmax_sessions = 1'
    metrics_port = free_port()
    with ThreadServer(echo) as up:
        body = '[routes.echo]\ndialect = "raw"\ntype = "market_data"\n'
        body += f'[[routes.echo.endpoints]]\nurl = "ws://127.0.0.1:{up.port}"\n'
        with run_daemon(
            body,
            extra_env={"WSGATE_T_ALPHA": ALPHA},
            gateway=clients,
            args=("--metrics-listen", f"127.0.0.1:{metrics_port}"),
        ) as d:

            async def bot() -> None:
                url = f"ws://127.0.0.1:{d.port}/echo/feed?token={ALPHA}&x=1"
                async with connect(url) as ws:
                    await ws.send("hi")
                    assert await asyncio.wait_for(ws.recv(), 10) == "hi"
                    r = await asyncio.to_thread(d.cli, "status", "--socket", d.socket)
                    assert r.returncode == 0, r.stderr
                    assert "clients" in r.stdout and "alpha" in r.stdout, r.stdout
                    assert "1/1" in r.stdout, r.stdout  # sessions against max_sessions
                    r = await asyncio.to_thread(d.cli, "status", "--json", "--socket", d.socket)
                    (row,) = json.loads(r.stdout)["clients"]
                    assert row["name"] == "alpha" and row["sessions"] == 1
                    async with httpx.AsyncClient() as http:
                        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                    assert 'wsgate_client_sessions_open{client="alpha"} 1.0' in text
                    code, body = await _refused(url)
                    assert code == 429, body
                    r = await asyncio.to_thread(d.cli, "clients", "--socket", d.socket)
                    assert "alpha" in r.stdout and "1/1" in r.stdout, r.stdout + r.stderr
                    r = await asyncio.to_thread(d.cli, "clients", "--json", "--socket", d.socket)
                    assert [c["name"] for c in json.loads(r.stdout)] == ["alpha"]
                    # A revoked bot is cut off on demand (a reload never closes sessions).
                    r = await asyncio.to_thread(
                        d.cli, "clients", "disconnect", "alpha", "--socket", d.socket
                    )
                    assert r.stdout.strip() == "client alpha: 1 session(s) closed (1008)", r
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 10)
                    assert ws.close_code == 1008
                    assert ws.close_reason == "client alpha disconnected by the operator"
                    r = await asyncio.to_thread(
                        d.cli, "clients", "disconnect", "nobody", "--socket", d.socket
                    )
                    assert r.returncode == 1 and "no client 'nobody'" in r.stderr, r
                    r = await asyncio.to_thread(d.cli, "alerts", "history", "--socket", d.socket)
                    assert "disconnect client alpha (uid" in r.stdout, r

            asyncio.run(bot())
            d.wait_log("closed on route echo (client alpha)")
            logs = d.logs()
            assert "opened on route echo by client alpha from 127.0.0.1" in logs
            assert seen == ["/feed?x=1"]  # the gateway's token never travels upstream
            assert ALPHA not in logs
