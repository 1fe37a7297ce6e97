"""Cancellation is never swallowed on wsgate's wait-with-a-bound paths (Python 3.11).

3.11's ``asyncio.wait_for`` returns the inner result when the caller's cancellation races
with the inner's completion; a stopping task then carries on (the cluster's hang on close).
"""

from __future__ import annotations

import ast
import asyncio
import random
from pathlib import Path

import pytest

import wsgate
from wsgate.runtime.ops import alerting
from wsgate.runtime.upstream.connection import HostBudgets, UpstreamConnection, UpstreamSettings


def test_no_asyncio_wait_for_left_in_the_package() -> None:
    found = []
    for path in Path(wsgate.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ):
                found.append(f"{path.name}:{node.lineno}")
    assert found == [], "use `async with asyncio.timeout(...)`: " + ", ".join(found)


def test_a_reconnect_pause_woken_and_cancelled_at_once_ends_cancelled() -> None:
    async def scenario() -> None:
        settings = UpstreamSettings(route="r", endpoint="e", url="ws://127.0.0.1:9")
        conn = UpstreamConnection("r-c1", settings, None, HostBudgets(), random.Random(1))
        for steps in range(5):  # each point of the wake-up the stop can arrive at
            pause = asyncio.create_task(conn._sleep(30.0))
            await asyncio.sleep(0)
            conn._wake.set()
            for _ in range(steps):
                await asyncio.sleep(0)  # the wake-up is under way...
            finished = pause.done()
            pause.cancel()  # ...when the stop arrives: accepted unless the pause ended
            if finished:
                await pause
            else:
                with pytest.raises(asyncio.CancelledError):
                    await pause

    asyncio.run(scenario())


def test_joining_a_task_while_being_cancelled_ends_cancelled() -> None:
    async def scenario() -> None:
        done = asyncio.Event()

        async def worker() -> None:
            await done.wait()

        async def stopper(task: asyncio.Task[None]) -> None:
            await alerting._join(task, 30.0)

        for steps in range(5):
            done.clear()
            work = asyncio.create_task(worker())
            stop = asyncio.create_task(stopper(work))
            await asyncio.sleep(0)
            done.set()
            for _ in range(steps):
                await asyncio.sleep(0)  # the worker ends...
            finished = stop.done()
            stop.cancel()  # ...as the shutdown cancels the joiner
            if finished:
                await stop
            else:
                with pytest.raises(asyncio.CancelledError):
                    await stop
        # A task that was cancelled by someone else is absorbed; a slow one is bounded.
        other = asyncio.create_task(asyncio.sleep(30))
        await asyncio.sleep(0)
        other.cancel()
        await alerting._join(other, 1.0)
        slow = asyncio.create_task(asyncio.sleep(30))
        await alerting._join(slow, 0.05)
        assert slow.cancelled()

    asyncio.run(scenario())
