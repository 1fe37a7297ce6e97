"""The scheduler reports when each job's current schedule began (the missed-run baseline)."""

from __future__ import annotations

import asyncio
import time

from wsgate.runtime.system.scheduler import Jobs


def test_reload_and_resume_start_a_new_schedule() -> None:
    async def main() -> None:
        async def nothing() -> None:
            return None

        jobs = Jobs({"health": nothing, "alerts": nothing})
        jobs.start({"health": 30.0, "alerts": 30.0})
        try:
            first = {j.name: j.scheduled_since or 0.0 for j in jobs.statistics()}
            assert all(0 < v <= time.time() for v in first.values())
            await asyncio.sleep(0.01)
            assert jobs.sync({"health": 1.0, "alerts": 30.0}) == ["health"]
            after = {j.name: j.scheduled_since or 0.0 for j in jobs.statistics()}
            assert after["health"] > first["health"]
            assert after["alerts"] == first["alerts"]  # unchanged interval, same schedule
            jobs.pause("alerts")
            assert next(j for j in jobs.statistics() if j.name == "alerts").paused
            await asyncio.sleep(0.01)
            jobs.resume("alerts")
            resumed = next(j for j in jobs.statistics() if j.name == "alerts")
            assert not resumed.paused and (resumed.scheduled_since or 0.0) > first["alerts"]
        finally:
            await jobs.shutdown(0.5)

    asyncio.run(asyncio.wait_for(main(), 10))
