"""One page per root cause: the causal model as inhibition, with fake time."""

from __future__ import annotations

from dataclasses import replace

from wsgate.core.alerts import (
    ALERT_TYPES,
    CAUSES,
    DEFAULT_RULES,
    AlertEngine,
    AlertInputs,
    ChannelRoute,
    ConnInput,
    Notification,
    RouteInput,
    SystemInput,
)
from wsgate.core.alerts.causes import why
from wsgate.core.types import ConnectionType

FAST = {t: replace(DEFAULT_RULES[t], pending_samples=1, window=1) for t in ALERT_TYPES}
RULES = {**FAST, "cluster_node_down": replace(FAST["cluster_node_down"], enabled=False)}
MD = ConnectionType.MARKET_DATA


def engine(**kw: float) -> AlertEngine:
    return AlertEngine(RULES, [ChannelRoute("ops")], group_wait=0.5, group_interval=2.0, **kw)


def ok_conn(cid: str = "c1", **kw: object) -> ConnInput:
    base: dict[str, object] = {"latency": 0.05, "msg_rate": 5.0, "baseline_rate": 5.0}
    base.update(kw)
    return ConnInput(cid, "bfx", MD, True, **base)  # type: ignore[arg-type]


def dead(cid: str = "c1", down: float = 5.0, **kw: object) -> ConnInput:
    return replace(ok_conn(cid, **kw), state_up=False, seconds_down=down, msg_rate=None)


def snap(now: float, conns: tuple[ConnInput, ...], **kw: object) -> AlertInputs:
    route = RouteInput("bfx", MD, **kw)  # type: ignore[arg-type]
    health = 100.0 if all(c.state_up for c in conns) else 40.0
    return AlertInputs(now, "n1", conns, (route,), SystemInput(health_score=health))


def paged(notes: list[Notification] | tuple[Notification, ...]) -> set[str]:
    return {a.alertname for n in notes for a in n.alerts if a.status == "firing"}


def run(e: AlertEngine, t0: float, t1: float, inputs: AlertInputs) -> set[str]:
    """Evaluate ``inputs`` every second from t0 to t1 with 0.5 s ticks; what was paged."""
    out: set[str] = set()
    t = t0
    while t <= t1:
        out |= paged(e.evaluate(replace(inputs, now=t)).notifications)
        out |= paged(e.tick(t + 0.5))
        t += 1.0
    return out


def test_dead_upstream_pages_connection_failure_once_listing_consequences() -> None:
    e = engine()
    assert run(e, 0, 5, snap(0, (ok_conn(),))) == set()
    # The upstream dies: down, connect errors, the bot's subscription finds no connection,
    # the node's health score falls. The first evaluation sees it down for 0.4 s only.
    t0 = 6.0
    symptoms = {"error_rate": 0.5, "reconnects_recent": 6}
    pages = run(e, t0, t0, snap(t0, (dead(down=0.4, **symptoms),), no_candidate_events=1))
    pages |= run(e, t0 + 1, t0 + 30, snap(t0, (dead(down=5, **symptoms),), no_candidate_events=1))
    assert pages == {"connection_failure"}
    (root,) = [v for v in e.active() if v.alertname == "connection_failure"]
    affected = " ".join(root.also_affected)
    for name in ("high_error_rate", "frequent_reconnects", "load_balancer_issue", "system_health"):
        assert name in affected, root.also_affected
    assert "0.5 errors/s" in affected
    inhibited = [v for v in e.active() if v.alertname != "connection_failure"]
    assert inhibited and all(root.fingerprint in v.inhibited_by for v in inhibited)
    assert all("connection_failure c1 (firing)" in v.caused_by for v in inhibited)
    # The notification itself says what else is affected, in the summary every channel shows.
    body = root.to_webhook_dict()
    assert "also affected: " in body["annotations"]["summary"]


def test_consequences_of_a_resolved_cause_page_only_if_they_persist() -> None:
    e = engine(cause_hold=10.0)
    run(e, 0, 3, snap(0, (dead(error_rate=0.5, reconnects_recent=6),)))
    # Back up. The error rate keeps breaching (a real second problem); the reconnect count
    # is a trailing 10-minute window and stays high without any new reconnect.
    up = ok_conn(error_rate=0.5, reconnects_recent=6)
    assert run(e, 4, 12, snap(0, (up,))) == set()  # within cause_hold: still muted
    assert run(e, 13, 20, snap(0, (up,))) == {"high_error_rate"}
    held = next(v for v in e.active() if v.alertname == "frequent_reconnects")
    assert held.inhibited_by and held.caused_by
    # A new reconnect after the cause resolved: the count grew, so it stands on its own.
    assert run(e, 21, 25, snap(0, (replace(up, reconnects_recent=7),))) == {"frequent_reconnects"}


def test_a_consequence_that_ends_with_its_cause_never_pages() -> None:
    e = engine(cause_hold=10.0)
    assert run(e, 0, 3, snap(0, (dead(error_rate=0.5),))) == {"connection_failure"}
    assert run(e, 4, 60, snap(0, (ok_conn(),))) == set()  # resolved notices aside
    assert [v.alertname for v in e.active()] == []


def test_a_suspected_cause_holds_symptoms_but_a_cause_that_never_fires_releases_them() -> None:
    e = engine(cause_hold=10.0)
    # Silent past what its rate allows but not yet past the protocol's limit: a suspect.
    suspect = ok_conn(msg_rate=0.5, silent_for=4.0, stale_suspect=True)
    assert run(e, 0, 3, snap(0, (suspect,))) == set()
    (perf,) = [v for v in e.active() if v.alertname == "performance_degradation"]
    assert perf.inhibited_by and "suspected" in perf.caused_by[0]
    # The data comes back at a low rate: no cause fired, so no page covered the symptom;
    # it pages at once, no hold.
    assert run(e, 4, 5, snap(0, (ok_conn(msg_rate=0.5),))) == {"performance_degradation"}


def test_stale_connection_is_a_connection_failure() -> None:
    e = engine()
    stale = ok_conn(msg_rate=0.1, silent_for=20.0, stale_for=4.0, error_rate=0.3)
    assert run(e, 0, 5, snap(0, (stale,))) == {"connection_failure"}
    (root,) = [v for v in e.active() if v.alertname == "connection_failure"]
    assert "stale" in root.summary and "no channel data for 20s" in root.summary


def test_latency_fault_pages_high_latency_only() -> None:
    e = engine()
    slow = ok_conn(latency=3.0, baseline_latency=0.01, msg_rate=1.0)
    pages = run(e, 0, 10, replace(snap(0, (slow,)), system=SystemInput(health_score=50.0)))
    assert pages == {"high_latency"}
    (root,) = [v for v in e.active() if v.alertname == "high_latency"]
    assert any("performance_degradation" in a for a in root.also_affected)
    assert any("system_health" in a for a in root.also_affected)


def test_model_has_no_cycles_and_explains_itself() -> None:
    # The event-loop lag edges are the one place a node-wide check causes per-connection
    # symptoms; the label matchers keep them acyclic, the plain names would not.
    edges = {(c.source, c.target) for c in CAUSES if c.source != c.target and not c.source_match}
    names = {n for e in edges for n in e}
    order: list[str] = []
    while names:
        roots = sorted(n for n in names if not any(t == n and s in names for s, t in edges))
        assert roots, f"cycle among {names}"
        order += roots
        names -= set(roots)
    assert order[0] == "connection_failure"
    assert "connection" in why(
        {"alertname": "connection_failure", "connection": "c1"},
        {"alertname": "high_error_rate", "connection": "c1"},
    )
    assert why({"alertname": "high_latency"}, {"alertname": "connection_failure"}) == ""


def test_explain_tells_rule_inputs_transitions_and_inhibitions() -> None:
    e = engine()
    run(e, 0, 3, snap(0, (dead(error_rate=0.5),)))
    (root,) = [v for v in e.active() if v.alertname == "connection_failure"]
    x = e.explain(root.fingerprint[:5], 10.0)
    assert x["rule"]["text"].startswith("fires at 1s (≥; 1 of the last 1 samples)")
    assert [i["value_text"] for i in x["inputs"]][-1] == "5s"
    assert [(t["from"], t["to"]) for t in x["transitions"]] == [("inactive", "firing")]
    assert {o["alertname"] for o in x["inhibits"]} >= {"high_error_rate"}
    assert all(
        "same connection" in o["why"] for o in x["inhibits"] if o["alertname"] != "system_health"
    )
    (err,) = [v for v in e.active() if v.alertname == "high_error_rate"]
    y = e.explain(err.fingerprint, 10.0)
    assert [o["alertname"] for o in y["inhibited_by"]] == ["connection_failure"]
