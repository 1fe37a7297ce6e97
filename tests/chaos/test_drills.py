"""Chaos drills: the real daemon over a faulty simulated Bitfinex, with bots checking every frame.

The short drills run in `make test`; the ``slow`` ones (minutes) run in `make chaos`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect

from tests.chaos.bfxclient import SEQ_ALL, BfxCounter
from tests.chaos.drill import FaultSchedule, StatusProbe, bitfinex_route
from tests.chaos.simthread import SimThread, fd_count, rss_kib
from tests.e2e.harness import DaemonProc, run_daemon, wait_until

SUBS = (("trades", "tBTCUSD"), ("trades", "tETHUSD"), ("ticker", "tBTCUSD"))
SIM = {
    "binance": False,
    "bitfinex_trades_rate": 20.0,
    "bitfinex_ticker_rate": 5.0,
    "bitfinex_heartbeat_interval": 2.0,
}


async def _until(cond: Callable[[], bool], limit: float, what: str) -> None:
    async def poll() -> None:
        while not cond():  # noqa: ASYNC110 - the state is counted by the bots' own tasks
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), limit)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit}s waiting for {what}") from None


async def _bots_under_faults(
    url: str, sim: SimThread, seconds: float, seed: int, n_bots: int
) -> tuple[list[BfxCounter], FaultSchedule]:
    stop = asyncio.Event()
    bots = [
        BfxCounter(url, SUBS, flags=SEQ_ALL if i % 3 else 0, name=f"bot{i}") for i in range(n_bots)
    ]
    tasks = [asyncio.create_task(b.run(stop)) for b in bots]
    await _until(lambda: all(b.subscribed.is_set() for b in bots), 10, "every bot subscribed")
    await _until(lambda: all(b.trades_seen() > 0 for b in bots), 10, "trades at every bot")
    schedule = FaultSchedule(random.Random(seed))
    faults = asyncio.create_task(asyncio.to_thread(schedule.run, sim, seconds))
    # Late joiners arrive mid-drill and get their first snapshot from gateway state.
    await asyncio.sleep(seconds / 2)
    late = [BfxCounter(url, SUBS, name=f"late{i}") for i in range(2)]
    bots += late
    tasks += [asyncio.create_task(b.run(stop)) for b in late]
    await asyncio.wait_for(faults, seconds + 30)
    # The faults are over: data must flow again to every bot, on every trades channel.
    seen = {id(b): b.trades_seen() for b in bots}
    await _until(
        lambda: all(b.trades_seen() >= seen[id(b)] + 4 for b in bots),
        20,
        "trades flowing again at every bot after the last fault",
    )
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    return bots, schedule


def _drill(seconds: float, seed: int, n_bots: int) -> None:
    with (
        SimThread(seed=seed, **SIM) as sim,
        run_daemon(bitfinex_route(sim.bitfinex_url)) as d,
        StatusProbe(d.socket) as probe,
    ):
        url = f"ws://127.0.0.1:{d.port}/bitfinex"
        bots, schedule = asyncio.run(_bots_under_faults(url, sim, seconds, seed, n_bots))
        assert d.proc.poll() is None, d.logs()[-4000:]
        violations = [v for b in bots for v in b.violations]
        assert not violations, violations[:20]
        assert not [b for b in bots if b.closed], [b.closed for b in bots if b.closed]
        assert not [e for b in bots for e in b.errors], [e for b in bots for e in b.errors][:5]
        # Faults really broke streams: trades channels resumed on new upstream subscriptions
        # (bridged: the missed trades as updates; announced: a gap, as a snapshot).
        resumes = next(r for r in d.status()["routes"] if r["name"] == "bitfinex")["trade_resumes"]
        assert resumes["bridged"] + resumes["announced"] > 0, (resumes, schedule.applied)
        assert all(b.trades_seen() > 0 for b in bots)
        wait_until(lambda: d.status()["sessions"] == 0, 10, "sessions back to 0")
    assert probe.calls > 0
    assert not probe.failures, probe.failures[:5]


def test_short_chaos_drill_no_duplicates_no_silent_gaps() -> None:
    _drill(seconds=8.0, seed=7, n_bots=6)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", [1, 2])
def test_long_chaos_drill(seed: int) -> None:
    _drill(seconds=60.0, seed=seed, n_bots=12)


# ------------------------------------------------------------------- connect/disconnect churn


async def _churn(url: str, total: int, parallel: int) -> int:
    done = 0
    sem = asyncio.Semaphore(parallel)
    rng = random.Random(total)

    async def one(i: int) -> None:
        nonlocal done
        async with sem, connect(url, open_timeout=10) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": SEQ_ALL * (i % 2)}))
            channel, symbol = SUBS[i % len(SUBS)]
            await ws.send(json.dumps({"event": "subscribe", "channel": channel, "symbol": symbol}))
            if rng.random() < 0.5:  # half of them wait for the ack; the rest leave at once
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if isinstance(msg, dict) and msg.get("event") == "subscribed":
                        break
        done += 1

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(total))), 240)
    return done


def _settled(d: DaemonProc, baseline_tasks: int) -> bool:
    st = d.status()
    return bool(st["sessions"] == 0 and st["tasks"] <= baseline_tasks)


def _churn_drill(total: int, rounds: int) -> None:
    with SimThread(seed=3, **SIM) as sim, run_daemon(bitfinex_route(sim.bitfinex_url)) as d:
        url = f"ws://127.0.0.1:{d.port}/bitfinex"
        assert asyncio.run(_churn(url, 20, 10)) == 20  # warm-up: imports, caches, pools
        wait_until(lambda: d.status()["sessions"] == 0, 10, "warm-up sessions gone")
        tasks0 = d.status()["tasks"]
        rss0, fds0 = rss_kib(d.proc.pid), fd_count(d.proc.pid)
        for _ in range(rounds):
            assert asyncio.run(_churn(url, total, 25)) == total
            wait_until(lambda: _settled(d, tasks0), 15, "sessions 0 and tasks back to baseline")
        rss1, fds1 = rss_kib(d.proc.pid), fd_count(d.proc.pid)
        assert d.proc.poll() is None
        assert fds1 <= fds0 + 5, (fds0, fds1)
        # Generous: a leak of one session's state (~10 KiB) per connect would exceed it.
        assert rss1 - rss0 < 8 * 1024 + total * rounds, (rss0, rss1)
        started = time.monotonic()
        st = d.status()
        assert time.monotonic() - started < 5 and st["routes"][0]["sessions"] == 0


def test_short_session_churn_leaves_no_sessions_or_tasks() -> None:
    _churn_drill(total=150, rounds=1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_thousand_session_churn_no_leak() -> None:
    _churn_drill(total=500, rounds=2)
