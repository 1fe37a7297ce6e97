"""Upstream fault drills against the in-process simulator, over real loopback sockets.

Each drill runs real :class:`RouteRuntime`s and a real gateway (``tests/runtime/drill.py``)
with bots connected as plain WebSocket clients, injects a fault through
``sim.<exchange>.faults`` and waits (bounded) for detection and recovery. Timings are
printed for the bench (``pytest -s``), never asserted beyond the documented bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.runtime.drill import TradeCounter, rig, route_toml, run, wait_for
from wsgate.core.states import ConnState
from wsgate.core.subscriptions import SubState
from wsgate.runtime.routing.hub import Hub
from wsgate.sim import Simulator

CADENCE = 1.0
FAST: dict[str, Any] = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "min_uptime": 0.5,
    "app_ping_interval": 0.25,
    "ping_interval": 0.25,
    "channel_cadence": {"trades": CADENCE, "ticker": CADENCE},
}


def _bfx(sim: Simulator, **extra: Any) -> str:
    return route_toml("bfx", sim.bitfinex_url, **{**FAST, **extra})


def _report(name: str, **numbers: float) -> None:
    print(f"[drill] {name}: " + ", ".join(f"{k}={v:.3f}s" for k, v in numbers.items()))


def _sim(**tuning: Any) -> Simulator:
    tuning.setdefault("bitfinex_trades_rate", 20.0)
    return Simulator(seed=3, binance=False, **tuning)


def _resumes(hub: Hub) -> int:
    """Trades channels resumed on a new upstream subscription (bridged or announced)."""
    return sum(hub.statistics().trade_resumes.values())


def test_dropped_connection_reconnects_with_backoff_and_replays() -> None:
    async def go() -> None:
        async with _sim() as sim, rig(_bfx(sim)) as r, TradeCounter(r.url("bfx")) as bot:
            hub = r.routes["bfx"].hub
            assert hub is not None
            for round_ in range(3):
                resumed = _resumes(hub)
                t0 = time.monotonic()
                assert sim.bitfinex.faults.drop() == 1
                detect = await wait_for(
                    lambda: r.count(ConnState.CLOSING) > round_,  # noqa: B023
                    5.0,
                    "drop noticed",
                )
                # The new subscription's snapshot was bridged (or announced a gap).
                await wait_for(lambda: _resumes(hub) > resumed, 10.0, "resumed")  # noqa: B023
                await bot.wait_new_trades(3)
                _report("drop", detect=detect, recover=time.monotonic() - t0)
                sub = hub.registry.subscriptions()[0]
                assert sub.state is SubState.CONFIRMED and sub.sessions
            # Every reconnect waited at least backoff_initial after the close.
            ts = [(t.new, t.at) for _c, t in r.transitions]
            closes = [at for new, at in ts if new is ConnState.BACKOFF]
            connects = [at for new, at in ts if new is ConnState.CONNECTING][1:]
            assert len(closes) == len(connects) == 3
            assert all(
                c - b >= FAST["backoff_initial"] for b, c in zip(closes, connects, strict=False)
            )
            assert bot.duplicates() == 0

    run(go())


def test_stalled_but_pinging_server_is_caught() -> None:
    async def go() -> None:
        async with _sim() as sim, rig(_bfx(sim)) as r, TradeCounter(r.url("bfx")) as bot:
            conn = r.conns("bfx")[0]
            await wait_for(lambda: conn.statistics().latency is not None, 5.0, "ws rtt")
            hub = r.routes["bfx"].hub
            assert hub is not None
            for round_ in range(2):
                resumed = _resumes(hub)
                t0 = time.monotonic()
                sim.bitfinex.faults.stall()
                closing = r.count(ConnState.CLOSING)
                detect = await wait_for(
                    lambda: r.count(ConnState.CLOSING) > closing,  # noqa: B023
                    CADENCE + 1.0 + 1.0,
                    f"stale detection, round {round_}",
                )
                assert detect <= CADENCE + 1.0 + 0.5  # cadence + grace + one hub tick
                reason = next(
                    t.reason for _c, t in reversed(r.transitions) if t.new is ConnState.CLOSING
                )
                assert "silent" in reason or "stale" in reason
                sim.bitfinex.faults.resume()
                await wait_for(lambda: _resumes(hub) > resumed, 10.0, "recovery")  # noqa: B023
                await bot.wait_new_trades(3)
                _report("stall", detect=detect, recover=time.monotonic() - t0)
            # Pongs kept arriving during the stall: liveness at the ping level was not enough.
            assert conn.statistics().latency is not None

    run(go())


def test_latency_injection_is_measured_without_reconnects() -> None:
    async def go() -> None:
        async with _sim() as sim, rig(_bfx(sim)) as r, TradeCounter(r.url("bfx")) as bot:
            conn = r.conns("bfx")[0]
            await wait_for(lambda: conn.statistics().latency_app is not None, 5.0)
            base = conn.statistics().latency_app or 0.0
            sim.bitfinex.faults.latency(1000)
            # The app-level EWMA (30 s half-life) covers a tenth of the step in about 5 s.
            took = await wait_for(
                lambda: (conn.statistics().latency_app or 0.0) > base + 0.1, 15.0, "app latency"
            )
            await bot.wait_new_trades(3)
            sim.bitfinex.faults.latency(0)
            assert r.count(ConnState.CLOSING) == 0  # slow is not dead
            _report("latency 1000ms", visible_after=took)

    run(go())


def test_20051_rotates_make_before_break() -> None:
    # The simulator closes, after its grace, the connections that heard the 20051 (not the
    # successor): a make-before-break rotation must lose no trade and repeat none.
    async def go() -> None:
        async with (
            _sim(bitfinex_reconnect_grace=1.0) as sim,
            rig(_bfx(sim)) as r,
            TradeCounter(r.url("bfx")) as bot,
        ):
            await bot.wait_new_trades(5)
            hub = r.routes["bfx"].hub
            assert hub is not None
            for round_ in range(2):
                old = r.open_conns("bfx")[0]
                accepted = sim.bitfinex.handshakes_accepted
                t0 = time.monotonic()
                assert sim.bitfinex.faults.info(20051) == 1
                took = await wait_for(
                    lambda: (
                        old.state is ConnState.CLOSED  # noqa: B023
                        and len(r.open_conns("bfx")) == 1
                    ),
                    10.0,
                    f"rotation {round_}",
                )
                assert hub.statistics().moves == round_ + 1  # moved, not re-homed after a loss
                assert sim.bitfinex.handshakes_accepted == accepted + 1  # one successor only
                await bot.wait_new_trades(5)
                _report("20051", rotated=took, flowing=time.monotonic() - t0)
            assert bot.duplicates() == 0
            assert bot.ids == sorted(bot.ids)
            unique = sorted(set(bot.ids))
            assert unique == list(range(unique[0], unique[-1] + 1))  # no trade lost
            sub = hub.registry.subscriptions()[0]
            assert sub.state is SubState.CONFIRMED

    run(go())


def test_maintenance_is_degraded_not_a_reconnect_loop() -> None:
    async def go() -> None:
        async with (
            _sim() as sim,
            rig(_bfx(sim, stale_after=1.0)) as r,
            TradeCounter(r.url("bfx")) as bot,
        ):
            if True:  # keeps the drill's steps together under one indented block
                conn = r.conns("bfx")[0]
                accepted = sim.bitfinex.handshakes_accepted
                sim.bitfinex.faults.info(20060)
                await wait_for(lambda: conn.state is ConnState.DEGRADED, 3.0, "DEGRADED")
                quiet_until = time.monotonic() + 3 * CADENCE
                await wait_for(lambda: time.monotonic() >= quiet_until, 5.0, "maintenance window")
                assert conn.state is ConnState.DEGRADED
                assert sim.bitfinex.handshakes_accepted == accepted  # no reconnect loop
                hub = r.routes["bfx"].hub
                assert hub is not None
                resumed, t0 = _resumes(hub), time.monotonic()
                sim.bitfinex.faults.info(20061)
                await wait_for(lambda: _resumes(hub) > resumed, 5.0, "resubscribed after 20061")
                await bot.wait_new_trades(3)
                assert conn.statistics().state == "open"
                _report("maintenance end", flowing=time.monotonic() - t0)
                codes = [e.get("code") for e in bot.events]
                assert 20060 in codes and 20061 in codes

    run(go())


def test_max_lifetime_rotates_ahead_of_the_forced_close() -> None:
    async def go() -> None:
        async with _sim() as sim:
            body = route_toml("bfx", sim.bitfinex_url, **{**FAST, "max_lifetime": 1.5})
            async with rig(body) as r, TradeCounter(r.url("bfx")) as bot:
                await wait_for(lambda: r.count(ConnState.CLOSED) >= 2, 10.0, "two rotations")
                await bot.wait_new_trades(5)
                first = bot.ids[0]
                assert bot.ids == list(range(first, first + len(bot.ids)))
                assert r.count(ConnState.BACKOFF) == 0  # never dropped, always replaced first

    run(go())


def test_channel_limit_10305_places_elsewhere() -> None:
    async def go() -> None:
        async with _sim() as sim, rig(_bfx(sim, max_connections=4)) as r:
            sim.bitfinex.faults.channel_limit(1)
            async with (
                TradeCounter(r.url("bfx")) as btc,
                TradeCounter(r.url("bfx"), "tETHUSD") as eth,
            ):
                await btc.wait_new_trades(2)
                await eth.wait_new_trades(2)
                hub = r.routes["bfx"].hub
                assert hub is not None
                homes = {s.conn_id for s in hub.registry.subscriptions()}
                assert len(homes) == 2

    run(go())


def test_malformed_frames_are_counted_not_fatal() -> None:
    async def go() -> None:
        async with _sim() as sim, rig(_bfx(sim)) as r, TradeCounter(r.url("bfx")) as bot:
            conn = r.conns("bfx")[0]
            errors = conn.metrics.errors_total
            sim.bitfinex.faults.malformed(8)
            await wait_for(lambda: conn.metrics.errors_total >= errors + 4, 5.0, "errors")
            await bot.wait_new_trades(3)
            assert conn.state is ConnState.OPEN and r.count(ConnState.CLOSING) == 0

    run(go())


def test_reconnect_storm_of_50_connections_stays_inside_the_connect_budget() -> None:
    count, per = 20, 1.0

    def max_in_window(times: list[float], window: float) -> int:
        times = sorted(times)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] < t - window:
                j += 1
            best = max(best, i - j + 1)
        return best

    async def go() -> None:
        async with _sim() as sim:
            body = route_toml(
                "bfx",
                sim.bitfinex_url,
                **{
                    **FAST,
                    "min_connections": 50,
                    "max_connections": 50,
                    "connect_budget": {"count": count, "per": per},
                },
            )
            async with rig(body) as r:
                await wait_for(lambda: len(r.open_conns("bfx")) == 50, 15.0, "50 open")
                t0 = time.monotonic()
                assert sim.bitfinex.faults.drop() == 50
                await wait_for(
                    lambda: r.count(ConnState.CONNECTING) >= 100 and len(r.open_conns("bfx")) == 50,
                    15.0,
                    "storm recovered",
                )
                _report("storm of 50", recover=time.monotonic() - t0)
                attempts = [t.at for _c, t in r.transitions if t.new is ConnState.CONNECTING]
                assert len(attempts) == sim.bitfinex.handshakes_accepted == 100
                # A token bucket grants at most burst + rate * window in any window.
                assert max_in_window(attempts, per) <= count + count / per * per + 1

    run(go())


# ---------------------------------------------------------------- Binance
@contextlib.asynccontextmanager
async def binance_bot(url: str) -> AsyncIterator[tuple[ClientConnection, list[int]]]:
    ids: list[int] = []
    ws = await asyncio.wait_for(connect(url, compression=None), 5.0)

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                msg = json.loads(raw)
                if isinstance(msg, dict) and msg.get("e") == "trade":
                    ids.append(int(msg["t"]))

    task = asyncio.create_task(read())
    try:
        yield ws, ids
    finally:
        await ws.close()
        await asyncio.wait_for(task, 5.0)


def test_binance_server_shutdown_rotates_without_loss() -> None:
    async def go() -> None:
        async with Simulator(seed=3, bitfinex=False, binance_trades_rate=20.0) as sim:
            body = route_toml("bn", sim.binance_url, "binance", **FAST)
            async with rig(body) as r, binance_bot(r.url("bn", "/ws/btcusdt@trade")) as (_ws, ids):
                await wait_for(lambda: len(ids) >= 5, 10.0, "binance trades")
                for round_ in range(2):
                    old = r.open_conns("bn")[0]
                    t0 = time.monotonic()
                    sim.binance.faults.server_shutdown()
                    took = await wait_for(
                        lambda: (
                            old.state is ConnState.CLOSED  # noqa: B023
                            and len(r.open_conns("bn")) == 1
                        ),
                        10.0,
                        f"rotation {round_}",
                    )
                    n = len(ids)
                    await wait_for(lambda: len(ids) >= n + 5, 10.0)  # noqa: B023
                    _report("serverShutdown", rotated=took, flowing=time.monotonic() - t0)
                # The simulator's shutdown also closes the successor once its grace ends (a
                # whole-server restart), so only order and uniqueness are asserted here.
                assert ids == sorted(set(ids))
                hub = r.routes["bn"].hub
                assert hub is not None and hub.statistics().moves >= 2

    run(go())


# ---------------------------------------------------------------- CLI, whole daemon
def test_cli_sim_fault_and_connections_show_states_and_counters() -> None:
    import subprocess

    from tests.e2e.harness import WSGATE, free_port, run_daemon
    from tests.e2e.harness import wait_until as wait_sync

    bfx, bnc = free_port(), free_port()
    sim = subprocess.Popen(
        [*WSGATE, "sim", "--bitfinex-port", str(bfx), "--binance-port", str(bnc)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*WSGATE, *args], capture_output=True, text=True, timeout=20, check=False
        )

    try:
        wait_sync(lambda: cli("sim", "stats", "--port", str(bfx)).returncode == 0, 40, "sim up")
        body = route_toml("bitfinex", f"ws://127.0.0.1:{bfx}/ws/2", **FAST)
        with run_daemon(body) as d:

            def conns() -> list[dict[str, Any]]:
                r = d.cli("connections", "--json", "--socket", d.socket)
                assert r.returncode == 0, r.stderr
                return list(json.loads(r.stdout))

            wait_sync(lambda: [c["state"] for c in conns()] == ["open"], 15, "upstream open")
            r = cli("sim", "fault", "drop", "--port", str(bfx), "--json")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["result"] == 1
            wait_sync(
                lambda: (
                    conns()[0]["transitions"].get("open->closing") == 1
                    and conns()[0]["state"] == "open"
                ),
                15,
                "reconnected after the CLI-injected drop",
            )
            row = conns()[0]
            assert row["type"] == "market_data" and row["reconnects"] == 1
            assert row["transitions"]["backoff->connecting"] == 1
            table = subprocess.run(
                [*WSGATE, "connections", "--socket", d.socket],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
                env={**d.env, "COLUMNS": "200"},
            )
            assert table.returncode == 0 and "bitfinex-c1" in table.stdout
            assert "transitions" in table.stdout and "open" in table.stdout
            stats = json.loads(cli("sim", "stats", "--port", str(bfx), "--json").stdout)
            assert stats["handshakes_accepted"] == 2
            # Parameters pass through; a bad kind or an unreachable sim are clear errors.
            r = cli(
                "sim", "fault", "latency", "-p", "ms=5", "--url", f"ws://127.0.0.1:{bfx}", "--json"
            )
            assert r.returncode == 0 and json.loads(r.stdout)["faults"]["latency_ms"] == 5.0
            bad = cli("sim", "fault", "explode", "--port", str(bfx))
            assert bad.returncode == 2 and "unknown fault kind" in bad.stderr
            refused = cli("sim", "fault", "latency", "--port", str(bfx))  # missing ms=
            assert refused.returncode == 2 and "ms" in refused.stderr
            down = cli("sim", "stats", "--port", str(free_port()))
            assert down.returncode == 3 and "cannot reach" in down.stderr
    finally:
        sim.terminate()
        sim.wait(10)
