"""Drop drills: a trades session never receives the same trade twice.

Bots subscribe to a shared trades channel through wsgate; the simulator's upstream is
dropped (a short outage and one longer than the exchange's 30-trade snapshot), asked to
reconnect (20051) and put through maintenance (20060/20061). Every session's trade ids are
counted: none twice, in order, and contiguous (the simulator numbers trades 1, 2, 3... per
symbol) except across the one outage whose gap the exchange's snapshot could not cover,
which wsgate announces. The hub's counters say which resume was bridged and which announced.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.simstack import Route, stack
from wsgate import Gateway
from wsgate.core.states import ConnState
from wsgate.sim import Simulator

ROUTES = {"bitfinex": Route("bitfinex", backoff_initial=0.05, backoff_max=0.2, min_uptime=0)}
SYMBOL = "tBTCUSD"


@dataclass
class Bot:
    name: str
    trades: list[int] = field(default_factory=list)  # te and snapshot ids, as received
    updates: list[int] = field(default_factory=list)  # tu ids
    snapshots: int = 0
    chan: int | None = None

    async def run(self, ws: ClientConnection) -> None:
        await ws.send(json.dumps({"event": "subscribe", "channel": "trades", "symbol": SYMBOL}))
        async for raw in ws:
            msg = json.loads(raw)
            if isinstance(msg, dict):
                if msg.get("event") == "subscribed":
                    self.chan = msg["chanId"]
                continue
            if msg[0] != self.chan or msg[1] == "hb":
                continue
            if msg[1] == "te":
                self.trades.append(msg[2][0])
            elif msg[1] == "tu":
                self.updates.append(msg[2][0])
            elif isinstance(msg[1], list):
                self.snapshots += 1
                self.trades.extend(entry[0] for entry in reversed(msg[1]))

    def jumps(self) -> int:
        return sum(1 for a, b in zip(self.trades, self.trades[1:], strict=False) if b != a + 1)


async def until(cond: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    try:
        async with asyncio.timeout(limit):
            while not cond():  # noqa: ASYNC110 - in-process state, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_trades_sessions_never_get_a_trade_twice_across_drops_20051_and_maintenance() -> None:
    async def scenario() -> None:
        async with stack(ROUTES, bitfinex_trades_rate=40.0, binance=False) as (gw, sim):
            await drill(gw, sim)

    asyncio.run(asyncio.wait_for(scenario(), 90))


async def drill(gw: Gateway, sim: Simulator) -> None:
    bfx = sim.bitfinex
    market = bfx.markets[SYMBOL]
    hub = gw.daemon.routes["bitfinex"].hub
    assert hub is not None
    bots = [Bot("a"), Bot("b")]
    async with asyncio.TaskGroup() as tg:
        sockets = [await connect(gw.url("bitfinex")) for _ in bots]
        tasks = [tg.create_task(b.run(ws)) for b, ws in zip(bots, sockets, strict=True)]

        def caught_up(n: int = 3) -> bool:
            now = market.trade_id
            return all(b.trades and b.trades[-1] >= now - 1 for b in bots) and all(
                len(b.trades) >= n for b in bots
            )

        async def outage(trades_missed: int) -> None:
            """Drop every upstream connection and keep wsgate out while ``trades_missed``
            trades print; then let it back in."""
            start = market.trade_id
            bfx.faults.reject_handshakes(503, count=10_000)
            bfx.faults.drop()
            await until(lambda: market.trade_id >= start + trades_missed, "trades to print")
            bfx.faults.reject_handshakes(503, count=0)
            await until(caught_up, "the sessions to catch up after the outage")

        await until(lambda: caught_up(20), "trades to flow")
        # 1. A short outage: the exchange's snapshot covers it (bridged).
        await outage(8)
        # A late joiner after the resume gets one snapshot, then the live tape.
        late = Bot("late")
        bots.append(late)
        sockets.append(await connect(gw.url("bitfinex")))
        tasks.append(tg.create_task(late.run(sockets[-1])))
        await until(lambda: caught_up(5), "the late joiner")
        # 2. The exchange asks to reconnect: a make-before-break move.
        moves = hub.placement.moves_done
        bfx.faults.info(20051)
        await until(lambda: hub.placement.moves_done > moves, "the 20051 move")
        await until(caught_up, "the sessions after the move")
        # 3. Maintenance: no data, then every channel resubscribed.
        sub = next(iter(hub.registry.subscriptions()))
        channel = sub.upstream_id
        bfx.faults.info(20060)
        await until(
            lambda: hub.ups[sub.conn_id or ""].conn.state is ConnState.DEGRADED, "maintenance"
        )
        bfx.faults.info(20061)
        await until(
            lambda: sub.upstream_id not in (None, channel) and sub.state.value == "confirmed",
            "the resubscription after maintenance",
        )
        await until(caught_up, "the sessions after maintenance")
        # 4. An outage longer than the exchange's 30-trade snapshot: announced.
        await outage(45)
        end = market.trade_id + 10
        await until(lambda: all(b.trades and b.trades[-1] >= end for b in bots), "the end")
        for ws in sockets:
            await ws.close()
        for t in tasks:
            t.cancel()

    stats = hub.statistics()
    for b in bots:
        assert len(b.trades) == len(set(b.trades)), f"{b.name}: a trade arrived twice"
        assert b.trades == sorted(b.trades), f"{b.name}: trades out of order"
        assert len(b.updates) == len(set(b.updates)), f"{b.name}: a tu arrived twice"
        assert b.updates == sorted(b.updates), f"{b.name}: tu out of order"
        assert b.snapshots == 2, (b.name, b.snapshots)  # the first one and the announced gap
        # Contiguous except across the outage longer than the exchange's snapshot.
        assert b.jumps() == 1, (b.name, b.trades)
    assert stats.trade_resumes["announced"] == 1, stats.trade_resumes
    assert stats.trade_resumes["bridged"] >= 3, stats.trade_resumes
    assert stats.trades_bridged >= 8, stats.trades_bridged
    status = next(r for r in gw_status(gw)["routes"] if r["name"] == "bitfinex")
    assert status["trade_resumes"]["announced"] == 1


def gw_status(gw: Gateway) -> dict[str, Any]:
    from wsgate.control.api import status

    return status(gw.daemon)  # type: ignore[arg-type]


# ------------------------------------------------------------------ Binance trade / aggTrade


@dataclass
class BinanceBot:
    name: str
    path: str
    ids: list[int] = field(default_factory=list)

    async def run(self, ws: ClientConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            data = msg.get("data", msg)
            if data.get("e") == "trade":
                self.ids.append(data["t"])
            elif data.get("e") == "aggTrade":
                self.ids.append(data["a"])

    def jumps(self) -> int:
        return sum(1 for a, b in zip(self.ids, self.ids[1:], strict=False) if b != a + 1)


BINANCE_ROUTES = {
    name: Route("binance", rest=rest, backoff_initial=0.05, backoff_max=0.2, min_uptime=0)
    for name, rest in (("binance", True), ("plain", False))
}


def test_binance_trade_streams_never_repeat_and_bridge_gaps_from_rest() -> None:
    """Short outage: the missed trades come once from REST (``/trades``, ``/aggTrades``);
    an outage longer than what REST still has (the simulator keeps 30 trades), or a route
    without ``rest_url``: the gap is announced. Never an id twice, never out of order."""

    async def scenario() -> None:
        async with stack(BINANCE_ROUTES, binance_trades_rate=40.0, bitfinex=False) as (gw, sim):
            bnc = sim.binance
            market = bnc.markets["btcusdt"]
            bots = [
                BinanceBot(f"{route}{path}", f"{gw.url(route)}{path}")
                for route in ("binance", "plain")
                for path in ("/ws/btcusdt@trade", "/stream?streams=btcusdt@aggTrade")
            ]
            async with asyncio.TaskGroup() as tg:
                sockets = [await connect(b.path) for b in bots]
                tasks = [tg.create_task(b.run(ws)) for b, ws in zip(bots, sockets, strict=True)]

                def caught_up() -> bool:
                    return all(b.ids and len(b.ids) >= 5 for b in bots) and all(
                        b.ids[-1] >= _newest(b, market, bnc) - 1 for b in bots
                    )

                async def outage(trades_missed: int) -> None:
                    start = market.trade_id
                    bnc.faults.reject_handshakes(503, count=10_000)
                    bnc.faults.drop()
                    await until(lambda: market.trade_id >= start + trades_missed, "trades")
                    bnc.faults.reject_handshakes(503, count=0)
                    await until(caught_up, "the sessions after the outage")

                await until(caught_up, "trades to flow")
                await outage(8)
                await outage(45)
                end = market.trade_id + 5
                await until(lambda: all(_seen_trade(b, end, market, bnc) for b in bots), "end")
                for ws in sockets:
                    await ws.close()
                for t in tasks:
                    t.cancel()
            with_rest = gw.daemon.routes["binance"].hub
            without = gw.daemon.routes["plain"].hub
            assert with_rest is not None and without is not None
            for b in bots:
                assert len(b.ids) == len(set(b.ids)), f"{b.name}: a trade arrived twice"
                assert b.ids == sorted(b.ids), f"{b.name}: out of order"
                # With REST only the long outage leaves a gap; without, both do.
                assert b.jumps() == (1 if b.name.startswith("binance") else 2), (b.name, b.ids)
            rs = with_rest.statistics()
            assert rs.trade_resumes == {"bridged": 2, "announced": 2}, rs.trade_resumes
            assert rs.trades_bridged >= 2 * 8
            ps = without.statistics()
            assert ps.trade_resumes == {"bridged": 0, "announced": 4}, ps.trade_resumes

    asyncio.run(asyncio.wait_for(scenario(), 90))


def _newest(b: BinanceBot, market: Any, bnc: Any) -> int:
    """The newest id the exchange printed, in the bot's numbering (trade or aggTrade)."""
    if "aggTrade" in b.path:
        return int(bnc._agg_id["btcusdt"])
    return int(market.trade_id)


def _seen_trade(b: BinanceBot, trade: int, market: Any, bnc: Any) -> bool:
    offset = _newest(b, market, bnc) - market.trade_id
    return bool(b.ids) and b.ids[-1] >= trade + offset
