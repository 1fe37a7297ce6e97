"""Alerting runtime without a daemon process: a hand-written fake daemon, a real SQLite
store in tmp_path and (for delivery) a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.receivers import WebhookReceiver
from wsgate.config import parse_config
from wsgate.errors import AlertError
from wsgate.runtime.ops.alert_inputs import InputBuilder
from wsgate.runtime.ops.alerting import Alerting, rule_specs


@dataclass
class FakeJob:
    name: str
    interval: float
    runs: int = 0
    consecutive_failures: int = 0
    last_run: float | None = None
    scheduled_since: float | None = None
    paused: bool = False


@dataclass
class FakeJobs:
    jobs: list[FakeJob] = field(default_factory=list)

    def statistics(self) -> list[FakeJob]:
        return list(self.jobs)


class FakeGateway:
    sessions: set[object] = set()


class FakeBudgets:
    def snapshot(self) -> dict[str, dict[str, float]]:
        return {}


class FakeDaemon:
    def __init__(self, state_dir: Path, hook_url: str = "http://127.0.0.1:9/h") -> None:
        self.config_text = f"""
[daemon]
state_dir = "{state_dir}"
node_id = "unit"
[routes.r]
dialect = "raw"
type = "market_data"
[[routes.r.endpoints]]
url = "ws://127.0.0.1:9/"
[alerts]
group_wait = 0
[alerts.channels.hook]
kind = "webhook"
enabled = true
url = "{hook_url}"
min_severity = "info"
[alerts.channels.other]
kind = "log"
enabled = true
min_severity = "info"
"""
        self.config = parse_config(self.config_text, "<test>")
        self.demo = False
        self.rng = random.Random(1)
        self.routes: dict[str, Any] = {}
        self.jobs = FakeJobs([FakeJob("alerts", 1.0), FakeJob("health", 1.0, last_run=0.0)])
        self.gateway = FakeGateway()
        self.budgets = FakeBudgets()
        self.loop_lag = 0.0
        self.store: Any = None


def test_rule_params_reach_the_spec(tmp_path: Path) -> None:
    d = FakeDaemon(tmp_path)
    cfg = parse_config(d.config_text + "\n[alerts.rules.anomaly_detected.params]\nwarmup = 3\n")
    specs = rule_specs(cfg.alerts)
    assert dict(specs["anomaly_detected"].params)["warmup"] == 3.0


def test_missed_runs_from_gap_and_overdue(tmp_path: Path) -> None:
    d = FakeDaemon(tmp_path)
    b = InputBuilder()
    first = b.build(d, 100.0, 0.0)
    # health last ran at t=0 with a 1 s interval: at t=100 it is 99 runs overdue.
    assert first.system.missed_job_runs["health"] == 99
    d.jobs.jobs[1].last_run = 100.0
    d.jobs.jobs[0].runs = 1
    # Normal cadence: one run per interval, nothing missed.
    assert b.build(d, 101.0, 1.0).system.missed_job_runs == {"alerts": 0, "health": 0}
    d.jobs.jobs[0].runs = 2
    d.jobs.jobs[1].last_run = 108.0
    d.jobs.jobs[1].runs = 1
    # The process froze for 8 s: every job is behind.
    missed = b.build(d, 109.0, 9.0).system.missed_job_runs
    assert missed["alerts"] >= 6 and missed["health"] >= 5


def test_reload_or_resume_resets_the_missed_run_baseline(tmp_path: Path) -> None:
    d = FakeDaemon(tmp_path)
    alerts, health = d.jobs.jobs
    alerts.interval = health.interval = 30.0
    health.last_run = 100.0
    b = InputBuilder()
    assert b.build(d, 110.0, 0.0).system.missed_job_runs == {"alerts": 0, "health": 0}
    # A reload shortens both intervals to 1 s at t=115: a new schedule. The old schedule's
    # last run (t=100) and the evaluation gap are not "16 missed runs".
    alerts.interval = health.interval = 1.0
    alerts.scheduled_since = health.scheduled_since = 115.0
    alerts.runs = 1
    health.last_run, health.runs = 115.5, 1
    assert b.build(d, 116.0, 6.0).system.missed_job_runs == {"alerts": 0, "health": 0}
    # The new schedule is then judged as usual: health stops running for 5 s.
    alerts.runs = 6
    missed = b.build(d, 121.0, 11.0).system.missed_job_runs
    assert missed == {"alerts": 0, "health": 4}
    # Paused: nothing is due; resumed at t=200: the count starts from the resume.
    health.paused = True
    alerts.runs = 85
    assert "health" not in b.build(d, 200.0, 90.0).system.missed_job_runs
    health.paused = False
    health.scheduled_since = 200.0
    alerts.runs = 86
    assert b.build(d, 201.0, 91.0).system.missed_job_runs == {"alerts": 0, "health": 0}


def test_silence_and_ack_survive_a_new_instance(tmp_path: Path) -> None:
    async def main() -> None:
        d = FakeDaemon(tmp_path)
        a = Alerting(d, clock=lambda: 1000.0)
        async with asyncio.TaskGroup() as tg:
            await a.start(tg)
            view = a.engine.raise_external(
                "system_health",
                {"check": "unit"},
                a.engine.rules["system_health"].severity,
                "unit test",
                1000.0,
            )
            a.ack(view.fingerprint, "tester", "mine")
            sil, matches = a.silence(["check=unit"], 3600, "quiet please", "tester")
            assert [m.fingerprint for m in matches] == [view.fingerprint]
            with pytest.raises(AlertError):
                a.silence(["check=unit"], 0, "no time", "tester")
            await a.close(1.0)
        d2 = FakeDaemon(tmp_path)
        d2.store = a.store  # the same shared store, as the daemon hands it over
        b = Alerting(d2, clock=lambda: 1001.0)
        b._restore(1001.0)
        assert [s.id for s in b.silences()] == [sil.id]
        row = next(r for r in b.active() if r["fingerprint"] == view.fingerprint)
        assert row["acknowledged"] and row["silenced"]
        assert {e["kind"] for e in b.history(None, None, None)} >= {"alert_ack", "silence_created"}

    asyncio.run(asyncio.wait_for(main(), 20))


def test_channel_gone_alerts_the_other_channels(tmp_path: Path) -> None:
    async def main() -> None:
        async with WebhookReceiver() as rx:
            d = FakeDaemon(tmp_path, rx.url)
            a = Alerting(d)
            async with asyncio.TaskGroup() as tg:
                await a.start(tg)
                a._on_channel_disabled("other", "HTTP 404")
                a.tick()
                await rx.wait_for_unique(1, within=10)
                await a.close(2.0)
            payload = next(iter(rx.unique.values()))
            labels = payload["alerts"][0]["labels"]
            assert labels["channel"] == "other" and labels["severity"] == "critical"
            assert a.statistics().channels_disabled == ("other",)

    asyncio.run(asyncio.wait_for(main(), 20))
