"""sd_notify(3) in pure Python: readiness, reload, stop, status and watchdog messages.

Every call is one non-blocking datagram, so it is safe on the event loop. Outside
systemd (no ``$NOTIFY_SOCKET``) every call is a no-op returning False. Protocol:
sd_notify(3); mirrors systemd's self-contained example (notify-selfcontained-example.py).

Under ``Type=notify`` the daemon must install its signal handlers *before* ``ready()``;
around a reload it sends ``reloading()`` then ``ready()`` again, whatever started it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = [
    "Notifier",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

log = logging.getLogger("wsgate.runtime.system.sdnotify")


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to the socket named in ``env`` (default: ``os.environ``).

    The environment is read on every call, so the module-level helpers follow changes
    to ``os.environ``; tests pass their own mapping, pid and monotonic clock.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        self._env = env
        self._pid = pid
        self._monotonic_usec = monotonic_usec
        self._sent = 0
        self._failed = 0

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def address(self) -> str | None:
        """The socket address to send to, or None when not under systemd (or unsupported)."""
        addr = self.env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            return "\0" + addr[1:]  # Linux abstract namespace
        if addr.startswith("/"):
            return addr
        # Empty: not under systemd. "vsock:..." is for VMs; a host service never gets it.
        return None

    @property
    def enabled(self) -> bool:
        return self.address() is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one datagram. Failures are logged, never raised: a missed
        notification must not take the daemon down."""
        addr = self.address()
        if addr is None:
            return False
        payload = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.connect(addr)
                s.send(payload)
        except OSError as exc:
            self._failed += 1
            log.warning("sd_notify %s failed: %s", fields[0] if fields else "", exc)
            return False
        self._sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 match this RELOADING=1 to its reload job.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(_status_field(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` pings (half of ``$WATCHDOG_USEC``), or None when
        the watchdog is off or meant for another process."""
        env = self.env
        watchdog_pid = env.get("WATCHDOG_PID")
        if watchdog_pid:
            pid = os.getpid() if self._pid is None else self._pid
            try:
                if int(watchdog_pid) != pid:
                    return None
            except ValueError:
                return None
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2_000_000

    def __repr__(self) -> str:
        addr = self.env.get("NOTIFY_SOCKET") or "-"
        return f"<Notifier socket={addr} sent={self._sent} failed={self._failed}>"


def _status_field(text: str) -> str:
    # STATUS= is a single line; a newline would start a bogus assignment.
    return "STATUS=" + " ".join(text.splitlines())


_default = Notifier()


def ready(status: str | None = None) -> bool:
    return _default.ready(status)


def reloading() -> bool:
    return _default.reloading()


def stopping() -> bool:
    return _default.stopping()


def status(text: str) -> bool:
    return _default.status(text)


def watchdog() -> bool:
    return _default.watchdog()


def watchdog_interval() -> float | None:
    return _default.watchdog_interval()
