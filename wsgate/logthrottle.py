"""One log line per interval for events that can come thousands of times a second.

Under descriptor exhaustion every failed ``accept()`` and every refused connection is
an event; logging each (asyncio adds a traceback to each failed accept) turns an
attack into gigabytes of journal. :class:`Throttled` logs the first event at once and
then at most one line per ``interval`` carrying how many happened since the last line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["Throttled", "throttled_accept_errors"]

ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message, 3.11..3.13


class Throttled:
    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.clock = clock
        self.total = 0  # events ever
        self.lines = 0  # lines logged ever
        self._pending = 0  # events since the last line
        self._last: float | None = None
        self._message = ""
        self._flush_scheduled = False

    def event(self, message: str) -> None:
        """Count one event; log it now unless a line went out less than ``interval`` ago."""
        self.total += 1
        self._pending += 1
        self._message = message
        now = self.clock()
        if self._last is None or now - self._last >= self.interval:
            self._emit(now)
        elif not self._flush_scheduled:
            # Say how many there were even if none follows after the interval.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush_scheduled = True
            loop.call_later(self._last + self.interval - now, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            self._emit(self.clock())

    def _emit(self, now: float) -> None:
        if self._pending == 1 or self._last is None:
            text = self._message
        else:
            text = f"{self._message} ({self._pending} times in the last {now - self._last:.0f}s)"
        self.logger.log(self.level, "%s", text)
        self.lines += 1
        self._pending = 0
        self._last = now

    def __repr__(self) -> str:
        return f"<Throttled total={self.total} lines={self.lines} every {self.interval:g}s>"


def throttled_accept_errors(
    logger: logging.Logger, interval: float = 10.0
) -> Callable[[asyncio.AbstractEventLoop, dict[str, object]], None]:
    """A loop exception handler: failed accepts (EMFILE, ENFILE, ENOBUFS, ENOMEM) become one
    line per interval with a count; everything else goes to the default handler."""
    throttle = Throttled(logger, logging.ERROR, interval)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        exc = context.get("exception")
        sock = context.get("socket")
        where = ""
        if sock is not None:
            try:
                where = f" on {sock.getsockname()}"  # type: ignore[attr-defined]
            except OSError:
                pass
        throttle.event(
            f"accept() failed{where}: {exc}; new connections wait until descriptors free up"
        )

    return handler
