"""Fault-to-notification latency: a fault injected in the simulator → webhook receiver.

Per alert type that a simulator fault drives, with 1 s intervals (alert_check_interval = 1,
group_wait = 0.5). The time is wall time from the fault call returning to the webhook
receiver holding the first firing notification of that type.

What the default intervals imply (alert_check_interval = 30 s, group_wait = 30 s): a
notification needs ``pending_samples`` evaluations (30 s each) before the alert fires,
plus up to one check interval before the first one sees the fault, plus group_wait::

    latency ≈ U(0, 30) + (pending_samples - 1) * 30 + 30 (group_wait) + delivery

    connection_failure (pending 1 of 1):   30 .. 60 s
    high_latency, high_error_rate (3 of 5): 90 .. 120 s  (+ the EWMA rise for latency)
    frequent_reconnects (1 of 1):          30 .. 60 s after the 5th reconnect

With 1 s intervals the same formula gives about pending_samples + 0.5 s, which is what
``run()`` measures. Run: ``.venv/bin/python -m bench.alert_latency [--quick]``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.alert_rig import (
    SECRET,
    TICKER,
    LoopThread,
    alert_body,
    bfx_route,
    new_dir,
    spawn_daemon,
    wait_for_alert,
    wait_pool_up,
)
from tests.runtime.receivers import WebhookReceiver

__all__ = ["run"]

RULES = """
[alerts.rules.high_latency]
pending_samples = 2
window = 3
[alerts.rules.high_error_rate]
pending_samples = 2
window = 3
"""


def _drill(alertname: str, inject: Callable[[Any, LoopThread], None], rounds: int) -> list[float]:
    out: list[float] = []
    for _ in range(rounds):
        with LoopThread() as lt:
            sim = lt.start_sim()
            rx = lt.run(WebhookReceiver(secret=SECRET).start())
            body = alert_body(rx.url, rules=RULES, matchers={"alertname": alertname})
            body += bfx_route("bfx", sim.bitfinex_url)
            with spawn_daemon(new_dir(), body) as d:
                wait_pool_up(d)
                bot = lt.bot(d.port, "bfx", [TICKER])
                time.sleep(2)  # steady state before the fault
                start = time.monotonic()
                inject(sim, lt)
                arrived = wait_for_alert(rx.unique, alertname, 60)
                out.append(arrived - start)
                lt.close_bot(bot)
            lt.stop(rx)
            lt.stop(sim)
    return out


def _fail(sim: Any, lt: LoopThread) -> None:
    lt.call(lambda: sim.bitfinex.faults.reject_handshakes(503, 10_000))
    lt.call(lambda: sim.bitfinex.faults.drop())


def _latency(sim: Any, lt: LoopThread) -> None:
    lt.call(lambda: sim.bitfinex.faults.latency(3000))


def _malformed(sim: Any, lt: LoopThread) -> None:
    lt.call(lambda: sim.bitfinex.faults.malformed(40))


DRILLS: dict[str, Callable[[Any, LoopThread], None]] = {
    "connection_failure": _fail,
    "high_latency": _latency,
    "high_error_rate": _malformed,
}


def run(quick: bool = False) -> dict[str, Any]:
    """Seconds from fault to notification per alert type (min/median/max over rounds)."""
    rounds = 1 if quick else 3
    results: dict[str, Any] = {}
    for name, inject in DRILLS.items():
        samples = sorted(_drill(name, inject, rounds))
        results[name] = {
            "rounds": rounds,
            "min_s": round(samples[0], 3),
            "median_s": round(samples[len(samples) // 2], 3),
            "max_s": round(samples[-1], 3),
        }
    return {
        "intervals": {"alert_check_interval": 1.0, "group_wait": 0.5},
        "fault_to_notification": results,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
