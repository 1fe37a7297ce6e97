"""Run the real daemon as a subprocess against real loopback servers, with bounded waits."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

WSGATE = [sys.executable, "-m", "wsgate"]


def free_port() -> int:
    # Only for the daemon's own listener, which must be named in its config file.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def until(
    cond: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109 - the bound is the point: it raises when it passes
    what: str = "condition",
    every: float = 0.05,
) -> None:
    """The async :func:`wait_until`: poll ``cond`` (sync or async) until true, else raise.

    It never falls through on timeout. Other tasks (a bot collecting frames) keep running
    while it waits.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


class ThreadServer:
    """A websockets server on 127.0.0.1:0 running in its own thread and event loop."""

    def __init__(self, handler: Callable[[ServerConnection], Awaitable[None]]) -> None:
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        assert self._ready.wait(10), "upstream test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass
class DaemonProc:
    proc: subprocess.Popen[bytes]
    dir: Path
    config: Path
    socket: str
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    log_start: int = 0  # where this run's lines begin in a log earlier runs wrote too

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*WSGATE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    async def acli(
        self,
        *args: str,
        timeout: float = 20.0,  # noqa: ASYNC109 - the subprocess's own bound
    ) -> subprocess.CompletedProcess[str]:
        """:meth:`cli` in a worker thread: a coroutine that collects frames keeps running."""
        return await asyncio.to_thread(self.cli, *args, timeout=timeout)

    async def ajson(self, *args: str) -> Any:
        """``wsgate <args> --json --socket <socket>``, parsed; the event loop keeps running."""
        r = await self.acli(*args, "--json", "--socket", self.socket)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def status(self) -> dict[str, Any]:
        r = self.cli("status", "--json", "--socket", self.socket)
        assert r.returncode == 0, r.stderr
        return dict(json.loads(r.stdout))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.logs(), timeout, f"log line {text!r}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until this run of the daemon logs ``ready:``; it must still be running then."""
        wait_until(
            lambda: "ready:" in self.logs()[self.log_start :] or self.proc.poll() is not None,
            timeout,
            "daemon to be ready",
        )
        assert self.proc.poll() is None, self.logs()


def stop_daemon(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (a clean shutdown) if it still runs; SIGKILL when that takes over ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def write_config(
    directory: Path,
    body: str,
    port: int,
    *,
    daemon: str = "",
    gateway: str = "",
    metrics: str = "",
    socket_name: str = "ctl.sock",
) -> tuple[Path, str]:
    """The harness's [daemon], [gateway] and [metrics] tables, plus ``body``.

    ``daemon`` and ``gateway`` are extra lines for those tables (TOML cannot reopen them);
    ``metrics`` is where /metrics listens (none when empty); ``socket_name`` is the control
    socket's path inside the daemon's directory.
    """
    sock = str(directory / socket_name)
    cfg = directory / "wsgate.toml"
    cfg.write_text(
        f"""
[daemon]
control_socket = "{sock}"
state_dir = "{directory / "state"}"
shutdown_timeout = 3
{daemon}
[gateway]
listen = "127.0.0.1:{port}"
{gateway}
[metrics]
listen = "{metrics}"
"""
        + body
    )
    return cfg, sock


def start_daemon(
    directory: Path,
    cfg: Path,
    sock: str,
    port: int,
    *,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    nofile: int | None = None,
) -> DaemonProc:
    """``wsgate run --config cfg`` (and ``args``), its output appended to the directory's
    daemon.log; ``nofile``: its RLIMIT_NOFILE (to exhaust descriptors in a test)."""
    log = directory / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [*WSGATE, "run", "--config", str(cfg), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=None if nofile is None else (lambda: _set_nofile(nofile)),
        )
    return DaemonProc(proc, directory, cfg, sock, port, log, env, start)


def _set_nofile(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@contextmanager
def run_daemon(
    body: str,
    *,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    daemon: str = "",
    gateway: str = "",
    metrics: str = "",
    socket_name: str = "ctl.sock",
    nofile: int | None = None,
) -> Iterator[DaemonProc]:
    """``wsgate run`` on :func:`write_config`'s file and ``args``; stopped on exit.
    ``nofile``: the daemon's RLIMIT_NOFILE (to exhaust descriptors in a test)."""
    # Unix socket paths are limited to 108 bytes: keep the directory short.
    directory = Path(tempfile.mkdtemp(prefix="wsg-", dir="/tmp"))
    port = free_port()
    cfg, sock = write_config(
        directory,
        body,
        port,
        daemon=daemon,
        gateway=gateway,
        metrics=metrics,
        socket_name=socket_name,
    )
    d = start_daemon(directory, cfg, sock, port, extra_env=extra_env, args=args, nofile=nofile)
    try:
        d.wait_ready()
        yield d
    finally:
        stop_daemon(d.proc)
