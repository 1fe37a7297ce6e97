"""kill -9 of the follower a spread move hands a key to, in the middle of the move: real
nats-server, three daemons (subprocesses), the simulator counting what the exchange sees,
real bots on every node checking what they get."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from tests.cluster.rig import NatsServer, Nodes
from tests.cluster.test_data_plane_e2e import body, share_of
from tests.cluster.test_handover_e2e import SEQ, check_session, counting_sim
from tests.e2e.alert_rig import LoopThread
from tests.e2e.harness import until, wait_until
from tests.e2e.test_sharing_corners import BfxBot, _bots
from wsgate.sim import Simulator


def trade_gaps(name: str, bot: BfxBot, chan: int) -> int:
    """Snapshots after the first (announced gaps) of one trades channel; asserts that no
    trade id comes twice and that ids jump only at a snapshot (no silent gap)."""
    seen: set[int] = set()
    last: int | None = None
    snaps = 0
    for i, (_t, f) in enumerate(bot.frames.get(chan, [])):
        if isinstance(f[1], list):
            ids = [int(t[0]) for t in reversed(f[1])]
            snaps += i > 0
            fresh = [t for t in ids if t not in seen]
            assert i == 0 or fresh == [t for t in ids if last is None or t > last], (name, ids)
        elif f[1] == "te":
            ids = [int(f[2][0])]
            assert last is None or ids[0] == last + 1, f"{name}: trade {last} then {ids[0]}"
        else:
            continue
        assert not seen.intersection(ids), f"{name}: a trade twice"
        seen.update(ids)
        last = max(seen)
    return snaps


def live_trades_subscriptions(lt: LoopThread, sim: Simulator) -> dict[str, int]:
    def count() -> dict[str, int]:
        return {repr(k): len(f.subs) for k, f in sim.bitfinex.feeds.items() if "trades" in repr(k)}

    return dict(lt.call(count))


def test_kill_9_of_the_target_of_a_spread_move_leaves_one_owner_per_key_and_no_repeat() -> None:
    symbols = [f"t{c * 3}USD" for c in "ABCD"]
    with LoopThread() as lt, NatsServer() as nats, Nodes() as nodes:
        sim = counting_sim(lt, rate=8.0, bitfinex_symbols=symbols)
        # The first subscribe after the other nodes join is a spread move's (followers
        # subscribe nothing upstream): it is held unanswered, so the move is in flight
        # (the target holds the lease, the old owner still publishes) when the target dies.
        held: list[dict[str, Any]] = []
        hold = {"on": False}
        forward = sim.bitfinex._subscribe

        def on_sub(conn: Any, msg: dict[str, Any]) -> None:
            if hold["on"]:
                held.append(msg)
                return
            forward(conn, msg)

        sim.bitfinex._subscribe = on_sub  # type: ignore[method-assign]
        a = nodes.start("a", body("a", nats.url, sim))
        bots: dict[str, tuple[BfxBot, dict[str, int]]] = {}
        tasks: dict[str, list[asyncio.Task[None]]] = {}

        async def join(name: str, port: int) -> None:
            (bot,) = await _bots(f"ws://127.0.0.1:{port}/bfx", 1)
            await bot.conf(SEQ)
            chans = {s: await bot.subscribe("trades", symbol=s) for s in symbols}
            tasks[name] = [asyncio.create_task(bot.follow())]
            bots[name] = (bot, chans)

        lt.run(join("a", a.port), timeout=30)
        wait_until(lambda: share_of(a)["owned"] == 4, 20, "a owns the four keys")
        hold["on"] = True
        joined = {n: nodes.start(n, body(n, nats.url, sim)) for n in ("b", "c")}
        for name, d in joined.items():
            lt.run(join(name, d.port), timeout=30)
        wait_until(lambda: lt.call(lambda: len(held)) >= 1, 30, "a spread move's subscribe")
        (target,) = [n for n, d in joined.items() if share_of(d)["moves_in"] >= 1]
        joined[target].proc.send_signal(signal.SIGKILL)
        joined[target].proc.wait(10)
        lt.call(lambda: hold.update(on=False))
        for x in tasks.pop(target):
            x.cancel()
        bots.pop(target)
        survivors = {"a": a, **{n: d for n, d in joined.items() if n != target}}
        print(f"killed {target} during the move of {held[0]}")

        def settled() -> bool:
            shares = {n: share_of(d) for n, d in survivors.items()}
            subs = live_trades_subscriptions(lt, sim)
            return (
                sum(s["owned"] for s in shares.values()) == 4
                and not any(s["handing"] for s in shares.values())
                and len(subs) == 4
                and all(n == 1 for n in subs.values())
                # b is down: the spread goes on to the node left (4 keys, 2 nodes).
                and all(s["owned"] >= 1 for s in shares.values())
            )

        # The moved key: its lease names the dead target, which never cuts the old
        # owner's stream; the follower left takes it over once the lease lapsed.
        wait_until(settled, 60, "one owner and one exchange subscription per key")

        async def check() -> dict[str, int]:
            marks = {n: {s: len(b.frames[c]) for s, c in ch.items()} for n, (b, ch) in bots.items()}
            await until(
                lambda: all(
                    len(b.frames[c]) >= marks[n][s] + 3
                    for n, (b, ch) in bots.items()
                    for s, c in ch.items()
                ),
                30,
            )
            gaps: dict[str, int] = {}
            for name, (bot, chans) in bots.items():
                assert not bot.ws.close_code, f"{name}: session closed"
                check_session(name, bot, {})
                for s, chan in chans.items():
                    gaps[f"{name}/{s}"] = trade_gaps(f"{name}/{s}", bot, chan)
                    assert gaps[f"{name}/{s}"] <= 1, (name, s, gaps)
            for xs in tasks.values():
                for x in xs:
                    x.cancel()
            return gaps

        gaps = lt.run(check(), timeout=60)
        # Still one subscription per key, one owner per key: nothing moved back and forth.
        assert settled()
        owned = {n: share_of(d)["owned"] for n, d in survivors.items()}
        print(f"after the kill: owned {owned}, exchange {live_trades_subscriptions(lt, sim)}")
        print(f"announced gaps per channel: {gaps}")
        for n, d in survivors.items():
            st = share_of(d)
            print(n, {k: st[k] for k in ("taken_over", "takeovers", "linked", "gaps", "moves_in")})
        lt.run(sim.close())
