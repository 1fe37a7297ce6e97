"""Throttled logging: one line per interval with a count, never a storm."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import pytest

from wsgate.logthrottle import ACCEPT_FAILED, Throttled, throttled_accept_errors


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_event_at_once_then_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    t = Throttled(logging.getLogger("t"), logging.ERROR, interval=10.0, clock=clock)
    with caplog.at_level(logging.ERROR, "t"):
        for i in range(125_888):
            clock.now = i * 15 / 125_888  # 125,888 events in 15 s
            t.event("accept() failed: [Errno 24] Too many open files")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and t.lines == 2 and t.total == 125_888
    assert lines[0] == "accept() failed: [Errno 24] Too many open files"
    count = int(lines[1].rsplit("(", 1)[1].split()[0])  # the events of the first 10 s
    assert 83_900 < count < 83_950 and lines[1].endswith("times in the last 10s)"), lines[1]


def test_the_last_count_is_reported_even_if_nothing_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        t = Throttled(logging.getLogger("t"), logging.ERROR, interval=0.2)
        for _ in range(5):
            t.event("refused")
        async with asyncio.timeout(5.0):  # the summary comes from the throttle's own timer
            while len(caplog.records) < 2:  # noqa: ASYNC110 - a log record has no event
                await asyncio.sleep(0.02)

    with caplog.at_level(logging.ERROR, "t"):
        asyncio.run(main())
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["refused", "refused"]
    assert "(4 times in the last" in caplog.records[1].getMessage()


def test_loop_handler_throttles_failed_accepts_and_passes_the_rest_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = throttled_accept_errors(logging.getLogger("acc"), interval=60.0)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            for _ in range(1000):
                exc = OSError(errno.EMFILE, "Too many open files")
                handler(loop, {"message": ACCEPT_FAILED, "exception": exc, "socket": sock})
        handler(loop, {"message": "something else broke"})

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    accepts = [r for r in caplog.records if r.name == "acc"]
    assert len(accepts) == 1 and "Too many open files" in accepts[0].getMessage()
    assert "127.0.0.1" in accepts[0].getMessage()
    assert any(r.getMessage() == "something else broke" for r in caplog.records)
