"""`wsgate top` in a pseudo-terminal: it draws, refreshes, switches views and quits cleanly."""

from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import subprocess
import termios
import time

from tests.e2e.harness import WSGATE, DaemonProc, wait_until
from tests.e2e.test_analytics_e2e import demo_daemon


class Pty:
    """The child's terminal: we hold the master side and collect everything it prints."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"},
            start_new_session=True,
            # The pty becomes the child's controlling terminal, so ^C sends SIGINT.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.out = b""

    def pump(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                return
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once the child has exited
                return
            if not chunk:
                return
            self.out += chunk

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            self.pump()
            return text.encode() in self.out

        wait_until(seen, timeout, f"{text!r} on the terminal; got {self.out[-400:]!r}")

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_exit(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump()
        self.pump()
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)


def _top(d: DaemonProc, *extra: str) -> Pty:
    return Pty([*WSGATE, "top", "--socket", d.socket, "--interval", "0.3", *extra], d.env)


def _wait_open(d: DaemonProc) -> None:
    def up() -> bool:
        return all(r["connections"]["up"] >= 1 for r in d.status()["routes"])

    wait_until(up, 20, "every route to have an open upstream")


def test_top_draws_refreshes_switches_and_quits_on_q() -> None:
    with demo_daemon() as (d, _):
        _wait_open(d)
        t = _top(d)
        try:
            t.wait_for("connections (sorted by health")
            t.wait_for("bitfinex-c1")
            first = len(t.out)
            t.wait_for("msg/s")

            def refreshed() -> bool:
                t.pump()
                return len(t.out) > first + 200

            wait_until(refreshed, 10, "a refresh")
            t.send("s")  # next sort column of the connections view
            t.wait_for("connections (sorted by id")
            t.send("1")
            t.wait_for("routes (sorted by name")
            t.wait_for("binance")
            t.send("3")
            t.wait_for("sessions (sorted by bytes_out")
            t.send("q")
            assert t.wait_exit() == 0
        finally:
            t.close()
        assert b"\x1b[?1049h" in t.out  # drew on the alternate screen, like htop


def test_top_exits_cleanly_on_ctrl_c() -> None:
    with demo_daemon() as (d, _):
        _wait_open(d)
        t = _top(d, "--view", "routes")
        try:
            t.wait_for("routes (sorted by name")
            t.send("\x03")
            assert t.wait_exit() == 0
        finally:
            t.close()
        assert b"Traceback" not in t.out


def test_top_json_prints_count_snapshots() -> None:
    with demo_daemon() as (d, _):
        _wait_open(d)
        r = d.cli("top", "--json", "--count", "3", "--interval", "0.2", "--socket", d.socket)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 3
        snaps = [json.loads(line) for line in lines]
        assert all({rt["name"] for rt in s["routes"]} == {"bitfinex", "binance"} for s in snaps)
        assert snaps[0]["ts"] < snaps[1]["ts"] < snaps[2]["ts"]
        assert {c["route"] for c in snaps[-1]["connections"]} == {"bitfinex", "binance"}
        assert snaps[-1]["health"]["score"] is not None
