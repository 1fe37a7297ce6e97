"""One error policy for per-frame and per-tick work: a failing handler injected into each loop.

Every loop must count the failure under its site, log the first of its kind once (with
context) and keep serving: bots keep receiving trades, pings keep being answered, the
next tick runs. Real sockets throughout (the independent fake exchange, a real gateway).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.runtime.drill import Rig, TradeCounter, rig, route_toml, run, wait_for
from tests.runtime.fake_exchange import FakeBitfinex
from wsgate.runtime.routing.hub import Hub
from wsgate.runtime.system.faults import Faults

FAST: dict[str, Any] = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "min_uptime": 0.5,
    "app_ping_interval": 0.2,
    "channel_cadence": {"trades": 5.0, "ticker": 5.0},
}


def _failing(times: int, real: Callable[..., Any]) -> tuple[Callable[..., Any], list[int]]:
    """A stand-in that raises on its first ``times`` calls, then behaves like ``real``."""
    calls = [0]

    def f(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise RuntimeError(f"injected failure {calls[0]}")
        return real(*args, **kwargs)

    return f, calls


def _hub(r: Rig) -> Hub:
    hub = r.routes["bfx"].hub
    assert hub is not None
    return hub


def test_record_counts_every_failure_and_logs_the_first_of_each_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Faults()
    with caplog.at_level(logging.DEBUG, logger="wsgate.faults"):
        for i in range(3):
            f.record("hub.tick", RuntimeError(f"boom {i}"), "route bfx")
        f.record("hub.tick", KeyError("k"), "route bfx")
        f.record("hub.ping", RuntimeError("boom"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(" failed")[0] for r in errors] == [
        "hub.tick (route bfx)",
        "hub.tick (route bfx)",
        "hub.ping",
    ]
    assert all(r.exc_info is not None for r in errors)  # with the traceback
    st = f.statistics()
    assert st.total == 5 and st.by_site == {"hub.tick": 4, "hub.ping": 1}
    assert st.last == "hub.ping: RuntimeError: boom"


@pytest.mark.parametrize("lean", [True, False], ids=["lean-reader", "fallback-reader"])
def test_a_failing_frame_handler_is_counted_and_the_reader_carries_on(lean: bool) -> None:
    async def go() -> None:
        async with (
            FakeBitfinex(trade_interval=0.02) as ex,
            rig(route_toml("bfx", ex.url, **FAST)) as r,
        ):
            hub = _hub(r)
            if not lean:  # websockets' own reader: reconnect with it
                await wait_for(lambda: len(r.open_conns("bfx")) == 1, 5.0, "pool open")
                conn = r.conns("bfx")[0]
                conn.settings = dataclasses.replace(conn.settings, fast_reader=False)
                conn.request_reconnect("use the fallback reader")
            async with TradeCounter(r.url("bfx")) as bot:
                await bot.wait_new_trades(3)
                hub._on_data, calls = _failing(5, hub._on_data)  # type: ignore[method-assign]
                await wait_for(lambda: calls[0] > 5, 5.0, "the injected failures")
                await bot.wait_new_trades(5)  # still served after the failures
                assert r.env.faults.count("upstream.frame") == 5
                conn = r.open_conns("bfx")[0]
                assert conn.statistics().reconnects == (0 if lean else 1)  # never dropped

    run(go())


def test_a_failing_tick_is_counted_and_the_next_tick_runs() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(route_toml("bfx", ex.url, **FAST)) as r:
            hub = _hub(r)
            await wait_for(lambda: len(r.open_conns("bfx")) == 1, 5.0, "pool open")
            hub.registry.tick, calls = _failing(2, hub.registry.tick)  # type: ignore[method-assign]
            await wait_for(lambda: calls[0] >= 4, 5.0, "ticks after the failures")
            assert r.env.faults.count("hub.tick") == 2

    run(go())


def test_a_failing_app_ping_and_a_failing_send_are_counted_and_pings_go_on() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(route_toml("bfx", ex.url, **FAST)) as r:
            hub = _hub(r)
            await wait_for(lambda: len(r.open_conns("bfx")) == 1, 5.0, "pool open")
            conn = r.open_conns("bfx")[0]
            hub._app_ping, pings = _failing(2, hub._app_ping)  # type: ignore[method-assign]
            conn.send, sends = _failing(2, conn.send)  # type: ignore[method-assign]
            await wait_for(lambda: pings[0] > 2 and sends[0] > 2, 5.0, "pings after failures")
            before = ex.pongs
            await wait_for(lambda: ex.pongs > before + 1, 5.0, "pings answered again")
            assert r.env.faults.count("hub.ping") == 2
            assert r.env.faults.count("hub.writer") == 2
            assert conn.statistics().reconnects == 0

    run(go())


def test_a_failing_session_flush_closes_that_session_only() -> None:
    async def go() -> None:
        async with (
            FakeBitfinex(trade_interval=0.02) as ex,
            rig(route_toml("bfx", ex.url, **FAST)) as r,
            TradeCounter(r.url("bfx")) as good,
            TradeCounter(r.url("bfx")) as bad,
        ):
            victim = max(r.gateway.sessions, key=lambda s: s.id)  # the later one: `bad`
            victim._flush, calls = _failing(10**9, victim._flush)  # type: ignore[method-assign]
            await wait_for(lambda: calls[0] >= 1, 5.0, "a failing flush")
            assert bad.ws is not None
            await asyncio.wait_for(bad.ws.wait_closed(), 5.0)
            assert bad.ws.close_code == 1011  # a bug in its own path ends that session only
            await good.wait_new_trades(5)
            assert r.env.faults.count("session.flush") == 1

    run(go())
