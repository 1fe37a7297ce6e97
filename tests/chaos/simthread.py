"""The exchange simulator in its own thread and event loop, with faults callable from tests."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from wsgate.sim.simulator import Simulator

__all__ = ["SimThread", "fd_count", "rss_kib"]

T = TypeVar("T")


class SimThread:
    """``with SimThread(seed=1, bitfinex_trades_rate=50) as sim:`` serves both simulators."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.sim: Simulator | None = None
        self._thread = threading.Thread(target=self._run, name="sim", daemon=True)

    def __repr__(self) -> str:
        return f"SimThread({self.sim!r})"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test thread by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with Simulator(**self._options) as sim:
            self.sim = sim
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> SimThread:
        self._thread.start()
        assert self._ready.wait(10), "simulator did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[Simulator], T], timeout: float = 10.0) -> T:
        """Run ``fn(sim)`` on the simulator's loop (faults must run there) and return its result."""
        assert self.sim is not None
        sim = self.sim

        async def run() -> T:
            return fn(sim)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    @property
    def bitfinex_url(self) -> str:
        assert self.sim is not None
        return self.sim.bitfinex_url

    @property
    def binance_url(self) -> str:
        assert self.sim is not None
        return self.sim.binance_url


def rss_kib(pid: int) -> int:
    """Resident set size of a live process, from /proc."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
