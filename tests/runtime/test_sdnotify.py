from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

import pytest

from wsgate.runtime.system import sdnotify
from wsgate.runtime.system.sdnotify import Notifier


@pytest.fixture
def receiver() -> Iterator[tuple[str, socket.socket]]:
    """A path-bound SOCK_DGRAM socket standing in for systemd's notify socket."""
    d = tempfile.mkdtemp(dir="/tmp", prefix="wsg-")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)
    yield path, sock
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def test_messages_reach_a_path_socket(receiver: tuple[str, socket.socket]) -> None:
    path, sock = receiver
    n = Notifier({"NOTIFY_SOCKET": path}, monotonic_usec=lambda: 123456789)
    assert n.enabled
    assert n.ready("serving 3 routes\nsecond line")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 routes second line"
    assert n.reloading()
    assert sock.recv(4096) == b"RELOADING=1\nMONOTONIC_USEC=123456789"
    assert n.status("draining")
    assert sock.recv(4096) == b"STATUS=draining"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert n.ready()
    assert sock.recv(4096) == b"READY=1"
    assert "sent=6" in repr(n)


def test_messages_reach_an_abstract_socket() -> None:
    name = f"wsgate-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        assert n.reloading()
        fields = sock.recv(4096).decode().split("\n")
        assert fields[0] == "RELOADING=1"
        assert fields[1].startswith("MONOTONIC_USEC=") and int(fields[1].split("=")[1]) > 0


@pytest.mark.parametrize("addr", ["", "vsock:2:1234", "relative/path"])
def test_no_op_when_not_under_systemd(addr: str) -> None:
    n = Notifier({"NOTIFY_SOCKET": addr} if addr else {})
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False


def test_send_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": "/tmp/wsgate-no-such-notify-socket"})
    assert n.ready() is False
    assert "failed=1" in repr(n)
    assert "sd_notify READY=1 failed" in caplog.text


def test_module_functions_follow_the_environment(
    receiver: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = receiver
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready("ok")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    assert sdnotify.stopping() and sock.recv(4096) == b"STOPPING=1"
    assert sdnotify.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.status("s") and sock.recv(4096) == b"STATUS=s"
    assert sdnotify.reloading() and sock.recv(4096).startswith(b"RELOADING=1\n")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env, pid=4242).watchdog_interval() == expected


def test_watchdog_interval_defaults_to_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 1.0
