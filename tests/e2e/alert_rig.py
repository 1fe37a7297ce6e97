"""Test rig for alert drills: the simulator, receivers and bots on one background loop,
and the daemon as a subprocess that can be restarted (or kill -9'd) on the same state dir.

Used by ``tests/e2e/test_alerts_e2e.py``, ``tests/e2e/test_alert_trust_e2e.py`` and
``bench/alert_latency.py``. The drills share the fast rule table (``FAST_RULES``), one
Bitfinex route with a webhook receiver (``bfx_drill``) and the steps they take on the daemon
(``cli_json``, ``wait_pool_up``, ``wait_runs``, ``paged``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.harness import (
    DaemonProc,
    free_port,
    start_daemon,
    stop_daemon,
    wait_until,
    write_config,
)
from tests.runtime.receivers import WebhookReceiver
from wsgate.sim.simulator import Simulator

__all__ = [
    "ANOMALY_RULES",
    "FAST_RULES",
    "SECRET",
    "SECRET_ENV",
    "TICKER",
    "Drill",
    "LoopThread",
    "alert_body",
    "bfx_drill",
    "bfx_route",
    "cli_json",
    "firing_pages",
    "job_runs",
    "paged",
    "perf_warmup",
    "spawn_daemon",
    "wait_pool_up",
    "wait_runs",
    "webhook_alerts",
]

T = TypeVar("T")

SECRET_ENV = "WSGATE_TEST_HOOK_SECRET"
SECRET = "s3cret-for-hmac"
TICKER = {"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"}

# Drill timings: rules judge over 1-3 evaluations (1 s each), so a fault and every
# consequence it has get their chance to page within seconds.
FAST_RULES = """
[alerts.rules.high_latency]
pending_samples = 2
window = 3
[alerts.rules.performance_degradation]
pending_samples = 2
window = 3
[alerts.rules.system_health]
pending_samples = 2
window = 3
[alerts.rules.high_error_rate]
pending_samples = 2
window = 3
[alerts.rules.frequent_reconnects]
fire = 3
clear = 1
[alerts.rules.capacity_warning]
pending_samples = 1
window = 1
[alerts.rules.load_balancer_issue]
pending_samples = 1
window = 1
[alerts.rules.cluster_node_down]
keep_firing_for = 30
"""
# Small warm-up so the rate detector may judge after 5 evaluations (5 s here).
ANOMALY_RULES = """
[alerts.rules.anomaly_detected.params]
warmup = 5
min_band_rate = 2
"""


def perf_warmup(evaluations: int) -> str:
    """Rules text: performance_degradation trusts its baseline after ``evaluations``."""
    return f"[alerts.rules.performance_degradation.params]\nwarmup = {evaluations}\n"


class LoopThread:
    """An event loop in a daemon thread; ``run(coro)`` waits (bounded) for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def run(self, coro: Awaitable[T], timeout: float = 20.0) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        async def wrap() -> T:
            return fn()

        return self.run(wrap(), timeout)

    # -- simulator ---------------------------------------------------------------------------
    def start_sim(self, **tuning: Any) -> Simulator:
        sim = Simulator(binance=False, **tuning)
        self.run(sim.start())
        return sim

    def stop(self, obj: Any) -> None:
        closer = getattr(obj, "close", None) or obj.stop
        self.run(closer())

    # -- bots ----------------------------------------------------------------------------------
    def bot(self, port: int, route: str, subscribe: list[dict[str, Any]]) -> ClientConnection:
        """A downstream client subscribed to ``subscribe``; drained in the background."""

        async def open_bot() -> ClientConnection:
            ws = await connect(f"ws://127.0.0.1:{port}/{route}", open_timeout=10)
            for msg in subscribe:
                await ws.send(json.dumps(msg))

            async def drain() -> None:
                try:
                    async for _ in ws:
                        pass
                except Exception:
                    return

            asyncio.get_running_loop().create_task(drain())
            return ws

        return self.run(open_bot())

    def close_bot(self, ws: ClientConnection) -> None:
        self.run(ws.close())


def bfx_route(name: str, url: str, **extra: Any) -> str:
    """A Bitfinex route tuned for drills: app pings every 0.5 s carry the latency."""
    opts = {
        "ping_interval": 1000,
        "app_ping_interval": 0.5,
        "backoff_initial": 0.2,
        "backoff_max": 1,
        "min_uptime": 0.5,
        "stale_after": 30,
        **extra,
    }
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in opts.items())
    return f"""
[routes.{name}]
dialect = "bitfinex"
type = "market_data"
{lines}
[routes.{name}.connect_budget]
count = 1000
per = 60
[[routes.{name}.endpoints]]
url = "{url}"
"""


def alert_body(
    hook_url: str | None = None,
    *,
    rules: str = "",
    extra_channels: str = "",
    group_interval: float = 2.0,
    check: float = 1.0,
    matchers: dict[str, str] | None = None,
) -> str:
    hook = ""
    if hook_url is not None:
        match = ""
        if matchers:
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in matchers.items())
            match = f"matchers = {{ {inner} }}\n"
        hook = f"""
[alerts.channels.hook]
kind = "webhook"
enabled = true
url = "{hook_url}"
secret_env = "{SECRET_ENV}"
min_severity = "info"
timeout = 3
{match}"""
    return f"""
[jobs]
health_check_interval = {check}
analytics_interval = {check}
alert_check_interval = {check}
cleanup_interval = {max(check, 5)}
[alerts]
group_wait = 0.5
group_interval = {group_interval}
repeat_interval = 3600
{hook}{extra_channels}{rules}"""


@contextmanager
def spawn_daemon(
    directory: Path,
    body: str,
    *,
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[DaemonProc]:
    """Start ``wsgate run`` with its state in ``directory``; SIGTERM on exit if still alive."""
    port = port or free_port()
    cfg, sock = write_config(directory, body, port)
    d = start_daemon(
        directory, cfg, sock, port, extra_env={SECRET_ENV: SECRET, **(extra_env or {})}
    )
    try:
        d.wait_ready()
        yield d
    finally:
        stop_daemon(d.proc)


def new_dir() -> Path:
    # Unix socket paths are limited to 108 bytes: keep the directory short.
    return Path(tempfile.mkdtemp(prefix="wsa-", dir="/tmp"))


def webhook_alerts(unique: dict[str, Any], alertname: str, status: str = "firing") -> list[Any]:
    """Notifications in a WebhookReceiver's ``unique`` carrying ``alertname`` in ``status``."""
    out = []
    for payload in list(unique.values()):
        for a in payload.get("alerts", []):
            if a["labels"].get("alertname") == alertname and a["status"] == status:
                out.append(payload)
                break
    return out


def wait_for_alert(
    unique: dict[str, Any], alertname: str, timeout: float = 30.0, status: str = "firing"
) -> float:
    """Block until a notification for ``alertname`` arrived; returns the monotonic time."""
    wait_until(
        lambda: bool(webhook_alerts(unique, alertname, status)),
        timeout,
        f"a {status} {alertname} notification",
    )
    return time.monotonic()


# -- the steps a drill takes on the daemon -------------------------------------------------------


def cli_json(d: DaemonProc, *args: str) -> Any:
    """``wsgate <args> --json`` against the daemon's socket, parsed; it must succeed."""
    r = d.cli(*args, "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_pool_up(d: DaemonProc, n: int = 1) -> None:
    wait_until(lambda: d.status()["routes"][0]["connections"]["up"] >= n, 15, "pool up")


def job_runs(d: DaemonProc, job: str = "alerts") -> int:
    return int(next(j["runs"] for j in d.status()["jobs"] if j["name"] == job))


def wait_runs(d: DaemonProc, n: int, job: str = "alerts", timeout: float = 40.0) -> None:
    """Until ``job`` has run ``n`` more times (alerts: evaluations)."""
    start = job_runs(d, job)
    wait_until(lambda: job_runs(d, job) >= start + n, timeout, f"{n} {job} runs")


def firing_pages(unique: dict[str, Any]) -> list[dict[str, Any]]:
    """The firing alerts of every notification a WebhookReceiver holds."""
    return [
        a for p in list(unique.values()) for a in p.get("alerts", []) if a["status"] == "firing"
    ]


def paged(unique: dict[str, Any], *, box_checks: bool = False) -> set[str]:
    """Alert types the receiver got a firing notification for.

    ``system_health`` pages about the node's own event loop (lag, scheduled jobs that fell
    behind or failed) are left out unless ``box_checks``: on a test machine loaded by other
    work they tell the truth about the machine, not about the fault a drill injects.
    """
    return {
        a["labels"]["alertname"]
        for a in firing_pages(unique)
        if box_checks or a["labels"].get("check") not in _BOX_CHECKS
    }


_BOX_CHECKS = frozenset({"loop_lag", "job", "job_failures"})


class Drill(NamedTuple):
    lt: LoopThread
    sim: Simulator
    rx: WebhookReceiver  # takes every alert type (no matchers)
    d: DaemonProc


@contextmanager
def bfx_drill(rules: str = FAST_RULES, *, check: float = 1.0, **route: Any) -> Iterator[Drill]:
    """The simulator, a webhook receiver for every alert, and the daemon with ``rules`` and
    one Bitfinex route ``bfx`` (``route``: its extra keys); yields once the pool is up."""
    with LoopThread() as lt:
        sim = lt.start_sim()
        rx = lt.run(WebhookReceiver(secret=SECRET).start())
        try:
            body = alert_body(rx.url, rules=rules, check=check)
            with spawn_daemon(new_dir(), body + bfx_route("bfx", sim.bitfinex_url, **route)) as d:
                wait_pool_up(d)
                yield Drill(lt, sim, rx, d)
        finally:
            lt.stop(rx)
            lt.stop(sim)
