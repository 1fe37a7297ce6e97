"""Runtime balancing control with clients attached, counting messages end to end."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from tests.chaos.simthread import SimThread
from tests.e2e.harness import run_daemon, until, wait_until


def _bitfinex_route(url: str, *, min_connections: int = 2, per_conn: int = 25) -> str:
    return f"""
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
strategy = "round_robin"
min_connections = {min_connections}
max_subscriptions_per_connection = {per_conn}
[[routes.bitfinex.endpoints]]
url = "{url}"
"""


async def _collect_trades(port: int, stop: asyncio.Event, ids: list[int]) -> None:
    async with connect(f"ws://127.0.0.1:{port}/bitfinex") as ws:
        await ws.send(json.dumps({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"}))
        while not stop.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            if not isinstance(msg, list) or msg[1] == "hb":
                continue
            if isinstance(msg[1], list):  # snapshot: [[id, mts, amount, price], ...]
                ids.extend(t[0] for t in msg[1])
            elif msg[1] == "te":
                ids.append(msg[2][0])


def test_drain_moves_subscription_without_losing_a_trade() -> None:
    with SimThread(seed=3) as st, run_daemon(_bitfinex_route(st.sim.bitfinex_url)) as d:
        wait_until(lambda: d.status()["routes"][0]["connections"]["up"] == 2, 15, "2 open")
        ids: list[int] = []

        async def scenario() -> str:
            stop = asyncio.Event()
            task = asyncio.create_task(_collect_trades(d.port, stop, ids))
            await until(lambda: len(ids) > 35, 10, "36 trades")
            routes = await d.ajson("routes")
            home = routes[0]["subscriptions"][0]["connection"]
            r = await d.acli("connections", "drain", home, "--socket", d.socket)
            assert r.returncode == 0, r.stderr

            async def moved() -> bool:
                subs = (await d.ajson("routes"))[0]["subscriptions"]
                return bool(subs) and subs[0]["connection"] not in (None, home)

            await until(moved, 30, "the subscription on another connection", every=0.1)
            before = len(set(ids))
            await until(lambda: len(set(ids)) > before + 8, 10, "trades after the move")
            stop.set()
            await task
            return str(home)

        home = asyncio.run(scenario())
        unique = sorted(set(ids))
        assert len(unique) > 38
        # Contiguous ids: the move's fresh snapshot covers whatever was in flight.
        assert unique == list(range(unique[0], unique[-1] + 1))
        conns = json.loads(d.cli("connections", "--json", "--socket", d.socket).stdout)
        assert home not in {c["id"] for c in conns if c["state"] == "open"}


def test_weight_and_strategy_survive_reload_and_dry_run_plans() -> None:
    with SimThread(seed=4) as st, run_daemon(_bitfinex_route(st.sim.bitfinex_url)) as d:
        routes = json.loads(d.cli("routes", "--json", "--socket", d.socket).stdout)
        endpoint = routes[0]["endpoints"][0]["name"]
        assert (
            d.cli("routes", "weight", "bitfinex", endpoint, "3", "--socket", d.socket).returncode
            == 0
        )
        r = d.cli("routes", "strategy", "bitfinex", "least_latency", "--socket", d.socket)
        assert r.returncode == 0, r.stderr
        bad = d.cli("routes", "strategy", "bitfinex", "fastest", "--socket", d.socket)
        assert bad.returncode == 2 and "least_latency" in bad.stderr
        assert d.cli("reload", "--socket", d.socket).returncode == 0
        routes = json.loads(d.cli("routes", "--json", "--socket", d.socket).stdout)
        assert routes[0]["strategy"] == "least_latency"
        assert routes[0]["endpoints"][0]["weight"] == 3
        plan = json.loads(d.cli("rebalance", "--dry-run", "--json", "--socket", d.socket).stdout)
        assert plan["dry_run"] is True and plan["moves"] == []
        assert "drained by uid" not in d.logs()
        assert "strategy least_latency by uid" in d.logs()


def test_operator_rebalance_spreads_subscriptions_without_losing_trades() -> None:
    route = _bitfinex_route("{url}", min_connections=1)
    with SimThread(seed=6) as st, run_daemon(route.format(url=st.sim.bitfinex_url)) as d:
        ids: dict[str, list[int]] = {"tBTCUSD": [], "tETHUSD": []}

        async def bot(stop: asyncio.Event) -> None:
            async with connect(f"ws://127.0.0.1:{d.port}/bitfinex") as ws:
                chans: dict[int, str] = {}
                for sym in ids:
                    for channel in ("trades", "ticker", "book"):
                        await ws.send(
                            json.dumps({"event": "subscribe", "channel": channel, "symbol": sym})
                        )
                while not stop.is_set():
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    if isinstance(msg, dict):
                        if msg.get("event") == "subscribed" and msg["channel"] == "trades":
                            chans[msg["chanId"]] = msg["symbol"]
                        continue
                    sym = chans.get(msg[0])
                    if sym is None or msg[1] == "hb":
                        continue
                    if isinstance(msg[1], list):
                        ids[sym].extend(t[0] for t in msg[1])
                    elif msg[1] == "te":
                        ids[sym].append(msg[2][0])

        async def homes() -> list[str]:
            routes = await d.ajson("routes")
            return [s["connection"] for s in routes[0]["subscriptions"]]

        async def all_placed_on(n: int) -> bool:
            h = await homes()
            return len(h) == 6 and None not in h and len(set(h)) == n

        async def two_open() -> bool:
            return sum(r["state"] == "open" for r in await d.ajson("connections")) == 2

        async def scenario() -> list[str]:
            stop = asyncio.Event()
            task = asyncio.create_task(bot(stop))
            await until(lambda: len(ids["tBTCUSD"]) > 30, 20, "31 trades")
            # everything on the only connection
            await until(lambda: all_placed_on(1), 20, "6 subscriptions placed", every=0.1)
            d.config.write_text(
                d.config.read_text().replace("min_connections = 1", "min_connections = 2")
            )
            assert (await d.acli("reload", "--socket", d.socket)).returncode == 0
            await until(two_open, 20, "2 open connections", every=0.1)
            plan = await d.ajson("rebalance", "--dry-run")
            assert plan["moves"], "a 6/0 split must produce a plan"
            assert (await d.acli("rebalance", "--socket", d.socket)).returncode == 0
            await until(lambda: all_placed_on(2), 20, "a 2-way split", every=0.1)
            counts = {sym: len(set(v)) for sym, v in ids.items()}
            await until(  # keep counting a little after the moves
                lambda: all(len(set(v)) > counts[sym] + 5 for sym, v in ids.items()),
                10,
                "trades on both symbols after the moves",
            )
            stop.set()
            await task
            return await homes()

        final = asyncio.run(scenario())
        assert len(set(final)) == 2
        for sym, seen in ids.items():
            unique = sorted(set(seen))
            assert unique == list(range(unique[0], unique[-1] + 1)), sym
        assert "rebalance by uid" in d.logs()
