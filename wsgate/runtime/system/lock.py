"""A pid lock file held with ``flock``, so a second daemon cannot steal the control socket.

``flock`` is released by the kernel when the process dies, so a crashed daemon never
leaves a stale lock behind; the pid written into the file only serves error messages.
The file is deliberately never unlinked: removing it would let a newcomer lock a fresh
inode while an older process still holds the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from types import TracebackType

from wsgate.control.wire import CONFLICT
from wsgate.errors import ControlError

__all__ = ["LOCK_NAME", "PidLock"]

log = logging.getLogger("wsgate.runtime.system.lock")

LOCK_NAME = "wsgate.lock"


class PidLock:
    """Exclusive, non-blocking lock on ``path``; use as a context manager or
    ``acquire()``/``release()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_socket(cls, socket_path: str) -> PidLock:
        """The lock that guards a control socket: ``<socket dir>/wsgate.lock``."""
        return cls(os.path.join(os.path.dirname(os.path.abspath(socket_path)), LOCK_NAME))

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``ControlError("conflict")`` naming the holder's pid."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this PidLock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "another process"
            raise ControlError(
                CONFLICT,
                f"another wsgate daemon ({who}) holds {self.path}; stop it first or give this "
                "one another daemon.control_socket (or $WSGATE_DAEMON_CONTROL_SOCKET)",
                {"pid": holder, "lock": self.path},
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        log.debug("locked %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        log.debug("unlocked %s", self.path)

    close = release

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<PidLock {self.path} {'held' if self._fd is not None else 'free'}>"


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
