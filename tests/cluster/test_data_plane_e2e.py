"""The cluster data plane against a real NATS server, real daemons (subprocesses) and the
simulator: one upstream subscription per channel for the whole cluster, and failover.

The simulator runs in this process (a loop thread), so the test counts the subscribe
requests it receives for the channel; bots are real WebSocket clients on each node that
record every trade id their session gets.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import websockets

from tests.cluster.rig import NatsServer, Nodes, shared_route, wind_down
from tests.e2e.alert_rig import LoopThread
from tests.e2e.harness import DaemonProc, until, wait_until
from wsgate.sim import Simulator

LEASE_TTL = 3.0


def body(node_id: str, nats_url: str, sim: Simulator) -> str:
    return f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "dp"
heartbeat_interval = 0.5
node_down_after = 2.0
lease_ttl = {LEASE_TTL}
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
min_connections = 0
share = "cluster"
linger = 1
[[routes.bfx.endpoints]]
url = "{sim.bitfinex_url}"
"""


@dataclass
class Bot:
    """One bot session on one node: trades by id, snapshots and updates counted."""

    port: int
    ids: list[int] = field(default_factory=list)
    snapshots: int = 0
    closed: bool = False
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.run_at(f"ws://127.0.0.1:{self.port}/bfx")

    async def run_at(self, url: str) -> None:
        try:
            async with websockets.connect(url) as ws:
                await ws.send(
                    json.dumps({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"})
                )
                async for raw in ws:
                    msg = json.loads(raw)
                    if not isinstance(msg, list) or len(msg) < 2:
                        continue
                    if isinstance(
                        msg[1], list
                    ):  # snapshot: [chan, [[id, mts, amount, price], ...]]
                        self.snapshots += 1
                        self.ids.extend(int(t[0]) for t in msg[1])
                    elif msg[1] in ("te",):
                        self.ids.append(int(msg[2][0]))
        finally:
            self.closed = True

    def repeats(self) -> list[int]:
        seen: set[int] = set()
        out = []
        for i in self.ids:
            if i in seen:
                out.append(i)
            seen.add(i)
        return out


def share_of(d: DaemonProc) -> dict[str, Any]:
    """The route's ``cluster_share`` part of ``wsgate status --json``."""
    r = d.cli("status", "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    (route,) = json.loads(r.stdout)["routes"]
    assert route["share"] == "cluster"
    return dict(route["cluster_share"])


def subscribes(lt: LoopThread, sim: Simulator) -> int:
    return int(lt.call(lambda: getattr(sim.bitfinex, "subscribe_requests", 0)))


def live_subscriptions(lt: LoopThread, sim: Simulator) -> int:
    def count() -> int:
        return sum(len(f.subs) for k, f in sim.bitfinex.feeds.items() if "trades" in repr(k))

    return int(lt.call(count))


def counted_sim(lt: LoopThread) -> Simulator:
    """The simulator, counting the trades subscribe requests it receives."""
    sim = lt.start_sim(bitfinex_trades_rate=20.0)
    original = sim.bitfinex._subscribe
    sim.bitfinex.subscribe_requests = 0  # type: ignore[attr-defined]

    def counting(conn: Any, msg: dict[str, Any]) -> None:
        if msg.get("channel") == "trades":
            sim.bitfinex.subscribe_requests += 1  # type: ignore[attr-defined]
        original(conn, msg)

    sim.bitfinex._subscribe = counting  # type: ignore[method-assign]
    return sim


async def start(bot: Bot) -> None:
    bot.task = asyncio.get_running_loop().create_task(bot.run())


def finish(lt: LoopThread, sim: Simulator, bots: list[Bot]) -> None:
    async def end() -> None:
        for bot in bots:
            if bot.task is not None:
                bot.task.cancel()
        await asyncio.gather(*(b.task for b in bots if b.task), return_exceptions=True)
        await sim.close()

    lt.run(end())


class Pair(NamedTuple):
    lt: LoopThread
    nats: NatsServer
    sim: Simulator
    a: DaemonProc  # the owner
    b: DaemonProc  # a follower
    ba: Bot
    bb: Bot


@contextmanager
def owner_and_follower() -> Iterator[Pair]:
    """Nodes a and b sharing the trades channel: a's bot came first (a owns it), b's bot
    follows, and both have trades. The bots and the simulator end with it."""
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = counted_sim(lt)
        a = nodes.start("a", body("a", nats.url, sim))
        b = nodes.start("b", body("b", nats.url, sim))
        ba, bb = Bot(a.port), Bot(b.port)
        try:
            lt.run(start(ba))
            wait_until(lambda: len(ba.ids) > 5, 15, "trades on the owner")
            lt.run(start(bb))
            wait_until(lambda: len(bb.ids) > 5, 15, "trades on the follower")
            yield Pair(lt, nats, sim, a, b, ba, bb)
        finally:
            finish(lt, sim, [ba, bb])


def test_one_upstream_subscription_for_the_cluster_and_failover_after_kill() -> None:
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = counted_sim(lt)
        a = nodes.start("a", body("a", nats.url, sim))
        b = nodes.start("b", body("b", nats.url, sim))
        c = nodes.start("c", body("c", nats.url, sim))
        bots = {n: Bot(d.port) for n, d in (("a", a), ("b", b), ("c", c))}
        lt.run(start(bots["a"]))
        wait_until(lambda: len(bots["a"].ids) > 5, 15, "trades on the owner")
        lt.run(start(bots["b"]))
        lt.run(start(bots["c"]))
        wait_until(
            lambda: len(bots["b"].ids) > 10 and len(bots["c"].ids) > 10, 15, "trades on followers"
        )
        assert subscribes(lt, sim) == 1, "one subscription for the whole cluster"
        assert live_subscriptions(lt, sim) == 1
        for name in ("b", "c"):
            assert bots[name].snapshots == 1, name
            assert bots[name].repeats() == []
        assert share_of(a)["owned"] == 1 and share_of(a)["published"] > 0
        assert share_of(b)["followed"] == 1 and share_of(b)["received"] > 0
        # status --cluster on any node: who owns, who follows, side by side.
        r = c.cli("status", "--cluster", "--json", "--socket", c.socket)
        assert r.returncode == 0, r.stderr
        rows = {
            n["node_id"]: n["status"]["routes"][0]["cluster_share"]
            for n in json.loads(r.stdout)["nodes"]
        }
        assert {k: (v["owned"], v["followed"]) for k, v in rows.items()} == {
            "a": (1, 0),
            "b": (0, 1),
            "c": (0, 1),
        }
        r = c.cli("status", "--cluster", "--socket", c.socket)
        assert r.returncode == 0 and "1/0/0" in r.stdout and "0/1/0" in r.stdout, r.stdout

        before = {n: len(bots[n].ids) for n in ("b", "c")}
        killed_at = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        wait_until(lambda: subscribes(lt, sim) == 2, LEASE_TTL + 6, "a new owner subscribes")
        took = time.monotonic() - killed_at
        wait_until(
            lambda: all(len(bots[n].ids) > before[n] + 20 for n in ("b", "c")),
            15,
            "trades after the failover",
        )
        assert subscribes(lt, sim) == 2, "exactly one new subscription"
        for name in ("b", "c"):
            bot = bots[name]
            assert not bot.closed, f"{name}'s session survived"
            assert bot.repeats() == [], f"{name} got a trade twice"
            assert bot.snapshots <= 2, f"{name}: at most one announced gap"
        assert took <= LEASE_TTL + 1.0 + 1.0, f"failover took {took:.2f}s"
        print(
            f"failover {took:.2f}s; snapshots b={bots['b'].snapshots} c={bots['c'].snapshots}; "
            f"trades b={len(bots['b'].ids)} c={len(bots['c'].ids)}"
        )
        finish(lt, sim, list(bots.values()))


def test_nats_lost_nodes_subscribe_themselves_and_share_again_when_it_is_back() -> None:
    with owner_and_follower() as (lt, nats, sim, _, _, ba, bb):
        assert live_subscriptions(lt, sim) == 1
        lost_at = time.monotonic()
        nats.stop()
        wait_until(lambda: live_subscriptions(lt, sim) == 2, LEASE_TTL + 5, "the follower alone")
        took = time.monotonic() - lost_at
        n = len(bb.ids)
        wait_until(lambda: len(bb.ids) > n + 10, 10, "trades without NATS")
        nats.start()
        wait_until(lambda: live_subscriptions(lt, sim) == 1, 30, "sharing again")
        n = len(bb.ids), len(ba.ids)
        wait_until(lambda: len(bb.ids) > n[0] + 10 and len(ba.ids) > n[1] + 10, 10, "trades")
        for bot in (ba, bb):
            assert not bot.closed and bot.repeats() == []
            assert bot.snapshots <= 3  # the first, at most one gap each way
        assert took <= LEASE_TTL + 2.0, f"fallback took {took:.2f}s"
        print(f"fallback {took:.2f}s; snapshots a={ba.snapshots} b={bb.snapshots}")


def test_graceful_stop_hands_ownership_over_before_the_lease_would_expire() -> None:
    with owner_and_follower() as (lt, _, sim, a, b, _, bb):
        assert subscribes(lt, sim) == 1
        stopped_at = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: subscribes(lt, sim) == 2, LEASE_TTL + 5, "the successor subscribes")
        took = time.monotonic() - stopped_at
        assert a.proc.wait(15) == 0
        n = len(bb.ids)
        wait_until(lambda: len(bb.ids) > n + 10, 10, "trades from the successor")
        assert not bb.closed and bb.repeats() == [] and bb.snapshots == 1
        assert share_of(b)["owned"] == 1
        assert took < LEASE_TTL, f"hand-over took {took:.2f}s (the lease TTL is {LEASE_TTL}s)"
        print(f"hand-over {took:.2f}s; snapshots b={bb.snapshots}")


def test_a_follower_renders_books_per_session_with_valid_checksums() -> None:
    from tests.e2e.test_sharing_corners import _bots

    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = counted_sim(lt)
        a = nodes.start("a", body("a", nats.url, sim))
        b = nodes.start("b", body("b", nats.url, sim))

        async def scenario() -> None:
            (owner,) = await _bots(f"ws://127.0.0.1:{a.port}/bfx", 1)
            och = await owner.subscribe("book")
            tasks = [asyncio.create_task(owner.follow())]
            await until(lambda: len(owner.frames[och]) >= 10, 15)
            # On the follower, mid-stream: a checksum session and a seq+timestamp session.
            checks, flagged = await _bots(f"ws://127.0.0.1:{b.port}/bfx", 2)
            await checks.conf(131072)
            await flagged.conf(65536 + 32768)
            cch = await checks.subscribe("book")
            fch = await flagged.subscribe("book")
            tasks += [asyncio.create_task(x.follow()) for x in (checks, flagged)]
            await until(lambda: checks.books[cch].cs_ok >= 5 and len(flagged.frames[fch]) >= 40, 15)
            book = checks.books[cch]
            assert book.snapshots == 1 and book.cs_bad == 0  # the late joiner's snapshot
            frames = [f for _t, f in flagged.frames[fch]]
            assert isinstance(frames[0][1], list) and isinstance(frames[0][1][0], list)
            assert [int(f[-2]) for f in frames] == list(range(1, len(frames) + 1))
            assert checks.errors == flagged.errors == []
            assert sum(len(f.subs) for k, f in sim.bitfinex.feeds.items() if "book" in repr(k)) == 1
            for t in tasks:
                t.cancel()
            for x in (owner, checks, flagged):
                await x.ws.close()

        lt.run(scenario(), timeout=40)
        finish(lt, sim, [])


def test_an_owner_in_process_counts_its_keys_and_frames_in_metrics() -> None:
    from tests.simstack import Route, stack
    from wsgate.control.metrics_bots import BotSideCollector

    with NatsServer() as nats:

        async def scenario() -> None:
            extra = f'[cluster]\nengine = "nats"\nservers = ["{nats.url}"]\nname = "m"\n'
            routes = {"bitfinex": Route("bitfinex", share="cluster")}
            async with stack(routes, extra=extra, bitfinex_trades_rate=20.0) as (gw, _sim):
                bot = Bot(gw.daemon.gateway.port)
                task = asyncio.create_task(bot.run_at(gw.url("bitfinex")))
                await until(lambda: len(bot.ids) > 5, 15)
                fams = {m.name: m for m in BotSideCollector(gw.daemon).collect()}
                keys = {
                    s.labels["role"]: s.value for s in fams["wsgate_cluster_share_keys"].samples
                }
                assert keys == {"owned": 1, "followed": 0, "alone": 0}
                frames = {
                    s.labels["direction"]: s.value
                    for s in fams["wsgate_cluster_share_frames"].samples
                    if s.name.endswith("_total")
                }
                assert frames["published"] > 0 and frames["dropped"] == 0
                events = {
                    s.labels["event"]
                    for s in fams["wsgate_cluster_share_events"].samples
                    if s.name.endswith("_total")
                }
                assert events == {
                    *("gap", "takeover", "fallback", "handed_over", "taken_over"),
                    *("linked", "move_out", "move_in", "lease_watch"),
                }
                task.cancel()

        asyncio.run(scenario())


def test_an_owner_whose_bots_left_hands_the_key_over_before_it_unsubscribes() -> None:
    with owner_and_follower() as (lt, _, sim, a, b, ba, bb):

        async def leave() -> None:
            assert ba.task is not None
            ba.task.cancel()

        lt.run(leave())  # the owner's only bot leaves; the linger is 1 s
        wait_until(lambda: subscribes(lt, sim) == 2, LEASE_TTL + 5, "the successor subscribes")
        wait_until(lambda: live_subscriptions(lt, sim) == 1, 10, "the old owner unsubscribed")
        n = len(bb.ids)
        wait_until(lambda: len(bb.ids) > n + 10, 10, "trades from the successor")
        # make-before-break without a gap: no snapshot after the first, no trade twice.
        assert not bb.closed and bb.repeats() == [] and bb.snapshots == 1
        assert share_of(b)["owned"] == 1 and share_of(a)["owned"] == 0
        assert share_of(b)["taken_over"] == 1
        print(f"linger hand-over; snapshots b={bb.snapshots}")


def test_binance_depth_on_a_follower_stays_contiguous_across_a_kill_of_the_owner() -> None:
    from tests.e2e.test_sharing_corners import DEPTH, BookClient

    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = Simulator(bitfinex=False, binance_usdm=False, okx=False, bybit=False)
        lt.run(sim.start())
        route = shared_route(
            nats.url,
            "dpb",
            route="bn",
            dialect="binance",
            url=sim.binance_url,
            rest_url=sim.binance_rest_url,
            lease_ttl=LEASE_TTL,
        )
        a = nodes.start("a", route)
        b = nodes.start("b", route)
        bots: dict[str, BookClient] = {}
        tasks: list[asyncio.Task[None]] = []

        async def join(name: str, port: int) -> None:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/bn/ws/{DEPTH}")
            bot = bots[name] = BookClient(ws, False, f"http://127.0.0.1:{port}/bn")
            await bot.start()
            tasks.append(asyncio.get_running_loop().create_task(bot.follow()))

        lt.run(join("a", a.port), timeout=30)
        lt.run(join("b", b.port), timeout=30)
        wait_until(lambda: len(bots["b"].history) >= 10, 15, "depth on the follower")
        before = bots["b"].last_u
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        n = len(bots["b"].arrivals)
        wait_until(lambda: len(bots["b"].arrivals) > n + 30, LEASE_TTL + 15, "depth after")
        bot = bots["b"]
        assert bot.close_code is None, bot.close_code
        assert bot.violations == [], bot.violations  # U == previous u + 1 throughout
        assert bot.last_u is not None and before is not None and bot.last_u > before

        lt.run(wind_down(tasks, sim))
