from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsgate.control import wire
from wsgate.errors import ControlError
from wsgate.runtime.system.lock import PidLock

HOLDER = """
import sys
from wsgate.runtime.system.lock import PidLock
lock = PidLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
lock.release()
"""


def test_lock_writes_pid_and_refuses_a_second_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "wsgate.lock")
    with PidLock(path) as lock:
        assert lock.locked and "held" in repr(lock)
        assert Path(path).read_text() == f"{os.getpid()}\n"
        with pytest.raises(ControlError) as info:
            PidLock(path).acquire()
        assert info.value.code == wire.CONFLICT
        assert f"pid {os.getpid()}" in info.value.message
    assert not lock.locked
    # Released: the next daemon gets it.
    with PidLock(path):
        pass


def test_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    path = str(tmp_path / "wsgate.lock")
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "locked"
            with pytest.raises(ControlError) as info:
                PidLock(path).acquire()
            assert f"pid {holder.pid}" in info.value.message
            assert info.value.details == {"pid": holder.pid, "lock": path}
            holder.stdin.close()
            assert holder.wait(timeout=10) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(timeout=10)
    lock = PidLock(path)
    lock.acquire()
    lock.close()


def test_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    path = str(tmp_path / "wsgate.lock")
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        holder.kill()
        holder.wait(timeout=10)
    with PidLock(path) as lock:  # the kernel dropped the dead holder's flock
        assert lock.locked


def test_for_socket_uses_the_socket_directory() -> None:
    assert PidLock.for_socket("/run/wsgate/control.sock").path == "/run/wsgate/wsgate.lock"


def test_double_acquire_on_one_object_is_a_bug(tmp_path: Path) -> None:
    with PidLock(str(tmp_path / "l")) as lock, pytest.raises(RuntimeError):
        lock.acquire()
