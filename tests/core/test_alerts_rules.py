"""The ten alert types: each fires from a snapshot showing its condition and resolves after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from wsgate.core.alerts import (
    ALERT_TYPES,
    DEFAULT_RULES,
    AlertEngine,
    AlertInputs,
    AlertState,
    ConnInput,
    RouteInput,
    RuleSpec,
    SystemInput,
    evaluate_rules,
    rule_spec_from,
)
from wsgate.core.alerts.rules import judge
from wsgate.core.types import ConnectionType, Severity
from wsgate.errors import ConfigError

GOOD_CONN = ConnInput(
    id="c1",
    route="bitfinex",
    type=ConnectionType.MARKET_DATA,
    state_up=True,
    latency=0.1,
    error_rate=0.0,
    reconnects_recent=0,
    msg_rate=10.0,
    baseline_rate=10.0,
    baseline_latency=0.1,
    subscriptions=5,
    capacity=25,
)
GOOD_ROUTE = RouteInput(
    name="bitfinex",
    type=ConnectionType.MARKET_DATA,
    open_connections=2,
    desired_connections=2,
    sessions=10,
    max_sessions=1000,
    imbalance_ratio=1.1,
    connect_budget_used_fraction=0.1,
)
GOOD_SYSTEM = SystemInput(
    health_score=95.0,
    missed_job_runs={"health_check": 0},
    loop_lag=0.01,
    connections_total=2,
    max_connections=1000,
    sessions_total=10,
    max_sessions=10000,
    peers=(("node-2", "up", 5.0),),
)


def snap(
    now: float,
    conn: ConnInput = GOOD_CONN,
    route: RouteInput = GOOD_ROUTE,
    system: SystemInput = GOOD_SYSTEM,
) -> AlertInputs:
    return AlertInputs(now, "node-1", (conn,), (route,), system)


def bad_conn(**kw: Any) -> Callable[[float], AlertInputs]:
    return lambda now: snap(now, conn=replace(GOOD_CONN, **kw))


def bad_route(**kw: Any) -> Callable[[float], AlertInputs]:
    return lambda now: snap(now, route=replace(GOOD_ROUTE, **kw))


def bad_system(**kw: Any) -> Callable[[float], AlertInputs]:
    return lambda now: snap(now, system=replace(GOOD_SYSTEM, **kw))


# (type, snapshot showing the condition, labels the alert must carry)
CASES: list[tuple[str, Callable[[float], AlertInputs], dict[str, str]]] = [
    ("connection_failure", bad_conn(state_up=False, seconds_down=12.0), {"connection": "c1"}),
    (
        "high_latency",
        bad_conn(latency=0.8, baseline_latency=0.7),
        {"connection": "c1", "route": "bitfinex"},
    ),
    ("high_error_rate", bad_conn(error_rate=0.2), {"connection": "c1"}),
    ("frequent_reconnects", bad_conn(reconnects_recent=7), {"connection": "c1"}),
    ("load_balancer_issue", bad_route(imbalance_ratio=4.0), {"issue": "imbalance"}),
    ("load_balancer_issue", bad_route(no_candidate_events=3), {"issue": "no_candidate"}),
    ("load_balancer_issue", bad_route(fail_open_engaged=True), {"issue": "fail_open"}),
    (
        "cluster_node_down",
        bad_system(peers=(("node-2", "down", 45.0),)),
        {"node": "node-2", "peer": "node-2"},
    ),
    ("system_health", bad_system(missed_job_runs={"health_check": 4}), {"job": "health_check"}),
    ("performance_degradation", bad_conn(msg_rate=2.0), {"metric": "throughput"}),
    ("performance_degradation", bad_conn(latency=0.35), {"metric": "latency"}),
    ("capacity_warning", bad_system(connections_total=900), {"resource": "connections"}),
    ("capacity_warning", bad_system(sessions_total=9500), {"resource": "sessions"}),
    ("capacity_warning", bad_route(sessions=850), {"resource": "route_sessions"}),
    (
        "capacity_warning",
        bad_route(connect_budget_used_fraction=0.9),
        {"resource": "connect_budget"},
    ),
    ("capacity_warning", bad_conn(subscriptions=24), {"resource": "subscriptions"}),
    ("anomaly_detected", bad_conn(anomaly_rate=True), {"metric": "rate"}),
    ("anomaly_detected", bad_conn(anomaly_latency=True), {"metric": "latency"}),
    ("system_health", bad_system(health_score=40.0), {"check": "health_score"}),
    ("system_health", bad_system(loop_lag=0.9), {"check": "loop_lag"}),
    ("system_health", bad_system(job_failures_recent=5), {"check": "job_failures"}),
]


def test_cases_cover_all_ten_types() -> None:
    assert {c[0] for c in CASES} == set(ALERT_TYPES)
    assert len(ALERT_TYPES) == 10


def test_healthy_snapshot_breaches_nothing() -> None:
    observations = evaluate_rules(snap(0.0), DEFAULT_RULES)
    assert observations, "every rule watches something in the healthy snapshot"
    assert [o for o in observations if o.breaching] == []
    assert {o.alertname for o in observations} == set(ALERT_TYPES)


@pytest.mark.parametrize(("alertname", "bad", "labels"), CASES, ids=[c[0] for c in CASES])
def test_type_fires_and_resolves(
    alertname: str, bad: Callable[[float], AlertInputs], labels: dict[str, str]
) -> None:
    engine = AlertEngine({}, [])
    first = engine.evaluate(bad(0.0))
    assert [t.new for t in first.transitions] == [AlertState.PENDING]  # 2 of 3 by default
    engine.evaluate(bad(30.0))
    firing = engine.active()
    assert len(firing) == 1
    alert = firing[0]
    assert alert.state is AlertState.FIRING
    assert alert.alertname == alertname
    assert alert.severity is DEFAULT_RULES[alertname].severity
    assert alert.labels["alertname"] == alertname
    assert alert.labels["severity"] == alert.severity.value
    for key, value in labels.items():
        assert alert.labels[key] == value
    assert alert.summary
    result = engine.evaluate(snap(60.0))
    assert [(t.fingerprint, t.old, t.new) for t in result.transitions] == [
        (alert.fingerprint, AlertState.FIRING, AlertState.RESOLVED)
    ]
    assert engine.active() == []


def test_default_severities_and_thresholds() -> None:
    assert DEFAULT_RULES["connection_failure"].severity is Severity.CRITICAL
    assert DEFAULT_RULES["system_health"].severity is Severity.CRITICAL
    assert DEFAULT_RULES["high_latency"].fire == 0.5
    assert DEFAULT_RULES["high_latency"].clear == 0.3
    assert DEFAULT_RULES["system_health"].fire == 60.0
    for spec in DEFAULT_RULES.values():
        assert (spec.pending_samples, spec.window) == (2, 3)


def test_judge_direction_follows_thresholds() -> None:
    assert judge(0.6, 0.5, 0.3) == (True, False)
    assert judge(0.4, 0.5, 0.3) == (False, False)  # between: hold
    assert judge(0.2, 0.5, 0.3) == (False, True)
    assert judge(50.0, 60.0, 70.0) == (True, False)  # lower is worse
    assert judge(65.0, 60.0, 70.0) == (False, False)
    assert judge(80.0, 60.0, 70.0) == (False, True)
    assert judge(None, 0.5, 0.3) == (False, False)


def test_down_connection_holds_latency_and_perf() -> None:
    obs = evaluate_rules(
        snap(0.0, conn=replace(GOOD_CONN, state_up=False, latency=5.0)), DEFAULT_RULES
    )
    lat = [o for o in obs if o.alertname == "high_latency"]
    assert len(lat) == 1 and lat[0].value is None
    assert not lat[0].breaching and not lat[0].clear


def test_rule_spec_from_duck_typed_config() -> None:
    cfg = SimpleNamespace(
        type="high_latency",
        enabled=True,
        severity="critical",
        fire=1.0,
        clear=0.4,
        pending_samples=3,
        window=5,
        keep_firing_for=60.0,
        labels=(("team", "infra"),),
    )
    spec = rule_spec_from(cfg)
    assert spec == RuleSpec(
        type="high_latency",
        enabled=True,
        severity=Severity.CRITICAL,
        fire=1.0,
        clear=0.4,
        pending_samples=3,
        window=5,
        keep_firing_for=60.0,
        labels=(("team", "infra"),),
    )
    partial = rule_spec_from(SimpleNamespace(type="system_health", fire=50.0))
    assert partial.fire == 50.0
    assert partial.clear == DEFAULT_RULES["system_health"].clear
    assert partial.param("loop_lag_fire") == 0.5


def test_rule_spec_from_reports_every_problem() -> None:
    cfg = SimpleNamespace(type="high_latency", severity="loud", pending_samples=4, window=2)
    with pytest.raises(ConfigError) as info:
        rule_spec_from(cfg)
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "alerts.rules.high_latency.severity",
        "alerts.rules.high_latency.pending_samples",
    ]
    with pytest.raises(ConfigError):
        rule_spec_from(SimpleNamespace(type="no_such_alert"))


def test_rule_labels_and_disabled_rules() -> None:
    rules = {
        "high_latency": replace(DEFAULT_RULES["high_latency"], labels=(("team", "infra"),)),
        "connection_failure": replace(DEFAULT_RULES["connection_failure"], enabled=False),
    }
    merged = {**DEFAULT_RULES, **rules}
    obs = evaluate_rules(snap(0.0), merged)
    assert all(o.labels["team"] == "infra" for o in obs if o.alertname == "high_latency")
    assert not any(o.alertname == "connection_failure" for o in obs)


def test_ratio_values_stay_finite_for_json() -> None:
    obs = evaluate_rules(snap(0.0, conn=replace(GOOD_CONN, msg_rate=0.0)), DEFAULT_RULES)
    (thr,) = [
        o
        for o in obs
        if o.alertname == "performance_degradation" and o.labels["metric"] == "throughput"
    ]
    assert thr.breaching
    assert thr.value == 1e6


def test_cluster_node_down_follows_membership_and_holds_without_link() -> None:
    rules = {"cluster_node_down": DEFAULT_RULES["cluster_node_down"]}
    down = replace(GOOD_SYSTEM, peers=(("node-2", "down", 30.0), ("node-3", "left", 99.0)))
    obs = {o.labels["peer"]: o for o in evaluate_rules(snap(0.0, system=down), rules)}
    assert obs["node-2"].breaching and not obs["node-2"].clear
    assert obs["node-3"].clear and not obs["node-3"].breaching  # a graceful leave pages nothing
    # The same fingerprint on every survivor: the observer's node id is not in the labels.
    assert obs["node-2"].labels["node"] == "node-2"
    blind = replace(down, cluster_link_up=False)
    for o in evaluate_rules(snap(0.0, system=blind), rules):
        assert not o.breaching and not o.clear and o.value is None  # state holds


def test_cluster_node_down_holds_for_a_peer_known_only_from_old_news() -> None:
    rules = {"cluster_node_down": DEFAULT_RULES["cluster_node_down"]}
    sys_ = replace(GOOD_SYSTEM, peers=(("node-2", "unknown", 30.0),))
    [o] = evaluate_rules(snap(0.0, system=sys_), rules)
    assert not o.breaching and not o.clear
