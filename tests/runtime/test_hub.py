"""Hub fault drills against an independent fake exchange (not wsgate.sim), real sockets."""

from __future__ import annotations

import time
from typing import Any

from tests.runtime.drill import TradeCounter, rig, route_toml, run, wait_for
from tests.runtime.fake_exchange import FakeBitfinex
from wsgate.core.states import ConnState
from wsgate.core.subscriptions import SubState

FAST: dict[str, Any] = {
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "min_uptime": 0.5,
    "app_ping_interval": 0.2,
    "channel_cadence": {"trades": 0.5, "ticker": 0.5},
}


def _body(url: str, **extra: Any) -> str:
    return route_toml("bfx", url, **{**FAST, **extra})


def test_route_stops_promptly_with_a_hub() -> None:
    # Found by the drills: the hub's timer loops kept its TaskGroup (and the daemon) alive.
    async def go() -> float:
        async with FakeBitfinex() as ex, rig(_body(ex.url)) as r:
            await wait_for(lambda: len(r.open_conns("bfx")) == 1, 5.0, "pool open")
            start = time.monotonic()
        return time.monotonic() - start

    assert run(go()) < 5.0


def test_drop_reconnects_replays_every_subscription_and_resnapshots() -> None:
    async def go() -> None:
        async with (
            FakeBitfinex() as ex,
            rig(_body(ex.url)) as r,
            TradeCounter(r.url("bfx")) as btc,
            TradeCounter(r.url("bfx"), "tETHUSD") as eth,
        ):
            hub = r.routes["bfx"].hub
            assert hub is not None
            for _round in range(3):
                snaps = (btc.snapshots, eth.snapshots)
                assert ex.drop_all() == 1
                await wait_for(
                    lambda: btc.snapshots > snaps[0] and eth.snapshots > snaps[1],  # noqa: B023
                    10.0,
                    "fresh snapshots after the drop",
                )
                await btc.wait_new_trades(3)
                await eth.wait_new_trades(3)
                subs = hub.registry.subscriptions()
                assert {s.state for s in subs} == {SubState.CONFIRMED}
                assert len(subs) == 2
                assert len(ex.open_channels()) == 2  # replayed, not duplicated
            conn = r.conns("bfx")[0]
            stats = conn.statistics()
            assert stats.reconnects == 3
            assert stats.transitions["open->closing"] == 3
            assert btc.chan_id is not None and btc.duplicates() == 0

    run(go())


def test_one_silent_channel_is_resubscribed_without_a_reconnect() -> None:
    async def go() -> None:
        async with (
            FakeBitfinex() as ex,
            rig(_body(ex.url)) as r,
            TradeCounter(r.url("bfx")) as btc,
            TradeCounter(r.url("bfx"), "tETHUSD") as eth,
        ):
            hub = r.routes["bfx"].hub
            assert hub is not None
            for _round in range(2):
                before = hub.registry.statistics().resubscribes
                snaps = btc.snapshots
                ex.stall("trades:tBTCUSD")
                took = await wait_for(
                    lambda: hub.registry.statistics().resubscribes > before,  # noqa: B023
                    0.5 + 1.0 + 1.0,  # cadence + 1 s + one hub tick and some slack
                    "per-channel stale detection",
                )
                ex.resume()
                await wait_for(lambda: btc.snapshots > snaps, 5.0, "fresh snapshot")  # noqa: B023
                await btc.wait_new_trades(3)
                assert took < 0.5 + 1.0 + 0.75
                assert eth.frames > 0
            assert r.count(ConnState.CLOSING) == 0  # one silent channel: no reconnect

    run(go())


def test_server_that_pongs_but_sends_no_data_is_reconnected() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(_body(ex.url)) as r, TradeCounter(r.url("bfx")) as bot:
            pongs = ex.pongs
            ex.stall()  # everything silent; pings still answered
            took = await wait_for(
                lambda: r.count(ConnState.CLOSING) >= 1, 3.0, "all-silent reconnect"
            )
            assert ex.pongs > pongs  # it was alive at the ping level all along
            assert "every channel silent" in r.transitions[-1][1].reason or any(
                "silent" in t.reason for _c, t in r.transitions
            )
            ex.resume()
            snaps = bot.snapshots
            await wait_for(lambda: bot.snapshots > snaps, 5.0, "recovery")
            await bot.wait_new_trades(3)
            assert took < 0.5 + 1.0 + 0.75

    run(go())


def test_20051_rotates_make_before_break_without_losing_a_trade() -> None:
    async def go() -> None:
        async with (
            FakeBitfinex(trade_interval=0.02) as ex,
            rig(_body(ex.url)) as r,
            TradeCounter(r.url("bfx")) as bot,
        ):
            await bot.wait_new_trades(5)
            for round_ in range(3):
                first = r.open_conns("bfx")[0]
                ex.info(20051)
                await wait_for(
                    lambda: (
                        first.state is ConnState.CLOSED  # noqa: B023
                        and len(r.open_conns("bfx")) == 1
                    ),
                    10.0,
                    f"rotation {round_}",
                )
                await bot.wait_new_trades(10)
            start = bot.ids[0]
            assert bot.ids == list(range(start, start + len(bot.ids)))  # no loss, in order
            assert bot.duplicates() == 0
            assert r.count(ConnState.BACKOFF) == 0  # never left without a live connection

    run(go())


def test_maintenance_degrades_without_reconnect_loop_then_resubscribes() -> None:
    async def go() -> None:
        async with (
            FakeBitfinex() as ex,
            rig(_body(ex.url, stale_after=0.5)) as r,
            TradeCounter(r.url("bfx")) as bot,
        ):
            conn = r.open_conns("bfx")[0]
            ex.info(20060)
            await wait_for(lambda: conn.state is ConnState.DEGRADED, 3.0, "DEGRADED")
            assert any(e.get("code") == 20060 for e in bot.events)  # forwarded to bots
            subs_before = ex.subscribe_requests
            # Three cadences of silence: a naive gateway would reconnect or resubscribe.
            await wait_for(lambda: time.monotonic() > 0, 0.1)
            deadline = time.monotonic() + 2.0
            await wait_for(lambda: time.monotonic() >= deadline, 3.0, "quiet window")
            assert conn.state is ConnState.DEGRADED
            assert r.count(ConnState.CLOSING) == 0
            assert ex.subscribe_requests == subs_before
            snaps = bot.snapshots
            ex.info(20061)
            await wait_for(lambda: conn.state is ConnState.OPEN, 3.0, "OPEN again")
            await wait_for(lambda: bot.snapshots > snaps, 3.0, "resubscribed snapshot")
            await bot.wait_new_trades(3)
            assert ex.subscribe_requests > subs_before

    run(go())


def test_channel_limit_places_the_subscription_on_another_connection() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(_body(ex.url, max_connections=3)) as r:
            ex.channel_limit = 1
            async with (
                TradeCounter(r.url("bfx")) as btc,
                TradeCounter(r.url("bfx"), "tETHUSD") as eth,
            ):
                await btc.wait_new_trades(2)
                await eth.wait_new_trades(2)
                hub = r.routes["bfx"].hub
                assert hub is not None
                homes = {s.conn_id for s in hub.registry.subscriptions()}
                assert len(homes) == 2  # one per connection
                assert any(
                    k.startswith("subscribe_10305")
                    for c in r.conns("bfx")
                    for k, _n in c.metrics.snapshot(time.monotonic()).errors_by_kind
                )

    run(go())


def test_unknown_symbol_fails_and_tells_the_client() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex, rig(_body(ex.url)) as r, TradeCounter(r.url("bfx")) as bot:
            assert bot.ws is not None
            await bot.ws.send('{"event":"subscribe","channel":"trades","symbol":"tNOPE"}')
            await wait_for(lambda: any(e.get("event") == "error" for e in bot.events), 5.0, "error")
            err = next(e for e in bot.events if e.get("event") == "error")
            assert err["code"] == 10300
            hub = r.routes["bfx"].hub
            assert hub is not None
            assert hub.registry.statistics().failures == 1
            await bot.wait_new_trades(2)  # the good subscription is untouched
            # The error is the session's, not the shared connection's: its health and error
            # rate stay clean for every other bot.
            assert hub.statistics().session_errors == {"subscribe_10300": 1}
            (member,) = hub.sessions.values()
            assert member.session.statistics().errors_by_kind == (("subscribe_10300", 1),)
            for conn in r.routes["bfx"].connections():
                assert conn.metrics.errors_total == 0, conn.metrics.snapshot(time.monotonic())

    run(go())
