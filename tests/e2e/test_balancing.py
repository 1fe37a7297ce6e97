"""Runtime balancing control with clients attached, counting messages end to end."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from tests.chaos.simthread import SimThread
from tests.e2e.harness import run_daemon, wait_until


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
            for _ in range(200):
                if len(ids) > 35:
                    break
                await asyncio.sleep(0.05)
            routes = json.loads(d.cli("routes", "--json", "--socket", d.socket).stdout)
            home = routes[0]["subscriptions"][0]["connection"]
            r = d.cli("connections", "drain", home, "--socket", d.socket)
            assert r.returncode == 0, r.stderr
            for _ in range(300):
                routes = json.loads(d.cli("routes", "--json", "--socket", d.socket).stdout)
                subs = routes[0]["subscriptions"]
                if subs and subs[0]["connection"] not in (None, home):
                    break
                await asyncio.sleep(0.1)
            before = len(set(ids))
            for _ in range(200):
                if len(set(ids)) > before + 8:
                    break
                await asyncio.sleep(0.05)
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

        def homes() -> list[str]:
            routes = json.loads(d.cli("routes", "--json", "--socket", d.socket).stdout)
            return [s["connection"] for s in routes[0]["subscriptions"]]

        async def scenario() -> list[str]:
            stop = asyncio.Event()
            task = asyncio.create_task(bot(stop))
            for _ in range(200):
                if len(homes()) == 6 and None not in homes() and len(ids["tBTCUSD"]) > 30:
                    break
                await asyncio.sleep(0.1)
            assert len(set(homes())) == 1  # everything on the only connection
            d.config.write_text(
                d.config.read_text().replace("min_connections = 1", "min_connections = 2")
            )
            assert d.cli("reload", "--socket", d.socket).returncode == 0
            for _ in range(200):
                rows = json.loads(d.cli("connections", "--json", "--socket", d.socket).stdout)
                if sum(r["state"] == "open" for r in rows) == 2:
                    break
                await asyncio.sleep(0.1)
            plan = json.loads(
                d.cli("rebalance", "--dry-run", "--json", "--socket", d.socket).stdout
            )
            assert plan["moves"], "a 6/0 split must produce a plan"
            assert d.cli("rebalance", "--socket", d.socket).returncode == 0
            for _ in range(200):
                if len(set(homes())) == 2 and None not in homes():
                    break
                await asyncio.sleep(0.1)
            counts = {sym: len(set(v)) for sym, v in ids.items()}
            for _ in range(100):  # keep counting a little after the moves
                if all(len(set(v)) > counts[sym] + 5 for sym, v in ids.items()):
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await task
            return homes()

        final = asyncio.run(scenario())
        assert len(set(final)) == 2
        for sym, seen in ids.items():
            unique = sorted(set(seen))
            assert unique == list(range(unique[0], unique[-1] + 1)), sym
        assert "rebalance by uid" in d.logs()
