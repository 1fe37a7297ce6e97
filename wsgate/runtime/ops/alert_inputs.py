"""Build the alert engine's :class:`~wsgate.core.alerts.AlertInputs` from the live daemon.

The engine is pure and sees only a frozen snapshot; everything that needs memory between
two evaluations lives here: when each connection went down, per-connection baselines
(slow EWMAs of message rate and latency), the per-connection anomaly detectors, the route
counters at the previous snapshot (``no_candidate_events`` is cumulative on the route, the
rule wants "since the previous snapshot") and the job run counts behind "missed runs".

Baselines need a warm-up before baseline-driven alerts may fire. Nothing is learned until
the connection has been open for a whole rate window (the ramp-up after an open is not
"normal"); the throughput baseline is trusted after ``performance_degradation``'s
``warmup`` seconds of learning (and :data:`BASELINE_MIN_SAMPLES` samples), and starts
over when the number of subscriptions the connection carries changes (fewer channels is
less traffic, not a slower exchange). The anomaly detectors have their own ``warmup``.

Staleness: a connection is *stale* when sessions' subscriptions on it expect data and no
channel data arrived for longer than the channels' heartbeat cadence plus a grace (the
protocol's own bound: hub resubscribes and reconnects at the same point). The silence is
measured across reconnects, so a venue that accepts connections but never sends data
stays stale. It is *suspect* earlier, when the silence is longer than the time
:data:`SUSPECT_MESSAGES` messages take at its usual rate: that holds its symptoms back
(causal inhibition) until the verdict comes.

Missed runs (under ``system_health``, ``check=job``): a job is behind when its
last run is more than one interval overdue, or when, between two evaluations, fewer runs
completed than the elapsed time allows. A frozen process (SIGSTOP, a VM pause, swap
storm) shows up as missed runs of every job at the first evaluation after it thaws.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wsgate.config import Config
from wsgate.core.alerts import AlertInputs, ConnInput, RouteInput, RuleSpec, SystemInput
from wsgate.core.anomaly import AnomalyDetector
from wsgate.core.health import HealthInputs, aggregate_health, health_score
from wsgate.core.metrics import Ewma
from wsgate.core.states import ConnState
from wsgate.core.subscriptions import SubState
from wsgate.core.types import ConnectionType
from wsgate.runtime.downstream.gateway import Gateway
from wsgate.runtime.routing.routes import RouteRuntime
from wsgate.runtime.system.scheduler import Jobs
from wsgate.runtime.upstream.connection import HostBudgets, UpstreamConnection

__all__ = ["AlertSource", "AnomalySettings", "InputBuilder", "InputBuilderStatistics"]

log = logging.getLogger("wsgate.alerts")

BASELINE_HALF_LIFE = 600.0  # seconds: a baseline follows slow drifts, not a fault
BASELINE_MIN_SAMPLES = 5  # evaluations before a baseline is trusted
LATENCY_FLOOR = 0.005  # a 1 ms baseline must not turn 4 ms of jitter into a 4x slowdown
IMBALANCE_MIN_LOAD = 10  # below this many subscriptions a ratio says nothing
PERF_WARMUP = 120.0  # seconds of learning before a throughput/latency baseline is trusted
STALE_GRACE = 1.0  # past a channel's cadence, as the subscription registry allows
SUSPECT_MIN = 3.0  # seconds: a shorter silence is never suspect
SUSPECT_MESSAGES = 10  # a silence as long as this many messages take at the usual rate
_SKIP_STATES = (ConnState.DISABLED, ConnState.CLOSED, ConnState.DRAINING)


class AlertSource(Protocol):
    """The daemon as the alert inputs read it (the daemon provides it).

    ``analytics`` (its system health) and ``cluster`` (peer membership) are optional
    attributes: read when present, so a single-purpose host can leave them out.
    """

    @property
    def config(self) -> Config: ...
    @property
    def routes(self) -> Mapping[str, RouteRuntime]: ...
    @property
    def budgets(self) -> HostBudgets: ...
    @property
    def jobs(self) -> Jobs: ...
    @property
    def gateway(self) -> Gateway: ...
    @property
    def loop_lag(self) -> float: ...


@dataclass(frozen=True)
class AnomalySettings:
    """Detector settings, from ``anomaly_detected`` rule params (see :meth:`from_rule`)."""

    warmup: int = 30
    window: int = 120
    z_threshold: float = 4.0
    mad_threshold: float = 4.0
    min_band_rate: float = 5.0  # messages per second
    min_band_latency: float = 0.05  # seconds

    @classmethod
    def from_rule(cls, spec: RuleSpec | None) -> AnomalySettings:
        if spec is None:
            return cls()
        p = dict(spec.params)
        d = cls()
        return cls(
            warmup=max(1, int(p.get("warmup", d.warmup))),
            window=max(3, int(p.get("window", d.window))),
            z_threshold=float(p.get("z_threshold", d.z_threshold)),
            mad_threshold=float(p.get("mad_threshold", d.mad_threshold)),
            min_band_rate=float(p.get("min_band_rate", d.min_band_rate)),
            min_band_latency=float(p.get("min_band_latency", d.min_band_latency)),
        )

    def detector(self, min_band: float) -> AnomalyDetector:
        return AnomalyDetector(
            z_threshold=self.z_threshold,
            mad_threshold=self.mad_threshold,
            window=self.window,
            warmup=self.warmup,
            min_band=min_band,
        )


@dataclass(frozen=True)
class InputBuilderStatistics:
    builds: int
    connections_tracked: int
    anomalies_flagged: int
    last_build_seconds: float | None


class _ConnMemory:
    __slots__ = (
        "base_latency",
        "base_rate",
        "down_since",
        "expect_since",
        "lat_det",
        "lat_n",
        "lat_since",
        "rate_det",
        "rate_n",
        "rate_since",
        "rate_subs",
    )

    def __init__(self, settings: AnomalySettings) -> None:
        self.down_since: float | None = None
        self.expect_since: float | None = None  # since when sessions expect data on it
        self.base_rate = Ewma(BASELINE_HALF_LIFE)
        self.base_latency = Ewma(BASELINE_HALF_LIFE)
        self.rate_n = self.lat_n = 0  # samples learned
        self.rate_since: float | None = None  # learning began (monotonic)
        self.lat_since: float | None = None
        self.rate_subs = -1  # subscriptions carried while the rate baseline learned
        self.rate_det = settings.detector(settings.min_band_rate)
        self.lat_det = settings.detector(settings.min_band_latency)

    def reset_rate(self, subs: int) -> None:
        self.base_rate = Ewma(BASELINE_HALF_LIFE)
        self.rate_n, self.rate_since, self.rate_subs = 0, None, subs


class InputBuilder:
    """Turns the daemon's live statistics into one :class:`AlertInputs` per evaluation.

    ``build`` reads only; the memory it keeps is described in the module docstring.
    """

    def __init__(
        self, anomaly: AnomalySettings | None = None, perf_warmup: float = PERF_WARMUP
    ) -> None:
        self.anomaly = anomaly or AnomalySettings()
        self.perf_warmup = perf_warmup
        self._conns: dict[str, _ConnMemory] = {}
        self._route_counters: dict[str, tuple[int, int]] = {}
        # job -> (evaluation time, runs then, the schedule it belonged to)
        self._job_runs: dict[str, tuple[float, int, float | None]] = {}
        self._last_eval: float | None = None
        self._builds = 0
        self._anomalies = 0
        self._last_cost: float | None = None

    def set_anomaly(self, settings: AnomalySettings) -> None:
        """New detector settings (reload): detectors restart their warm-up."""
        if settings != self.anomaly:
            self.anomaly = settings
            self._conns.clear()

    def statistics(self) -> InputBuilderStatistics:
        return InputBuilderStatistics(
            self._builds, len(self._conns), self._anomalies, self._last_cost
        )

    def __repr__(self) -> str:
        return f"<InputBuilder builds={self._builds} connections={len(self._conns)}>"

    # ------------------------------------------------------------------ the snapshot

    def build(self, daemon: AlertSource, wall: float, mono: float) -> AlertInputs:
        start = time.perf_counter()
        conns: list[ConnInput] = []
        routes: list[RouteInput] = []
        scores: list[tuple[float, float]] = []
        seen: set[str] = set()
        for rt in list(daemon.routes.values()):
            route_conns = list(rt.connections())
            expect = _expected_cadence(getattr(rt, "hub", None))
            for conn in route_conns:
                if conn.state in _SKIP_STATES:
                    continue
                seen.add(conn.id)
                ci, score = self._connection(rt, conn, mono, expect.get(conn.id))
                conns.append(ci)
                scores.append((score, 1.0))
            routes.append(self._route(daemon, rt, route_conns))
        for gone in [cid for cid in self._conns if cid not in seen]:
            del self._conns[gone]
        for name in [r for r in self._route_counters if r not in daemon.routes]:
            del self._route_counters[name]
        system = self._system(daemon, scores, len(conns), wall)
        self._last_eval = wall
        self._builds += 1
        self._last_cost = time.perf_counter() - start
        return AlertInputs(
            now=wall,
            node_id=daemon.config.daemon.node_id,
            connections=tuple(conns),
            routes=tuple(routes),
            system=system,
        )

    def _trusted(self, n: int, since: float | None, mono: float) -> bool:
        return n >= BASELINE_MIN_SAMPLES and since is not None and mono - since >= self.perf_warmup

    def _connection(
        self, rt: Any, conn: Any, mono: float, cadence: float | None
    ) -> tuple[ConnInput, float]:
        mem = self._conns.get(conn.id)
        if mem is None:
            mem = self._conns[conn.id] = _ConnMemory(self.anomaly)
        m = conn.metrics.snapshot(mono)
        up = conn.state.is_up
        if up:
            mem.down_since = None
        elif mem.down_since is None:
            # Never opened: down since it was created; else since its current state began.
            mem.down_since = conn.created_at if conn.opened_at is None else conn.sm.since
        hub = getattr(rt, "hub", None)
        subs = hub.registry.load(conn.id) if hub is not None else 0
        if up and subs > 0 and subs != mem.rate_subs:
            mem.reset_rate(subs)  # other channels, other traffic: learn it again
        latency = conn.metrics.effective_latency()
        base_rate = mem.base_rate.value if self._trusted(mem.rate_n, mem.rate_since, mono) else None
        base_lat = mem.base_latency.value if self._trusted(mem.lat_n, mem.lat_since, mono) else None
        anomaly_rate = anomaly_lat = False
        # Only a connection open for a whole rate window has a rate worth learning from.
        opened = conn.opened_at
        settled = up and opened is not None and mono - opened >= conn.metrics.rate_window
        if settled:
            anomaly_rate = mem.rate_det.update(m.msg_rate_in).anomalous
            if latency is not None:
                anomaly_lat = mem.lat_det.update(latency).anomalous
            self._anomalies += anomaly_rate + anomaly_lat
            # The baseline does not learn from what the detector calls anomalous, so a
            # fault does not become the new normal while it is being reported.
            if not anomaly_rate and subs > 0:
                mem.base_rate.update(mono, m.msg_rate_in)
                mem.rate_n += 1
                mem.rate_since = mono if mem.rate_since is None else mem.rate_since
            if latency is not None and not anomaly_lat:
                mem.base_latency.update(mono, latency)
                mem.lat_n += 1
                mem.lat_since = mono if mem.lat_since is None else mem.lat_since
        silent, stale, suspect = self._staleness(mem, conn, hub, up, cadence, mono)
        ci = ConnInput(
            id=conn.id,
            route=rt.name,
            type=rt.cfg.type,
            state_up=up,
            seconds_down=0.0 if up or mem.down_since is None else max(0.0, mono - mem.down_since),
            latency=latency,
            error_rate=m.error_rate,
            reconnects_recent=m.reconnects_recent,
            msg_rate=m.msg_rate_in if up else None,
            baseline_rate=base_rate,
            baseline_latency=max(base_lat, LATENCY_FLOOR) if base_lat is not None else None,
            subscriptions=subs,
            capacity=int(rt.cfg.max_subscriptions_per_connection or 0) if hub is not None else 0,
            anomaly_rate=anomaly_rate,
            anomaly_latency=anomaly_lat,
            silent_for=silent,
            stale_for=stale,
            stale_suspect=suspect,
        )
        score = rt.health.get(conn.id)
        if score is None:
            score = health_score(
                HealthInputs(
                    state_up=up,
                    degraded=conn.state is ConnState.DEGRADED,
                    latency=latency,
                    baseline_latency=ci.baseline_latency,
                    stale_fraction=0.0,
                    error_rate=m.error_rate,
                    reconnects_recent=m.reconnects_recent,
                    message_rate=m.msg_rate_in,
                    expected_rate=None,
                )
            ).score
        return ci, float(score)

    def _staleness(
        self,
        mem: _ConnMemory,
        conn: UpstreamConnection,
        hub: Any,
        up: bool,
        cadence: float | None,
        mono: float,
    ) -> tuple[float | None, float, bool]:
        """(seconds silent, seconds stale past the protocol's bound, suspect)."""
        if not up:
            return None, 0.0, False  # down: connection_failure judges the downtime
        if cadence is None or conn.state is ConnState.DEGRADED:
            mem.expect_since = None  # nothing expected, or maintenance: silence is normal
            return None, 0.0, False
        if mem.expect_since is None:
            mem.expect_since = mono
        uplink = hub.ups.get(conn.id) if hub is not None else None
        last = getattr(uplink, "last_data_at", None)
        ref = mem.expect_since if last is None or last < mem.expect_since else float(last)
        silent = max(0.0, mono - ref)
        hard = cadence + STALE_GRACE
        soft = hard
        if mem.rate_n >= 3 and mem.base_rate.value:
            soft = max(SUSPECT_MIN, SUSPECT_MESSAGES / mem.base_rate.value)
        return silent, max(0.0, silent - hard), silent > min(soft, hard)

    def _route(
        self, daemon: AlertSource, rt: RouteRuntime, conns: list[UpstreamConnection]
    ) -> RouteInput:
        no_cand, fail_open = int(rt.no_candidate_events), int(rt.fail_open_events)
        # A route's counters start at 0 with the route, so events before the first
        # evaluation count too (a single refused placement is answered at once, not retried).
        prev = self._route_counters.get(rt.name, (0, 0))
        self._route_counters[rt.name] = (no_cand, fail_open)
        hub = getattr(rt, "hub", None)
        ratio = 1.0
        if hub is not None:
            loads = [hub.registry.load(c.id) for c in conns if c.state is ConnState.OPEN]
            total = sum(loads)
            if len(loads) >= 2 and total >= IMBALANCE_MIN_LOAD:
                ratio = max(loads) / (total / len(loads))
        hosts = {c.settings.host for c in conns}
        budgets: Mapping[str, Mapping[str, float]] = daemon.budgets.snapshot()
        used = max((float(budgets[h]["used_fraction"]) for h in hosts if h in budgets), default=0.0)
        return RouteInput(
            name=rt.name,
            type=rt.cfg.type if isinstance(rt.cfg.type, ConnectionType) else ConnectionType.SYSTEM,
            open_connections=int(rt.open_connections()),
            desired_connections=int(rt.cfg.min_connections),
            sessions=len(rt.sessions),
            max_sessions=int(rt.cfg.max_sessions or 0),
            no_candidate_events=max(0, no_cand - prev[0]),
            fail_open_engaged=fail_open > prev[1],
            imbalance_ratio=ratio,
            connect_budget_used_fraction=used,
        )

    def _system(
        self, daemon: AlertSource, scores: list[tuple[float, float]], n_conns: int, wall: float
    ) -> SystemInput:
        health = self._overall_health(daemon, scores)
        jobs = list(daemon.jobs.statistics())
        failures = sum(int(j.consecutive_failures) for j in jobs)
        missed = self._missed_runs(jobs, wall)
        return SystemInput(
            health_score=health,
            job_failures_recent=failures,
            missed_job_runs=missed,
            loop_lag=float(daemon.loop_lag),
            connections_total=n_conns,
            max_connections=int(daemon.config.daemon.max_connections),
            sessions_total=len(daemon.gateway.sessions),
            max_sessions=int(daemon.config.gateway.max_sessions),
            **_cluster_fields(daemon),
        )

    @staticmethod
    def _overall_health(daemon: AlertSource, scores: list[tuple[float, float]]) -> float:
        analytics = getattr(daemon, "analytics", None)
        overview = getattr(analytics, "overview", None)
        if callable(overview):
            try:
                value = overview().health
            except Exception:  # another subsystem's bug must not stop alerting
                log.exception("analytics overview failed; scoring health locally")
            else:
                if isinstance(value, int | float) and math.isfinite(value):
                    return float(value)
        return aggregate_health(scores) if scores else 100.0

    def _missed_runs(self, jobs: Iterable[Any], wall: float) -> dict[str, int]:
        """Runs each job is behind its schedule.

        The baseline is the job's *current* schedule: a reload that changes an interval, or
        a resumed job, starts a new one (``JobStats.scheduled_since``), so runs the old
        schedule never asked for are not "missed" (a shortened interval used to read as ten
        missed runs at once). A paused job misses nothing.
        """
        out: dict[str, int] = {}
        for j in jobs:
            interval = float(j.interval)
            if interval <= 0 or getattr(j, "paused", False):
                self._job_runs.pop(j.name, None)
                continue
            since = getattr(j, "scheduled_since", None)
            runs = int(j.runs) + (1 if j.name == "alerts" else 0)  # this run is in flight
            prev = self._job_runs.get(j.name)
            if prev is None or prev[2] != since:
                prev = None  # new job or new schedule: this evaluation is the baseline
            overdue = 0
            if j.name != "alerts":
                ref = j.last_run
                if since is not None and (ref is None or float(ref) < float(since)):
                    ref = since  # nothing was due before the current schedule began
                if ref is not None:
                    overdue = max(0, math.floor((wall - float(ref)) / interval) - 1)
            behind = 0
            if prev is not None:
                gap = wall - prev[0]
                behind = max(0, math.floor(gap / interval) - (runs - prev[1]) - 1)
            self._job_runs[j.name] = (wall, runs, since)
            out[j.name] = max(overdue, behind)
        return out


def _expected_cadence(hub: Any) -> dict[str, float]:
    """Per connection, the longest cadence among subscriptions sessions wait on there."""
    out: dict[str, float] = {}
    if hub is None:
        return out
    for sub in hub.registry.subscriptions():
        if sub.conn_id is None or not sub.sessions:
            continue
        if sub.state is SubState.PENDING or sub.state is SubState.CONFIRMED:
            out[sub.conn_id] = max(out.get(sub.conn_id, 0.0), float(sub.cadence))
    return out


def _cluster_fields(daemon: AlertSource) -> dict[str, Any]:
    """Peers as this node's membership judges them (nothing on a single node)."""
    cluster = getattr(daemon, "cluster", None)
    fields = getattr(cluster, "alert_fields", None)
    return dict(fields(time.monotonic())) if callable(fields) else {}
