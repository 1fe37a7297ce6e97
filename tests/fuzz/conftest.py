"""One daemon per fuzz module, over the simulator, with a bot that must keep receiving."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.chaos.bfxclient import SEQ_ALL, BfxCounter
from tests.chaos.simthread import SimThread
from tests.e2e.harness import DaemonProc, run_daemon, wait_until


def _routes(sim: SimThread) -> str:
    assert sim.sim is not None
    return f"""
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
[[routes.bitfinex.endpoints]]
url = "{sim.bitfinex_url}"

[routes.binance]
dialect = "binance"
type = "market_data"
rest_url = "{sim.sim.binance_rest_url}"
[[routes.binance.endpoints]]
url = "{sim.binance_url}"
"""


class Watcher:
    """A bot on trades:tBTCUSD in its own thread; fuzzing others must never disturb it."""

    def __init__(self, url: str) -> None:
        self.bot = BfxCounter(url, (("trades", "tBTCUSD"),), flags=SEQ_ALL, name="watcher")
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            await self.bot.run(self._stop)

        self._loop.run_until_complete(main())

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: self.bot.trades_seen() > 0, 15, "watcher receiving trades")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def assert_undisturbed(self) -> None:
        """Still connected, still receiving, nothing out of order or duplicated."""
        before = self.bot.trades_seen()
        wait_until(lambda: self.bot.trades_seen() > before, 10, "watcher still receiving")
        assert self.bot.closed is None, self.bot.closed
        assert not self.bot.violations, self.bot.violations[:5]


def send_and_drain(s: socket.socket, data: bytes, *, half_close: bool = True) -> bytes:
    """Send ``data``, optionally half-close, and read all the daemon says until it closes
    (a reset ends the reading as a close does)."""
    s.sendall(data)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


@dataclass
class Stack:
    daemon: DaemonProc
    sim: SimThread
    watcher: Watcher

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.daemon.port}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    options = {"bitfinex_trades_rate": 20.0, "bitfinex_heartbeat_interval": 2.0}
    with SimThread(seed=11, **options) as sim, run_daemon(_routes(sim)) as d:
        watcher = Watcher(f"ws://127.0.0.1:{d.port}/bitfinex")
        watcher.start()
        try:
            yield Stack(d, sim, watcher)
            assert d.proc.poll() is None, d.logs()[-4000:]
            watcher.assert_undisturbed()
            assert "Traceback" not in d.logs(), d.logs()[-6000:]
        finally:
            watcher.stop()
