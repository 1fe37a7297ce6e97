"""The ten alert types: rule specs, their defaults, and evaluation of a snapshot.

A rule turns an :class:`~wsgate.core.alerts.inputs.AlertInputs` snapshot into
:class:`Observation` values, one per thing it watches (a connection, a route, a peer...).
Every observation says whether its value is beyond the *fire* threshold (``breaching``),
back beyond the *clear* threshold (``clear``), or in between (neither: the state machine
holds, which is the hysteresis). Direction is inferred from the thresholds: ``fire >= clear``
means "higher is worse", ``fire < clear`` means "lower is worse" (the health score).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from wsgate.core.alerts.inputs import AlertInputs, ConnInput
from wsgate.core.alerts.units import (
    format_count,
    format_duration,
    format_latency,
    format_percent,
    format_rate,
    format_ratio,
)
from wsgate.core.types import Severity
from wsgate.errors import ConfigError, ConfigProblem

__all__ = [
    "ALERT_TYPES",
    "DEFAULT_RULES",
    "LABEL_NAMES",
    "RULE_PARAMS",
    "Observation",
    "RawObservation",
    "RuleSpec",
    "evaluate_rules",
    "iter_observations",
    "judge",
    "rule_spec_from",
]

ALERT_TYPES: tuple[str, ...] = (
    "connection_failure",
    "high_latency",
    "high_error_rate",
    "frequent_reconnects",
    "load_balancer_issue",
    "cluster_node_down",
    "performance_degradation",
    "capacity_warning",
    "anomaly_detected",
    "system_health",
)

# Every label name a rule (or an external alert) can put on an alert, besides the ones an
# operator adds in ``[alerts.rules.<type>.labels]``. Silences are checked against these, so
# ``--match rout=bitfinex`` is refused instead of silencing nothing.
LABEL_NAMES: frozenset[str] = frozenset(
    {
        "alertname",
        "severity",
        "node",
        "peer",
        "route",
        "connection",
        "type",
        "issue",
        "check",
        "job",
        "metric",
        "resource",
        "channel",
    }
)

# Ratios are capped so values stay finite: JSON has no Infinity.
_RATIO_CAP = 1e6


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One alert type's configuration; same fields as the config's ``AlertRuleConfig``.

    ``params`` holds the few type-specific secondary thresholds (e.g. event-loop lag for
    ``system_health``); unknown keys are ignored, missing keys fall back to the defaults.
    """

    type: str
    enabled: bool = True
    severity: Severity = Severity.WARNING
    fire: float = 1.0
    clear: float = 0.0
    pending_samples: int = 2  # M of ...
    window: int = 3  # ... the last N samples must breach to fire
    keep_firing_for: float = 0.0
    labels: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, float], ...] = ()

    def param(self, name: str) -> float:
        for key, value in self.params:
            if key == name:
                return value
        for key, value in _DEFAULT_PARAMS.get(self.type, ()):
            if key == name:
                return value
        raise KeyError(f"alert rule {self.type!r} has no parameter {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "enabled": self.enabled,
            "severity": self.severity.value,
            "fire": self.fire,
            "clear": self.clear,
            "pending_samples": self.pending_samples,
            "window": self.window,
            "keep_firing_for": self.keep_firing_for,
            "labels": dict(self.labels),
            "params": dict(self.params),
        }


_DEFAULT_PARAMS: dict[str, tuple[tuple[str, float], ...]] = {
    "system_health": (
        ("loop_lag_fire", 0.5),
        ("loop_lag_clear", 0.1),
        ("job_failures_fire", 3.0),
        ("job_failures_clear", 0.0),
        # A scheduled job behind by this many runs (a frozen or starved loop) is this
        # node's own health; it was once mislabelled cluster_node_down.
        ("missed_runs_fire", 3.0),
        ("missed_runs_clear", 0.0),
    ),
    # Sparse filter: a baseline this quiet says nothing about degradation.
    "performance_degradation": (
        ("min_baseline_rate", 0.1),
        # Seconds a baseline learns (on a connection open for a whole rate window) before
        # it is trusted; anomaly_detected has its own warm-up, in samples.
        ("warmup", 120.0),
    ),
    # The runtime's anomaly detectors (one per connection and series) read these.
    "anomaly_detected": (
        ("warmup", 30.0),
        ("window", 120.0),
        ("z_threshold", 4.0),
        ("mad_threshold", 4.0),
        ("min_band_rate", 5.0),
        ("min_band_latency", 0.05),
    ),
}

# Parameter names each rule type accepts under [alerts.rules.<type>.params].
RULE_PARAMS: Mapping[str, frozenset[str]] = MappingProxyType(
    {t: frozenset(k for k, _ in kv) for t, kv in _DEFAULT_PARAMS.items()}
)


def _spec(type_: str, severity: Severity, fire: float, clear: float, **kw: Any) -> RuleSpec:
    return RuleSpec(type=type_, severity=severity, fire=fire, clear=clear, **kw)


DEFAULT_RULES: Mapping[str, RuleSpec] = MappingProxyType(
    {
        "connection_failure": _spec("connection_failure", Severity.CRITICAL, 1.0, 0.0),
        "high_latency": _spec("high_latency", Severity.WARNING, 0.5, 0.3),
        "high_error_rate": _spec("high_error_rate", Severity.WARNING, 0.05, 0.02),
        "frequent_reconnects": _spec("frequent_reconnects", Severity.WARNING, 5.0, 2.0),
        "load_balancer_issue": _spec("load_balancer_issue", Severity.WARNING, 3.0, 2.0),
        "cluster_node_down": _spec("cluster_node_down", Severity.CRITICAL, 3.0, 1.0),
        "performance_degradation": _spec("performance_degradation", Severity.WARNING, 2.0, 1.5),
        "capacity_warning": _spec("capacity_warning", Severity.WARNING, 0.8, 0.7),
        "anomaly_detected": _spec("anomaly_detected", Severity.WARNING, 1.0, 0.0),
        "system_health": _spec("system_health", Severity.CRITICAL, 60.0, 70.0),
    }
)

_SPEC_FIELDS = ("enabled", "severity", "fire", "clear", "pending_samples", "window")


def rule_spec_from(cfg: Any) -> RuleSpec:
    """Build a :class:`RuleSpec` from any object with ``AlertRuleConfig``'s attributes.

    Missing attributes fall back to :data:`DEFAULT_RULES` for that type, so a partial config
    object (or a ``SimpleNamespace``) works. Raises :class:`ConfigError` listing every problem.
    """
    type_ = str(cfg.type)
    where = f"alerts.rules.{type_}"
    if type_ not in DEFAULT_RULES:
        raise ConfigError(
            [ConfigProblem(where, f"unknown alert type; expected one of {', '.join(ALERT_TYPES)}")]
        )
    base = DEFAULT_RULES[type_]
    values: dict[str, Any] = {n: getattr(cfg, n, getattr(base, n)) for n in _SPEC_FIELDS}
    problems: list[ConfigProblem] = []
    try:
        values["severity"] = Severity(getattr(values["severity"], "value", values["severity"]))
    except ValueError:
        problems.append(ConfigProblem(f"{where}.severity", "expected info, warning or critical"))
    for name in ("fire", "clear"):
        values[name] = float(values[name])
        if not math.isfinite(values[name]):
            problems.append(ConfigProblem(f"{where}.{name}", "expected a finite number"))
    m, n = int(values["pending_samples"]), int(values["window"])
    if not 1 <= m <= n:
        problems.append(
            ConfigProblem(
                f"{where}.pending_samples",
                f"expected 1 <= pending_samples <= window, got {m} of {n}",
            )
        )
    keep = float(getattr(cfg, "keep_firing_for", base.keep_firing_for))
    if keep < 0:
        problems.append(ConfigProblem(f"{where}.keep_firing_for", "expected >= 0 seconds"))
    if problems:
        raise ConfigError(problems)
    labels = getattr(cfg, "labels", base.labels)
    if isinstance(labels, Mapping):
        labels = tuple(labels.items())
    params = getattr(cfg, "params", base.params)
    if isinstance(params, Mapping):
        params = tuple(params.items())
    return RuleSpec(
        type=type_,
        enabled=bool(values["enabled"]),
        severity=values["severity"],
        fire=values["fire"],
        clear=values["clear"],
        pending_samples=m,
        window=n,
        keep_firing_for=keep,
        labels=tuple((str(k), str(v)) for k, v in labels),
        params=tuple((str(k), float(v)) for k, v in params),
    )


@dataclass(frozen=True, slots=True)
class Observation:
    """One watched thing in one evaluation. ``labels`` identify it (and so its fingerprint)."""

    alertname: str
    labels: dict[str, str] = field(hash=False)
    value: float | None
    breaching: bool
    clear: bool
    summary: str
    severity: Severity


def judge(value: float | None, fire: float, clear: float) -> tuple[bool, bool]:
    """(breaching, clear) for a value; both False means "between thresholds" or "no data"."""
    if value is None:
        return False, False
    if fire >= clear:
        return value >= fire, value <= clear
    return value <= fire, value >= clear


def _ratio(num: float, den: float) -> float:
    if den <= 0:
        return _RATIO_CAP if num > 0 else 0.0
    return min(num / den, _RATIO_CAP)


# One observation as a plain tuple, for the engine's hot loop:
# (alertname, labels, value, breaching, clear, summary, severity).
RawObservation = tuple[str, dict[str, str], float | None, bool, bool, str, Severity]


def iter_observations(
    inputs: AlertInputs, rules: Mapping[str, RuleSpec]
) -> Iterator[RawObservation]:
    """Every observation of every enabled rule over one snapshot, as plain tuples."""
    for type_, spec in rules.items():
        evaluator = _EVALUATORS.get(type_)
        if not spec.enabled or evaluator is None:
            continue
        base = {"alertname": type_, "severity": spec.severity.value, "node": inputs.node_id}
        base.update(spec.labels)
        fire, clear, sev = spec.fire, spec.clear, spec.severity
        for value, summary, extra, verdict in evaluator(inputs, spec):
            breaching, ok = judge(value, fire, clear) if verdict is None else verdict
            labels = base.copy()
            labels.update(extra)
            yield type_, labels, value, breaching, ok, summary, sev


def evaluate_rules(inputs: AlertInputs, rules: Mapping[str, RuleSpec]) -> list[Observation]:
    """Every observation of every enabled rule over one snapshot."""
    return [Observation(*raw) for raw in iter_observations(inputs, rules)]


# (value, summary, extra labels, verdict): a verdict (breaching, clear) overrides the thresholds
# for checks that are booleans or have their own thresholds in ``params``.
_Row = tuple[float | None, str, dict[str, str], tuple[bool, bool] | None]


def _conn_labels(c: ConnInput) -> dict[str, str]:
    return {"route": c.route, "connection": c.id, "type": c.type.value}


def _flag(flag: bool) -> tuple[float, tuple[bool, bool]]:
    return (1.0 if flag else 0.0), (flag, not flag)


def _connection_failure(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    """Down, or stale: up but silent past its channels' heartbeat cadence while sessions
    wait for data. The value is how long it has been failing, either way."""
    for c in inp.connections:
        if not c.state_up:
            down = max(c.seconds_down, 0.0)
            text = f"connection {c.id} on {c.route} down for {format_duration(down)}"
            yield down, text, _conn_labels(c), None
        elif c.stale_for > 0 and c.silent_for is not None:
            text = (
                f"connection {c.id} on {c.route} stale: no channel data for "
                f"{format_duration(c.silent_for)} while sessions wait for it"
            )
            yield c.stale_for, text, _conn_labels(c), None
        elif c.stale_suspect and c.silent_for is not None:
            # Not failing yet, not clear either: holds its symptoms back (see causes.py).
            text = f"connection {c.id} on {c.route} silent for {format_duration(c.silent_for)}"
            yield c.silent_for, text, _conn_labels(c), (False, False)
        else:
            yield 0.0, "", _conn_labels(c), None


def _high_latency(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    for c in inp.connections:
        # A down connection has no current latency: hold state (connection_failure covers it).
        lat = c.latency if c.state_up else None
        text = (
            f"latency {format_latency(lat)} on {c.id} ({c.route}), "
            f"fires at {format_latency(spec.fire)}"
            if lat is not None
            else ""
        )
        yield lat, text, _conn_labels(c), None


def _high_error_rate(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    for c in inp.connections:
        text = (
            f"{format_rate(c.error_rate, 'errors')} on {c.id} ({c.route}), "
            f"fires at {format_rate(spec.fire, 'errors')}"
        )
        yield c.error_rate, text, _conn_labels(c), None


def _frequent_reconnects(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    for c in inp.connections:
        text = f"{c.reconnects_recent} reconnects in 10m on {c.id} ({c.route})"
        yield float(c.reconnects_recent), text, _conn_labels(c), None


def _load_balancer_issue(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    for r in inp.routes:
        base = {"route": r.name, "type": r.type.value}
        text = f"load imbalance {format_ratio(r.imbalance_ratio)} the mean on {r.name}"
        yield r.imbalance_ratio, text, {**base, "issue": "imbalance"}, None
        n = r.no_candidate_events
        text = f"{n} placements found no eligible connection on {r.name}"
        yield float(n), text, {**base, "issue": "no_candidate"}, (n > 0, n == 0)
        value, verdict = _flag(r.fail_open_engaged)
        yield value, f"fail-open engaged on {r.name}", {**base, "issue": "fail_open"}, verdict


def _cluster_node_down(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    # The membership decided up/down (``cluster.node_down_after``); the value is the age of
    # the peer's last heartbeat. Labels name the peer, not the observer, so every survivor
    # computes the same fingerprint (one claim, one page, acks that apply everywhere).
    hold = (False, False)
    for peer, state, since in inp.system.peers:
        labels = {"node": peer, "peer": peer, "check": "heartbeat"}
        if not inp.system.cluster_link_up:
            yield None, "", labels, hold  # our link is down: we know nothing, hold state
            continue
        down = state == "down"
        text = f"node {peer} is {state}: no heartbeat for {format_duration(since)}"
        # "unknown": only old news of it so far (a replay after our start): hold.
        yield since, text, labels, (down, state in ("up", "left"))


def _performance_degradation(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    min_rate = spec.param("min_baseline_rate")
    for c in inp.connections:
        labels = _conn_labels(c)
        # Slowdown factor: baseline / current, so "worse" is always a bigger number.
        rate: float | None = None
        base_rate, msg_rate = c.baseline_rate, c.msg_rate
        if c.state_up and msg_rate is not None and base_rate is not None and base_rate >= min_rate:
            rate = _ratio(base_rate, msg_rate)
        text = _vs("throughput", c.msg_rate, c.baseline_rate, format_rate, c)
        yield rate, text, {**labels, "metric": "throughput"}, None
        lat: float | None = None
        if c.state_up and c.latency is not None and c.baseline_latency:
            lat = _ratio(c.latency, c.baseline_latency)
        text = _vs("latency", c.latency, c.baseline_latency, format_latency, c)
        yield lat, text, {**labels, "metric": "latency"}, None


def _used(used: int, limit: int, what: str) -> str:
    if limit <= 0:
        return f"{used} {what} (no limit)"
    return f"{format_count(used, limit, what)} ({format_percent(used / limit)})"


def _vs(
    metric: str,
    current: float | None,
    baseline: float | None,
    fmt: Callable[[float], str],
    c: ConnInput,
) -> str:
    now = "-" if current is None else fmt(current)
    base = "none yet" if baseline is None else fmt(baseline)
    return f"{metric} {now} vs baseline {base} on {c.id} ({c.route})"


def _anomaly_text(metric: str, c: ConnInput) -> str:
    if metric == "rate":
        return _vs("anomalous message rate:", c.msg_rate, c.baseline_rate, format_rate, c)
    return _vs("anomalous latency:", c.latency, c.baseline_latency, format_latency, c)


def _frac(used: float, limit: float) -> float | None:
    return used / limit if limit > 0 else None


def _capacity_warning(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    s = inp.system
    text = _used(s.connections_total, s.max_connections, "upstream connections in use")
    yield _frac(s.connections_total, s.max_connections), text, {"resource": "connections"}, None
    text = _used(s.sessions_total, s.max_sessions, "sessions in use")
    yield _frac(s.sessions_total, s.max_sessions), text, {"resource": "sessions"}, None
    for r in inp.routes:
        text = _used(r.sessions, r.max_sessions, f"sessions on route {r.name}")
        labels = {"resource": "route_sessions", "route": r.name}
        yield _frac(r.sessions, r.max_sessions), text, labels, None
        used = format_percent(r.connect_budget_used_fraction)
        text = f"{used} of the connect budget used on {r.name}"
        labels = {"resource": "connect_budget", "route": r.name}
        yield r.connect_budget_used_fraction, text, labels, None
    for c in inp.connections:
        text = _used(c.subscriptions, c.capacity, f"subscriptions on {c.id}")
        labels = {**_conn_labels(c), "resource": "subscriptions"}
        yield _frac(c.subscriptions, c.capacity), text, labels, None


def _anomaly_detected(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    for c in inp.connections:
        labels = _conn_labels(c)
        for metric, flag in (("rate", c.anomaly_rate), ("latency", c.anomaly_latency)):
            value, verdict = _flag(flag)
            text = _anomaly_text(metric, c)
            yield value, text, {**labels, "metric": metric}, verdict


def _system_health(inp: AlertInputs, spec: RuleSpec) -> Iterator[_Row]:
    s = inp.system
    text = f"health score {s.health_score:.0f} of 100 on {inp.node_id}"
    yield s.health_score, text, {"check": "health_score"}, None
    lag_verdict = judge(s.loop_lag, spec.param("loop_lag_fire"), spec.param("loop_lag_clear"))
    text = f"event-loop lag {format_latency(s.loop_lag)} on {inp.node_id}"
    yield s.loop_lag, text, {"check": "loop_lag"}, lag_verdict
    failures = float(s.job_failures_recent)
    verdict = judge(failures, spec.param("job_failures_fire"), spec.param("job_failures_clear"))
    text = f"{s.job_failures_recent} scheduled job failures on {inp.node_id}"
    yield failures, text, {"check": "job_failures"}, verdict
    fire, clear = spec.param("missed_runs_fire"), spec.param("missed_runs_clear")
    for job, runs in sorted(s.missed_job_runs.items()):
        text = f"scheduled job {job} missed {runs} runs on {inp.node_id}"
        yield float(runs), text, {"check": "job", "job": job}, judge(float(runs), fire, clear)


_EVALUATORS: dict[str, Callable[[AlertInputs, RuleSpec], Iterator[_Row]]] = {
    "connection_failure": _connection_failure,
    "high_latency": _high_latency,
    "high_error_rate": _high_error_rate,
    "frequent_reconnects": _frequent_reconnects,
    "load_balancer_issue": _load_balancer_issue,
    "cluster_node_down": _cluster_node_down,
    "performance_degradation": _performance_degradation,
    "capacity_warning": _capacity_warning,
    "anomaly_detected": _anomaly_detected,
    "system_health": _system_health,
}
