"""Alert drills: the real daemon, the simulator's faults and real receivers on loopback.

Every alert type is raised by driving the simulator or the daemon into the condition; no
test calls the alert engine. Intervals are 1 s (check), 0.5 s (group_wait).
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from tests.e2e.alert_rig import (
    SECRET,
    LoopThread,
    alert_body,
    bfx_route,
    new_dir,
    spawn_daemon,
    wait_for_alert,
    webhook_alerts,
)
from tests.e2e.harness import DaemonProc, wait_until
from tests.runtime.receivers import HttpReceiver, Reply, SmtpReceiver, WebhookReceiver

TICKER = {"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"}


def _cli_json(d: DaemonProc, *args: str) -> Any:
    r = d.cli(*args, "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _active(d: DaemonProc, alertname: str) -> list[dict[str, Any]]:
    return [a for a in _cli_json(d, "alerts")["alerts"] if a["labels"]["alertname"] == alertname]


def test_connection_failure_webhook_hmac_history_and_channels() -> None:
    with LoopThread() as lt:
        sim = lt.start_sim()
        rx = lt.run(WebhookReceiver(secret=SECRET).start())
        body = alert_body(rx.url, matchers={"alertname": "connection_failure"}) + bfx_route(
            "bfx", sim.bitfinex_url
        )
        with spawn_daemon(new_dir(), body) as d:
            wait_until(lambda: d.status()["routes"][0]["connections"]["up"] >= 1, 15, "pool up")
            faults = sim.bitfinex.faults
            lt.call(lambda: faults.reject_handshakes(503, 10_000))
            lt.call(lambda: faults.drop())
            wait_for_alert(rx.unique, "connection_failure", 20)
            assert rx.bad_signatures == 0
            got = webhook_alerts(rx.unique, "connection_failure")[0]
            assert got["version"] == "4" and got["status"] == "firing"
            assert got["alerts"][0]["labels"]["route"] == "bfx"
            active = _active(d, "connection_failure")
            assert active and active[0]["state"] == "firing"
            assert set(active[0]) >= {
                "fingerprint",
                "labels",
                "severity",
                "state",
                "started_at",
                "value",
                "acknowledged",
                "silenced",
                "inhibited",
                "flapping",
                "summary",
            }
            hist = _cli_json(
                d, "alerts", "history", "--since", "1h", "--type", "connection_failure"
            )
            assert any(e["to"] == "firing" for e in hist["events"])
            chans = _cli_json(d, "alerts", "channels")["channels"]
            hook = next(c for c in chans if c["name"] == "hook")
            assert hook["delivered"] >= 1 and hook["breaker"] == "closed"
            # Recovery resolves it, and the resolved notice arrives too.
            lt.call(lambda: faults.clear())
            wait_for_alert(rx.unique, "connection_failure", 30, status="resolved")
        lt.stop(rx)
        lt.stop(sim)
