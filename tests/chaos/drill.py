"""Pieces of a chaos drill: the daemon config, a status prober and a seeded fault schedule."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.simthread import SimThread
from wsgate.control.client import ControlClient
from wsgate.sim.simulator import Simulator

__all__ = ["FaultSchedule", "StatusProbe", "bitfinex_route"]


def bitfinex_route(url: str, *, min_connections: int = 2) -> str:
    """A shared Bitfinex route tuned to recover fast, so a short drill sees many recoveries."""
    return f"""
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
strategy = "least_connections"
min_connections = {min_connections}
stale_after = 4
backoff_initial = 0.1
backoff_max = 1.0
min_uptime = 0.5
app_ping_interval = 2
connect_budget = {{ count = 1000, per = 1 }}
[[routes.bitfinex.endpoints]]
url = "{url}"
"""


@dataclass
class StatusProbe:
    """Calls ``status`` on the control socket in a loop; every call must answer within 1 s.

    This is an availability check, not a speed measurement: 1 s is about 1000 times what an
    idle daemon needs.
    """

    socket: str
    interval: float = 0.2
    timeout: float = 1.0
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StatusProbe:
        self._thread = threading.Thread(target=self._run, name="status-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with ControlClient(self.socket, timeout=self.timeout) as client:
                    self.last = client.call("status")
            except Exception as exc:  # every failure is a finding, reported by the test
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.calls += 1
            self._stop.wait(self.interval)


Fault = Callable[[Simulator], object]


@dataclass
class FaultSchedule:
    """Seeded random faults against the Bitfinex simulator, each undone before the next."""

    rng: random.Random
    applied: list[str] = field(default_factory=list)

    def pick(self) -> tuple[str, Fault, Fault | None, float]:
        """(name, fault, undo or None, seconds to hold it)."""
        r = self.rng
        kind = r.choice(
            [
                "drop_all",
                "drop_one",
                "stall",
                "latency",
                "20051",
                "maintenance",
                "malformed",
                "reject",
            ]
        )
        hold = r.uniform(0.3, 1.5)
        if kind == "drop_all":
            return kind, lambda s: s.bitfinex.faults.drop(), None, hold
        if kind == "drop_one":
            return kind, lambda s: s.bitfinex.faults.drop(1), None, hold
        if kind == "stall":
            seconds = r.uniform(0.5, 2.0)
            return kind, lambda s: s.bitfinex.faults.stall(seconds), None, seconds
        if kind == "latency":
            ms = r.uniform(5, 80)
            return (
                kind,
                lambda s: s.bitfinex.faults.latency(ms),
                lambda s: s.bitfinex.faults.latency(0),
                hold,
            )
        if kind == "20051":
            return kind, lambda s: s.bitfinex.faults.info(20051), None, max(hold, 1.2)
        if kind == "maintenance":
            return (
                kind,
                lambda s: s.bitfinex.faults.info(20060),
                lambda s: s.bitfinex.faults.info(20061),
                hold,
            )
        if kind == "malformed":
            count = r.randint(1, 8)
            return kind, lambda s: s.bitfinex.faults.malformed(count), None, hold
        count = r.randint(1, 3)
        return (
            kind,
            lambda s: (
                s.bitfinex.faults.reject_handshakes(429, count, retry_after=0.2),
                s.bitfinex.faults.drop(1),
            ),
            lambda s: s.bitfinex.faults.reject_handshakes(429, 0),
            hold,
        )

    def run(self, sim: SimThread, seconds: float, stop: threading.Event | None = None) -> None:
        """Apply faults back to back for ``seconds``; always leaves the simulator clean."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                name, fault, undo, hold = self.pick()
                sim.call(fault)
                self.applied.append(name)
                time.sleep(min(hold, max(0.0, deadline - time.monotonic())))
                if undo is not None:
                    sim.call(undo)
                # A quiet moment between faults so that some recoveries complete.
                time.sleep(self.rng.uniform(0.1, 0.6))
        finally:
            sim.call(lambda s: s.bitfinex.faults.clear())
