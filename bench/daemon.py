"""Run the real wsgate daemon as a subprocess with a temporary config, for benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchDaemon", "free_port", "rss_kib", "run_daemon", "wall"]

WSGATE = [sys.executable, "-m", "wsgate.cli.app"]


def free_port() -> int:
    # Only for listeners that must be named in a config file (the daemon's gateway).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wall(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 30.0) -> float:
    """Wall time in seconds of one run of ``cmd``; it must exit 0."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {r.returncode}: {r.stderr[-400:]!r}")
    return dt


@dataclass
class BenchDaemon:
    proc: subprocess.Popen[bytes]
    dir: Path
    socket: str
    port: int
    log: Path
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def status_cmd(self) -> list[str]:
        return [*WSGATE, "status", "--json", "--socket", self.socket]


@contextlib.contextmanager
def run_daemon(
    body: str,
    *,
    fast: bool,
    gateway: str = "",
    metrics: str = "",
    extra_env: dict[str, str] | None = None,
) -> Iterator[BenchDaemon]:
    """Start ``wsgate run`` on a temp config (``body`` = the routes); stop it on exit.

    ``fast`` selects uvloop (the daemon uses it when importable; WSGATE_NO_UVLOOP=1
    turns it off). ``gateway`` is extra ``[gateway]`` keys; ``extra_env`` goes into the
    daemon's environment (``WSGATE_PURE_PYTHON=1``: the relay without its C step).
    """
    directory = Path(tempfile.mkdtemp(prefix="wsb-", dir="/tmp"))
    port = free_port()
    sock = str(directory / "ctl.sock")
    cfg = directory / "wsgate.toml"
    cfg.write_text(
        f"""
[daemon]
control_socket = "{sock}"
state_dir = "{directory / "state"}"
shutdown_timeout = 3
log_level = "warning"
[gateway]
listen = "127.0.0.1:{port}"
{gateway}
[metrics]
listen = ""
{metrics}
"""
        + body
    )
    log = directory / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    if fast:
        env.pop("WSGATE_NO_UVLOOP", None)
    else:
        env["WSGATE_NO_UVLOOP"] = "1"
    from bench.procs import raise_nofile

    raise_nofile()  # inherited by the daemon
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [*WSGATE, "run", "--config", str(cfg), "--log-level", "info"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    d = BenchDaemon(proc, directory, sock, port, log, env)
    try:
        deadline = time.monotonic() + 30
        while "ready:" not in d.logs():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wsgate did not start:\n{d.logs()[-2000:]}")
            time.sleep(0.05)
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)
