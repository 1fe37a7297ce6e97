"""The engine facade: persistence, reconfiguration, external alerts, statistics."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.core.alert_rules import OFF, conn, only
from wsgate.core.alerts import (
    AlertEngine,
    AlertInputs,
    AlertState,
    ChannelRoute,
    ConnInput,
    EvalResult,
)
from wsgate.core.types import Severity
from wsgate.errors import AlertError

RULES = only("high_latency")
CHANNELS = (ChannelRoute("ops"),)


def evaluate(engine: AlertEngine, now: float, *conns: ConnInput) -> EvalResult:
    return engine.evaluate(AlertInputs(now, "node-1", conns))


def test_export_restore_round_trip_keeps_state_and_does_not_renotify() -> None:
    engine = AlertEngine(RULES, CHANNELS)
    evaluate(engine, 0, conn("c1", 0.9), conn("c2", 0.9))
    assert len(engine.tick(30.0)) == 1
    fp1 = next(v.fingerprint for v in engine.active() if v.labels["connection"] == "c1")
    engine.ack(fp1, "alice", "on it", 40.0)
    sil = engine.silence(["connection=c2"], created_by="bob", comment="noisy", now=50, duration=1e5)
    state = json.loads(json.dumps(engine.export_state()))  # must survive the store as JSON

    restarted = AlertEngine(RULES, CHANNELS)
    restarted.restore_state(state, now=100.0)
    assert [v.to_dict() for v in restarted.active()] == [v.to_dict() for v in engine.active()]
    assert restarted.acks() == engine.acks()
    assert restarted.silences() == [sil]
    # Same conditions after the restart: no transition, no notification, not even at ticks.
    result = evaluate(restarted, 120, conn("c1", 0.9), conn("c2", 0.9))
    assert result.transitions == () and result.notifications == ()
    assert restarted.tick(330.0) == []
    assert restarted.tick(630.0) == []
    # It still resolves properly, and the resolve is notified (AM #2370 loses this).
    evaluate(restarted, 700, conn("c1", 0.1), conn("c2", 0.9))
    (resolved,) = restarted.tick(930.0)
    # c2 is silenced, so for this channel nothing it may see is firing any more.
    assert resolved.reason == "all alerts resolved"
    assert [a.labels["connection"] for a in resolved.alerts if a.status == "resolved"] == ["c1"]


def test_restore_rejects_unknown_version() -> None:
    with pytest.raises(AlertError):
        AlertEngine(RULES, CHANNELS).restore_state({"version": 99}, now=0.0)


def test_reconfigure_keeps_unchanged_fingerprints() -> None:
    engine = AlertEngine(RULES, CHANNELS)
    evaluate(engine, 0, conn("c1", 0.9))
    engine.tick(30.0)
    (before,) = engine.active()
    engine.reconfigure(RULES, (*CHANNELS, ChannelRoute("log")), group_interval=600.0)
    assert engine.active()[0].fingerprint == before.fingerprint
    # Nothing re-sent to the old channel; the new channel learns the alert on the tick that
    # was already scheduled, and later ticks follow the new interval.
    assert [(n.channel, n.reason) for n in engine.tick(330.0)] == [("log", "first notification")]
    assert engine.tick(929.0) == []
    assert engine.statistics().groups == 1
    # A severity change relabels the alert: the old one resolves, a new one fires.
    critical = {
        **RULES,
        "high_latency": replace(RULES["high_latency"], severity=Severity.CRITICAL),
    }
    engine.reconfigure(critical, CHANNELS)
    result = evaluate(engine, 700, conn("c1", 0.9))
    moves = sorted((t.old.value, t.new.value) for t in result.transitions)
    assert moves == [("firing", "resolved"), ("inactive", "firing")]
    assert engine.active()[0].severity is Severity.CRITICAL


def test_disabling_a_rule_resolves_its_alerts() -> None:
    engine = AlertEngine(RULES, CHANNELS)
    evaluate(engine, 0, conn("c1", 0.9))
    engine.reconfigure(OFF, CHANNELS)
    result = evaluate(engine, 30, conn("c1", 0.9))
    assert [t.new for t in result.transitions] == [AlertState.RESOLVED]


def test_raise_external_fires_notifies_and_expires() -> None:
    engine = AlertEngine(RULES, CHANNELS, node_id="node-1")
    view = engine.raise_external(
        "system_health",
        {"check": "channel_disabled", "channel": "discord"},
        Severity.CRITICAL,
        "discord webhook returned 404; channel disabled",
        now=0.0,
        ttl=600.0,
    )
    assert view.state is AlertState.FIRING
    assert view.labels["node"] == "node-1"
    (note,) = engine.tick(30.0)
    assert note.alerts[0].summary.startswith("discord webhook")
    # Survives evaluations that do not observe it, until its ttl.
    result = evaluate(engine, 60.0)
    assert [t.new for t in result.transitions] == [AlertState.FIRING]  # buffered from raise
    assert engine.get(view.fingerprint) is not None
    engine.tick(600.0)
    assert engine.get(view.fingerprint).state is AlertState.RESOLVED  # type: ignore[union-attr]
    result = evaluate(engine, 620.0)
    assert [(t.fingerprint, t.new) for t in result.transitions] == [
        (view.fingerprint, AlertState.RESOLVED)
    ]


def test_statistics_and_repr() -> None:
    engine = AlertEngine(RULES, CHANNELS)
    evaluate(engine, 0, conn("c1", 0.9), conn("c2", 0.1))
    stats = engine.statistics()
    assert stats.evaluations == 1
    assert stats.observations == 2
    assert stats.firing == 1 and stats.pending == 0
    assert stats.groups == 1
    assert stats.last_evaluation_at == 0
    engine.tick(30.0)
    assert engine.statistics().notifications_total == 1
    text = repr(engine)
    assert "firing=1" in text and "channels=1" in text
