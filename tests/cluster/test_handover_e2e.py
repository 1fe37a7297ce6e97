"""Hand-overs from a live owner without a gap, and ownership spread: real nats-server, real
daemons (subprocesses), the simulator in this process counting subscribes and
unsubscribes, real bots checking every frame they get (per-session sequence +1, trade
ids contiguous and never twice, book checksums)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from typing import Any

from tests.cluster.rig import NatsServer, Nodes, shared_route, wind_down
from tests.cluster.test_data_plane_e2e import LEASE_TTL, body, share_of
from tests.e2e.alert_rig import LoopThread
from tests.e2e.harness import until, wait_until
from tests.e2e.test_sharing_corners import BfxBot, _bots
from wsgate.control.client import ControlClient
from wsgate.sim import Simulator

SEQ = 65536  # Bitfinex conf flag: a per-session sequence number on every frame
CHECKSUM = 131072


def counting_sim(lt: LoopThread, rate: float = 40.0, **kw: Any) -> Simulator:
    """The simulator, logging every subscribe and unsubscribe request in order."""
    sim = lt.start_sim(bitfinex_trades_rate=rate, **kw)
    log: list[tuple[str, str]] = []
    sim.bitfinex.requests = log  # type: ignore[attr-defined]
    sub, unsub = sim.bitfinex._subscribe, sim.bitfinex._unsubscribe

    def on_sub(conn: Any, msg: dict[str, Any]) -> None:
        log.append(("subscribe", f"{msg.get('channel')}|{msg.get('symbol')}"))
        sub(conn, msg)

    def on_unsub(conn: Any, msg: dict[str, Any]) -> None:
        held = conn.subs.get(msg.get("chanId"))
        log.append(("unsubscribe", str(held.feed.key) if held is not None else "?"))
        unsub(conn, msg)

    sim.bitfinex._subscribe = on_sub  # type: ignore[method-assign]
    sim.bitfinex._unsubscribe = on_unsub  # type: ignore[method-assign]
    return sim


def requests(sim: Simulator) -> list[tuple[str, str]]:
    """From the loop thread (inside a scenario)."""
    return list(sim.bitfinex.requests)  # type: ignore[attr-defined]


def trades_of(bot: BfxBot, chan: int) -> tuple[list[int], int]:
    """(trade ids in order, snapshots after the first frame) of one trades channel. The
    frames before the bot's last subscribe acknowledgement were read while waiting for it:
    the record may start later than the channel did."""
    ids: list[int] = []
    snaps = 0
    for i, (_t, f) in enumerate(bot.frames.get(chan, [])):
        if isinstance(f[1], list):
            snaps += i > 0
            ids.extend(int(t[0]) for t in reversed(f[1]))
        elif f[1] == "te":
            ids.append(int(f[2][0]))
    return ids, snaps


def check_session(name: str, bot: BfxBot, since: dict[int, int]) -> int:
    """A session's sequence numbers run across all its channels: +1 from ``since`` on."""
    seqs = sorted(int(f[-1]) for c, fs in bot.frames.items() for _t, f in fs[since.get(c, 0) :])
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{name}: sequence not +1"
    return len(seqs)


def check_trades(name: str, bot: BfxBot, chan: int) -> int:
    ids, snaps = trades_of(bot, chan)
    assert snaps == 0, f"{name}: {snaps} snapshots after the first"
    assert len(set(ids)) == len(ids), f"{name}: a trade twice"
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"{name}: a trade missing"
    return len(ids)


def test_graceful_stop_of_the_owner_no_snapshot_no_repeat_no_missing_trade() -> None:
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = counting_sim(lt)
        a = nodes.start("a", body("a", nats.url, sim))
        b = nodes.start("b", body("b", nats.url, sim))
        c = nodes.start("c", body("c", nats.url, sim))

        followers: dict[str, tuple[BfxBot, int, BfxBot, int]] = {}
        tasks: list[asyncio.Task[None]] = []

        async def bots() -> None:
            (owner,) = await _bots(f"ws://127.0.0.1:{a.port}/bfx", 1)
            och = await owner.subscribe("trades", symbol="tBTCUSD")
            await owner.subscribe("book", symbol="tBTCUSD")
            tasks.append(asyncio.create_task(owner.follow()))
            await until(lambda: len(owner.frames[och]) >= 5, 15)
            for name, d in (("b", b), ("c", c)):
                trades, book = await _bots(f"ws://127.0.0.1:{d.port}/bfx", 2)
                await trades.conf(SEQ)
                await book.conf(CHECKSUM)
                tch = await trades.subscribe("trades", symbol="tBTCUSD")
                bch = await book.subscribe("book", symbol="tBTCUSD")
                tasks.extend(asyncio.create_task(x.follow()) for x in (trades, book))
                followers[name] = (trades, tch, book, bch)
            await until(
                lambda: all(
                    len(t.frames[tc]) >= 20 and bk.books[bc].cs_ok >= 2
                    for t, tc, bk, bc in followers.values()
                ),
                20,
            )

        lt.run(bots(), timeout=60)
        # Two keys, three nodes: the spread hands one (the book, first by name) to a
        # follower, make-before-break; the graceful stop then hands over the other.
        wait_until(lambda: share_of(a)["owned"] == 1, 15, "one key spread")
        wait_until(lambda: share_of(b)["owned"] + share_of(c)["owned"] == 1, 15, "taken")

        async def stop() -> dict[str, Any]:
            before = len(requests(sim))
            stopped = time.monotonic()
            a.proc.send_signal(signal.SIGTERM)
            await until(lambda: a.proc.poll() is not None, 20, "the owner stopped")
            took = time.monotonic() - stopped
            counts = {n: len(t.frames[tc]) for n, (t, tc, _b, _c) in followers.items()}
            await until(
                lambda: all(
                    len(t.frames[tc]) >= counts[n] + 40 and bk.books[bc].cs_ok >= 6
                    for n, (t, tc, bk, bc) in followers.items()
                ),
                20,
            )
            out: dict[str, Any] = {"took": took, "requests": requests(sim)[before:]}
            for name, (t, tc, bk, bc) in followers.items():
                out[name] = check_trades(name, t, tc)
                check_session(name, t, {})
                book = bk.books[bc]
                assert book.snapshots == 1 and book.cs_bad == 0, (name, book)
                assert t.errors == bk.errors == []
                assert not any(e.get("event") == "error" for e in t.events)
            for x in tasks:
                x.cancel()
            return out

        out = lt.run(stop(), timeout=60)
        # make-before-break: the successor's one subscribe of the trades came first.
        kinds = [k for k, n in out["requests"] if n.startswith("trades")]
        assert kinds[:1] == ["subscribe"] and kinds.count("subscribe") == 1, out["requests"]
        assert not any(n.startswith("book") for _k, n in out["requests"]), out["requests"]
        # Two keys, two nodes left: a spread would count the stopped node and move a key
        # for nothing (then both nodes counted it while it changed hands).
        shares = {n: share_of(d) for n, d in (("b", b), ("c", c))}
        assert sum(s["moves_out"] for s in shares.values()) == 0, shares
        owners = sorted(s["owned"] for s in shares.values())
        assert owners in ([1, 1], [0, 2]), shares
        # Both keys continued without a gap (the spread and the stop), and nobody needed a
        # takeover from a lost owner.
        assert sum(share_of(d)["taken_over"] for d in (b, c)) >= 2
        assert sum(share_of(d)["takeovers"] + share_of(d)["gaps"] for d in (b, c)) == 0
        assert sum(share_of(d)["linked"] for d in (b, c)) >= 2  # the other follower, twice
        print(f"graceful hand-over: stop took {out['took']:.2f}s; trades b={out['b']} c={out['c']}")
        lt.run(sim.close())


def test_a_node_owning_ten_keys_spreads_them_to_two_joining_nodes_without_a_gap() -> None:
    symbols = [f"t{c * 3}USD" for c in "ABCDEFGHIJ"]
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = counting_sim(lt, rate=8.0, bitfinex_symbols=symbols)
        a = nodes.start("a", body("a", nats.url, sim))
        tasks: list[asyncio.Task[None]] = []

        async def owner_bot() -> None:
            (owner,) = await _bots(f"ws://127.0.0.1:{a.port}/bfx", 1)
            await owner.conf(SEQ)
            chans = {s: await owner.subscribe("trades", symbol=s) for s in symbols}
            tasks.append(asyncio.create_task(owner.follow()))
            bots["a"] = (owner, chans)
            since["a"] = {c: len(fs) for c, fs in owner.frames.items()}

        bots: dict[str, tuple[BfxBot, dict[str, int]]] = {}
        since: dict[str, dict[int, int]] = {}  # frames read before the last subscribe ack
        lt.run(owner_bot(), timeout=30)
        wait_until(lambda: share_of(a)["owned"] == 10, 20, "a owns the ten keys")
        joined = {n: nodes.start(n, body(n, nats.url, sim)) for n in ("b", "c")}

        async def joining_bots() -> int:
            for name, d in joined.items():
                (bot,) = await _bots(f"ws://127.0.0.1:{d.port}/bfx", 1)
                await bot.conf(SEQ)
                chans = {s: await bot.subscribe("trades", symbol=s) for s in symbols}
                tasks.append(asyncio.create_task(bot.follow()))
                bots[name] = (bot, chans)
            for name, (bot, _ch) in bots.items():
                if name != "a":
                    since[name] = {c: len(fs) for c, fs in bot.frames.items()}
            return len(requests(sim))

        try:
            start = lt.run(joining_bots(), timeout=30)
        except BaseException:
            for d in (a, *joined.values()):
                print(d.logs()[-5000:])
            raise
        every = (a, *joined.values())

        def spread() -> bool:
            owned = [share_of(d)["owned"] for d in every]
            return max(owned) - min(owned) <= 1 and sum(owned) == 10

        wait_until(spread, 60, "ownership spread")

        async def check() -> dict[str, Any]:
            marks = {n: {s: len(b.frames[c]) for s, c in ch.items()} for n, (b, ch) in bots.items()}
            await until(
                lambda: all(
                    len(b.frames[c]) >= marks[n][s] + 3
                    for n, (b, ch) in bots.items()
                    for s, c in ch.items()
                ),
                30,
            )
            for name, (bot, chans) in bots.items():
                check_session(name, bot, since[name])
                for s, chan in chans.items():
                    check_trades(f"{name}/{s}", bot, chan)
            for x in tasks:
                x.cancel()
            return {"requests": requests(sim)[start:]}

        out = lt.run(check(), timeout=60)
        owned = {n: share_of(d)["owned"] for n, d in (("a", a), *joined.items())}
        moves = sum(share_of(d)["moves_in"] for d in joined.values())
        assert moves >= 5 and share_of(a)["moves_out"] == moves, (owned, moves)
        # Each move: the target's one subscribe, then the old owner's one unsubscribe.
        reqs = out["requests"]
        assert sum(1 for k, _ in reqs if k == "subscribe") == moves, reqs
        assert sum(1 for k, _ in reqs if k == "unsubscribe") == moves, reqs
        for sym in symbols:
            mine = [k for k, n in reqs if sym in n]
            for i in range(0, len(mine), 2):
                assert mine[i : i + 2] == ["subscribe", "unsubscribe"], (sym, mine)
        r = a.cli("status", "--cluster", "--socket", a.socket)
        assert r.returncode == 0 and "(moved" in r.stdout, r.stdout  # (moved N out, 0 in)
        # Each move is an event on the node that gave the key away: key, from, to, why.
        with ControlClient(a.socket, timeout=10) as client:
            events = [e for e in client.call("events.recent") if e["kind"] == "cluster_move"]
        assert len(events) == moves, events
        for e in events:
            data = e["data"]
            assert data["from"] == "a" and data["to"] in ("b", "c") and data["route"] == "bfx"
            assert "bitfinex:trades:" in data["key"] and "a owns" in data["why"], data
        print(f"spread: {owned} after {moves} moves")
        print(r.stdout)
        lt.run(sim.close())


def test_binance_depth_and_trades_continue_across_a_graceful_stop_of_the_owner() -> None:
    """Binance streams have no snapshot to rebase: the successor's held diff-depth events
    continue U == previous u + 1 from what its bots last got, and trade ids continue."""
    import websockets

    from tests.e2e.test_sharing_corners import DEPTH, BookClient

    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = Simulator(bitfinex=False, binance_usdm=False, okx=False, bybit=False)
        lt.run(sim.start())
        route = shared_route(
            nats.url,
            "dpg",
            route="bn",
            dialect="binance",
            url=sim.binance_url,
            rest_url=sim.binance_rest_url,
            lease_ttl=LEASE_TTL,
        )
        a = nodes.start("a", route)
        b = nodes.start("b", route)
        books: dict[str, BookClient] = {}
        trades: dict[str, list[int]] = {"a": [], "b": []}
        tasks: list[asyncio.Task[None]] = []

        async def trade_bot(name: str, port: int) -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/bn/ws/btcusdt@trade") as ws:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("e") == "trade":
                        trades[name].append(int(msg["t"]))

        async def join(name: str, port: int) -> None:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/bn/ws/{DEPTH}")
            bot = books[name] = BookClient(ws, False, f"http://127.0.0.1:{port}/bn")
            await bot.start()
            loop = asyncio.get_running_loop()
            tasks.append(loop.create_task(bot.follow()))
            tasks.append(loop.create_task(trade_bot(name, port)))

        lt.run(join("a", a.port), timeout=30)
        lt.run(join("b", b.port), timeout=30)
        wait_until(lambda: len(books["b"].history) >= 10 and len(trades["b"]) >= 5, 15, "data")
        before = books["b"].last_u
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(15) == 0
        n, t = len(books["b"].arrivals), len(trades["b"])
        wait_until(
            lambda: len(books["b"].arrivals) > n + 20 and len(trades["b"]) > t + 10,
            15,
            "depth and trades from the successor",
        )
        bot = books["b"]
        assert bot.close_code is None, bot.close_code
        assert bot.violations == [], bot.violations  # U == previous u + 1 throughout
        assert bot.last_u is not None and before is not None and bot.last_u > before
        ids = trades["b"]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a trade missing or twice"
        assert share_of(b)["taken_over"] == 2 and share_of(b)["owned"] == 2

        lt.run(wind_down(tasks, sim))


def test_okx_books_across_a_graceful_stop_continue_the_seq_chain_without_a_snapshot() -> None:
    """OKX books carry the exchange's seqId (the book's, on every connection): the new
    subscription's snapshot becomes one update chained on the bots' last seqId (or is
    dropped when older), so the chain holds with no second snapshot; trades never repeat."""
    import websockets

    from tests.e2e.test_okx import PUBLIC, _book_chain_ok, sub

    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = Simulator(seed=3, bitfinex=False, binance=False, binance_usdm=False, bybit=False)
        lt.run(sim.start())
        route = shared_route(
            nats.url, "dpo", route="okx", dialect="okx", url=sim.okx_url, lease_ttl=LEASE_TTL
        )
        a = nodes.start("a", route)
        b = nodes.start("b", route)
        books: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        trades: dict[str, list[int]] = {"a": [], "b": []}
        tasks: list[asyncio.Task[None]] = []

        async def bot(name: str, port: int) -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/okx{PUBLIC}") as ws:
                await ws.send(sub(("books", "BTC-USDT"), ("trades", "BTC-USDT")))
                async for raw in ws:
                    m = json.loads(raw)
                    if not isinstance(m, dict) or "data" not in m:
                        continue
                    if m["arg"]["channel"] == "books":
                        books[name].append(m)
                    else:
                        trades[name].extend(int(t["tradeId"]) for t in m["data"])

        async def join() -> None:
            loop = asyncio.get_running_loop()
            tasks.append(loop.create_task(bot("a", a.port)))
            await until(lambda: len(books["a"]) >= 5, 15)
            tasks.append(loop.create_task(bot("b", b.port)))

        lt.run(join(), timeout=30)
        wait_until(lambda: len(books["b"]) >= 10 and share_of(b)["followed"] == 2, 15, "b")
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(15) == 0
        n = len(books["b"])
        wait_until(lambda: len(books["b"]) > n + 20, 15, "books from the successor")
        snapshots = _book_chain_ok(lt.call(lambda: list(books["b"])))
        assert snapshots == 1, snapshots  # the first only: no announced gap
        ids = lt.call(lambda: list(trades["b"]))
        assert len(set(ids)) == len(ids), "a trade twice"
        assert share_of(b)["owned"] == 2 and share_of(b)["taken_over"] == 2
        print(f"okx hand-over: no snapshot, chain held, {len(ids)} trades")

        lt.run(wind_down(tasks, sim))


def test_bybit_books_across_a_graceful_stop_continue_without_a_snapshot() -> None:
    """Bybit's ``u`` is the book's on every connection: the successor's snapshot becomes one
    delta (or is dropped when older), so bots see ``u`` move forward and no second
    snapshot; their book equals a fresh late joiner's at the same ``u``."""
    import websockets

    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = Simulator(seed=3, bitfinex=False, binance=False, binance_usdm=False, okx=False)
        lt.run(sim.start())
        route = shared_route(
            nats.url, "dpy", route="bybit", dialect="bybit", url=sim.bybit_url, lease_ttl=LEASE_TTL
        )
        a = nodes.start("a", route)
        b = nodes.start("b", route)
        frames: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        tasks: list[asyncio.Task[None]] = []
        topic = "orderbook.50.BTCUSDT"

        async def bot(name: str, port: int) -> None:
            url = f"ws://127.0.0.1:{port}/bybit/v5/public/linear"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))
                async for raw in ws:
                    m = json.loads(raw)
                    if isinstance(m, dict) and m.get("topic") == topic:
                        frames[name].append(m)

        async def join() -> None:
            loop = asyncio.get_running_loop()
            tasks.append(loop.create_task(bot("a", a.port)))
            await until(lambda: len(frames["a"]) >= 5, 15)
            tasks.append(loop.create_task(bot("b", b.port)))

        lt.run(join(), timeout=30)
        wait_until(lambda: len(frames["b"]) >= 10 and share_of(b)["followed"] == 1, 15, "b")
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(15) == 0
        n = len(frames["b"])
        wait_until(lambda: len(frames["b"]) > n + 20, 15, "books from the successor")

        async def late_joiner() -> dict[str, Any]:
            url = f"ws://127.0.0.1:{b.port}/bybit/v5/public/linear"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))
                async for raw in ws:
                    m = json.loads(raw)
                    if isinstance(m, dict) and m.get("topic") == topic:
                        return dict(m)
            raise AssertionError("no snapshot")

        snap = lt.run(late_joiner(), timeout=15)
        assert snap["type"] == "snapshot"
        at = int(snap["data"]["u"])
        wait_until(lambda: any(int(m["data"]["u"]) >= at for m in frames["b"]), 10, "u")
        got = lt.call(lambda: list(frames["b"]))
        assert [m["type"] for m in got].count("snapshot") == 1 and got[0]["type"] == "snapshot"
        us = [int(m["data"]["u"]) for m in got]
        assert all(x < y for x, y in itertools.pairwise(us)), "u must move forward"
        # The bot's book at that u is the gateway's book a late joiner gets (top 50).
        book: dict[str, dict[str, str]] = {"b": {}, "a": {}}
        for m in got[: us.index(at) + 1]:
            for side in ("b", "a"):
                if m["type"] == "snapshot":
                    book[side] = {}
                for price, size in m["data"][side]:
                    if float(size) == 0:
                        book[side].pop(price, None)
                    else:
                        book[side][price] = size
        for side, rev in (("b", True), ("a", False)):
            top = sorted(book[side].items(), key=lambda kv: float(kv[0]), reverse=rev)[:50]
            assert [list(kv) for kv in top] == snap["data"][side], side
        assert share_of(b)["owned"] == 1 and share_of(b)["taken_over"] == 1
        print(f"bybit hand-over: no snapshot, u forward over {len(us)} frames")

        lt.run(wind_down(tasks, sim))
