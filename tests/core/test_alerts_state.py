"""The per-alert state machine: hysteresis, M-of-N pending, keep_firing_for, flapping."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from tests.core.alert_rules import OFF, conn
from wsgate.core.alerts import (
    DEFAULT_RULES,
    AlertEngine,
    AlertInputs,
    AlertState,
    ChannelRoute,
    EvalResult,
    Notification,
    RuleSpec,
    fingerprint,
)
from wsgate.core.alerts.state import AlertRecord
from wsgate.core.types import Severity


def latency_engine(channels: tuple[ChannelRoute, ...] = (), **rule: Any) -> AlertEngine:
    spec: RuleSpec = replace(DEFAULT_RULES["high_latency"], **rule)
    return AlertEngine({**OFF, "high_latency": spec}, channels, group_wait=0.0)


def feed(engine: AlertEngine, now: float, *latencies: float | None) -> EvalResult:
    conns = tuple(conn(f"c{i + 1}", lat) for i, lat in enumerate(latencies))
    return engine.evaluate(AlertInputs(now, "node-1", conns))


def states(engine: AlertEngine) -> list[AlertState]:
    return [v.state for v in engine.active(include_resolved=True)]


def test_hysteresis_holds_between_clear_and_fire() -> None:
    engine = latency_engine()
    feed(engine, 0, 0.6)
    feed(engine, 30, 0.6)
    assert states(engine) == [AlertState.FIRING]
    for i in range(5):  # 0.4 s is below fire (0.5) but above clear (0.3): stays firing
        result = feed(engine, 60 + 30 * i, 0.4)
        assert result.transitions == ()
        assert states(engine) == [AlertState.FIRING]
    assert engine.active()[0].value == 0.4
    result = feed(engine, 300, 0.29)
    assert [t.new for t in result.transitions] == [AlertState.RESOLVED]


def test_value_between_thresholds_does_not_start_pending() -> None:
    engine = latency_engine()
    for i in range(4):
        assert feed(engine, 30 * i, 0.45).transitions == ()
    assert engine.active(include_resolved=True) == []


def test_m_of_n_one_good_sample_does_not_reset_pending() -> None:
    engine = latency_engine()  # 2 of 3
    assert [t.new for t in feed(engine, 0, 0.6).transitions] == [AlertState.PENDING]
    assert feed(engine, 30, 0.1).transitions == ()  # one good sample: still pending
    assert states(engine) == [AlertState.PENDING]
    assert [t.new for t in feed(engine, 60, 0.6).transitions] == [AlertState.FIRING]
    view = engine.active()[0]
    assert view.started_at == 0 and view.fired_at == 60


def test_pending_gives_up_once_window_has_no_breach() -> None:
    engine = latency_engine(pending_samples=3, window=4)
    feed(engine, 0, 0.6)
    feed(engine, 30, 0.1)
    feed(engine, 60, 0.1)
    assert states(engine) == [AlertState.PENDING]
    result = feed(engine, 90, 0.1)  # window is now [B, G, G, G]: still one breach in it
    assert result.transitions == ()
    result = feed(engine, 120, 0.1)
    assert [(t.old, t.new) for t in result.transitions] == [
        (AlertState.PENDING, AlertState.INACTIVE)
    ]
    assert engine.active(include_resolved=True) == []


def test_one_of_one_fires_immediately() -> None:
    engine = latency_engine(pending_samples=1, window=1)
    result = feed(engine, 0, 0.9)
    assert [(t.old, t.new) for t in result.transitions] == [
        (AlertState.INACTIVE, AlertState.FIRING)
    ]


def test_keep_firing_for() -> None:
    engine = latency_engine(pending_samples=1, window=1, keep_firing_for=60.0)
    feed(engine, 0, 0.9)
    feed(engine, 30, 0.9)  # last breach at 30
    assert feed(engine, 60, 0.1).transitions == ()
    assert feed(engine, 89, 0.1).transitions == ()
    assert states(engine) == [AlertState.FIRING]
    result = feed(engine, 90, 0.1)
    assert [t.new for t in result.transitions] == [AlertState.RESOLVED]


def test_missing_data_holds_state() -> None:
    engine = latency_engine(pending_samples=1, window=1)
    feed(engine, 0, 0.9)
    assert feed(engine, 30, None).transitions == ()
    assert states(engine) == [AlertState.FIRING]


def test_disappeared_observation_resolves() -> None:
    engine = latency_engine(pending_samples=1, window=1)
    feed(engine, 0, 0.9, 0.9)
    assert len(engine.active()) == 2
    result = feed(engine, 30, 0.9)  # c2 was removed from the pool
    assert [t.new for t in result.transitions] == [AlertState.RESOLVED]
    (gone,) = [v for v in engine.active(include_resolved=True) if v.state is AlertState.RESOLVED]
    assert gone.labels["connection"] == "c2"
    assert "no longer observed" in gone.summary


def test_fingerprint_is_stable_across_label_order() -> None:
    a = {"alertname": "high_latency", "route": "bitfinex", "connection": "c1"}
    b = {"connection": "c1", "alertname": "high_latency", "route": "bitfinex"}
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 16
    int(fingerprint(a), 16)
    assert fingerprint(a) != fingerprint({**a, "connection": "c2"})
    # No ambiguity from joining: ("ab","c") and ("a","bc") differ.
    assert fingerprint({"a": "bc"}) != fingerprint({"ab": "c"})
    # Pinned: fingerprints are persisted and referenced by acks, so they must never change.
    expected = hashlib.sha256("job\xfffoo\xffseverity\xffwarning\xff".encode()).hexdigest()
    assert fingerprint({"severity": "warning", "job": "foo"}) == expected[:16] == "7c556bad444d580d"


def test_flapping_sends_exactly_one_notice_then_recovers() -> None:
    channel = ChannelRoute("ops", Severity.INFO)
    engine = latency_engine((channel,), pending_samples=1, window=1)
    notes: list[Notification] = []
    t = 0.0
    for i in range(12):  # fire / resolve every evaluation
        result = feed(engine, t, 0.9 if i % 2 == 0 else 0.1)
        notes.extend(result.notifications)
        t += 30
    flapping = [n for n in notes if n.kind == "flapping"]
    assert len(flapping) == 1
    assert flapping[0].alerts[0].flapping
    # Alert notices stop once flapping was detected (4th change, at t=90).
    alert_times = [n.created_at for n in notes if n.kind == "alert"]
    assert all(at < 90 for at in alert_times)
    assert engine.statistics().flapping == 1
    # Stable (firing) for a whole flap window: flapping clears and no second flapping notice.
    for _ in range(25):
        notes.extend(feed(engine, t, 0.9).notifications)
        t += 30
    assert engine.statistics().flapping == 0
    assert len([n for n in notes if n.kind == "flapping"]) == 1


def test_record_repr_and_round_trip() -> None:
    rec = AlertRecord("abcd", "high_latency", {"alertname": "high_latency"}, Severity.WARNING, 3)
    rec.observe(True, False, 0.0, 1, 0.0)
    assert "firing" in repr(rec) and "high_latency" in repr(rec)
    clone = AlertRecord.from_dict(rec.to_dict())
    assert clone.to_dict() == rec.to_dict()
