"""The daemon's periodic jobs on APScheduler 3.11 (the only module that imports it).

Why a wrapper: AsyncIOScheduler.shutdown() neither waits nor lets running coroutine
jobs finish, and errors only reach a listener. Each job here is wrapped so its
duration, failures and last error are measured, a failure never escapes, and the
daemon can wait for in-flight runs (bounded) before shutting the scheduler down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["JobStats", "Jobs"]

log = logging.getLogger("wsgate.jobs")

JobFunc = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class JobStats:
    name: str
    interval: float
    runs: int
    failures: int
    consecutive_failures: int
    last_run: float | None  # unix time
    next_run: float | None  # unix time
    last_duration: float | None
    max_duration: float
    last_error: str | None
    # Unix time the current schedule began: the job was added, its interval changed by a
    # reload, or it was resumed. Runs "missed" before it were never due (see alert_inputs).
    scheduled_since: float | None = None
    paused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Job:
    def __init__(self, name: str, func: JobFunc, interval: float) -> None:
        self.name, self.func, self.interval = name, func, interval
        self.runs = self.failures = self.consecutive_failures = 0
        self.last_run: float | None = None
        self.last_duration: float | None = None
        self.max_duration = 0.0
        self.last_error: str | None = None
        self.scheduled_since = time.time()
        self.paused = False


class Jobs:
    def __init__(self, funcs: Mapping[str, JobFunc]) -> None:
        self._funcs = dict(funcs)
        self._jobs: dict[str, _Job] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._scheduler = AsyncIOScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self, intervals: Mapping[str, float]) -> None:
        """Must run inside the event loop (AsyncIOScheduler.start needs a running loop)."""
        for name, interval in intervals.items():
            self._add(name, interval)
        self._scheduler.start()

    def _add(self, name: str, interval: float) -> None:
        job = _Job(name, self._funcs[name], interval)
        self._jobs[name] = job
        self._scheduler.add_job(
            self._run,
            IntervalTrigger(seconds=interval),
            args=[name],
            id=name,
            name=name,
            replace_existing=True,
        )

    def sync(self, intervals: Mapping[str, float]) -> list[str]:
        """Apply new intervals after a reload, rescheduling only jobs whose interval changed."""
        changed = []
        for name, interval in intervals.items():
            job = self._jobs.get(name)
            if job is None:
                self._add(name, interval)
                changed.append(name)
            elif job.interval != interval:
                job.interval = interval
                job.scheduled_since = time.time()
                self._scheduler.reschedule_job(name, trigger=IntervalTrigger(seconds=interval))
                changed.append(name)
        for name in set(self._jobs) - set(intervals):
            self._scheduler.remove_job(name)
            del self._jobs[name]
            changed.append(name)
        return changed

    async def _run(self, name: str) -> None:
        job = self._jobs.get(name)
        if job is None:
            return
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        start = time.perf_counter()
        job.last_run = time.time()
        try:
            await job.func()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            job.failures += 1
            job.consecutive_failures += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", name)
        else:
            job.consecutive_failures = 0
        finally:
            job.runs += 1
            job.last_duration = time.perf_counter() - start
            job.max_duration = max(job.max_duration, job.last_duration)
            if task is not None:
                self._inflight.discard(task)

    def pause(self, name: str) -> None:
        """Stop scheduling one job until :meth:`resume` (its runs are not "missed")."""
        self._jobs[name].paused = True
        self._scheduler.pause_job(name)

    def resume(self, name: str) -> None:
        """Schedule a paused job again; its schedule (and the missed-run count) starts now."""
        job = self._jobs[name]
        job.paused = False
        job.scheduled_since = time.time()
        self._scheduler.resume_job(name)

    async def run_now(self, name: str) -> None:
        """Run one job immediately (CLI, tests, startup), measured like a scheduled run."""
        await self._run(name)

    async def shutdown(self, grace: float = 2.0) -> None:
        self._scheduler.pause()
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)
        with contextlib.suppress(Exception):
            self._scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    def statistics(self) -> list[JobStats]:
        out = []
        for name, job in self._jobs.items():
            aps = self._scheduler.get_job(name)
            nxt = aps.next_run_time if aps is not None else None
            out.append(
                JobStats(
                    name=name,
                    interval=job.interval,
                    runs=job.runs,
                    failures=job.failures,
                    consecutive_failures=job.consecutive_failures,
                    last_run=job.last_run,
                    next_run=nxt.astimezone(UTC).timestamp() if isinstance(nxt, datetime) else None,
                    last_duration=job.last_duration,
                    max_duration=job.max_duration,
                    last_error=job.last_error,
                    scheduled_since=job.scheduled_since,
                    paused=job.paused,
                )
            )
        return out
