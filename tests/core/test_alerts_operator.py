"""Operator handling: fingerprint prefixes, silence validation, ack before group_wait,
transitions that carry the alert's name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.core.alert_rules import conn, only
from wsgate.core.alerts import (
    AlertEngine,
    AlertInputs,
    AlertState,
    ChannelRoute,
)
from wsgate.errors import AlertError

RULES = only("high_latency")
CHANNELS = (ChannelRoute("ops"),)


def firing(engine: AlertEngine, n: int) -> list[str]:
    engine.evaluate(AlertInputs(0.0, "node-1", tuple(conn(f"c{i}", 0.9) for i in range(n))))
    return [v.fingerprint for v in engine.active()]


def test_ack_by_unique_prefix_and_ambiguity_lists_candidates() -> None:
    engine = AlertEngine(RULES, CHANNELS)
    fps = firing(engine, 40)
    # Some prefix of one fingerprint that no other shares.
    fp = fps[0]
    short = next(fp[:n] for n in range(1, 17) if sum(f.startswith(fp[:n]) for f in fps) == 1)
    assert engine.ack(short, "alice", "on it", 1.0).fingerprint == fp
    # A one-digit prefix shared by several alerts is refused with the candidates listed.
    digit = next(d for d in "0123456789abcdef" if sum(f.startswith(d) for f in fps) >= 2)
    with pytest.raises(AlertError) as info:
        engine.ack(digit, "alice", "", 1.0)
    assert len(info.value.candidates) >= 2
    assert "give more digits" in str(info.value)
    assert all(c.split()[1] == "high_latency" for c in info.value.candidates)
    with pytest.raises(AlertError, match="no pending or firing alert"):
        engine.ack("ffffffffffffffff", "alice", "", 1.0)
    with pytest.raises(AlertError, match="hex digits"):
        engine.ack("not-hex", "alice", "", 1.0)


def test_silence_refuses_unknown_label_names_and_alert_types() -> None:
    engine = AlertEngine(RULES, CHANNELS)
    firing(engine, 1)
    with pytest.raises(AlertError, match="did you mean 'route'"):
        engine.silence(["rout=bitfinex"], created_by="bob", comment="typo", now=1, duration=60)
    with pytest.raises(AlertError, match="did you mean 'connection_failure'"):
        engine.silence(
            ["alertname=conection_failure"], created_by="bob", comment="x", now=1, duration=60
        )
    sil = engine.silence(["route=bitfinex"], created_by="bob", comment="ok", now=1, duration=60)
    assert [v.labels["connection"] for v in engine.matching(sil.matchers, 1.0)] == ["c0"]
    none = engine.silence(["route=binance"], created_by="bob", comment="ok", now=1, duration=60)
    assert engine.matching(none.matchers, 1.0) == []


def test_ack_before_group_wait_suppresses_the_first_notification() -> None:
    engine = AlertEngine(RULES, CHANNELS, group_wait=30.0)
    (fp,) = firing(engine, 1)
    engine.ack(fp[:6], "alice", "mine", 5.0)  # within group_wait
    assert engine.tick(30.0) == []
    assert engine.tick(400.0) == []  # and no repeat either
    # A second alert in the same group is news: it is notified, the acked one is not.
    engine.evaluate(AlertInputs(401.0, "node-1", (conn("c0", 0.9), conn("c1", 0.9))))
    (note,) = engine.tick(700.0)
    assert [a.labels["connection"] for a in note.alerts] == ["c1"]


def test_transitions_carry_the_alert_name_even_when_the_record_is_gone() -> None:
    rules = {**RULES, "high_latency": replace(RULES["high_latency"], pending_samples=2, window=3)}
    engine = AlertEngine(rules, CHANNELS)
    engine.evaluate(AlertInputs(0.0, "node-1", (conn("c0", 0.9),)))
    moves = [
        t
        for now in (1.0, 2.0, 3.0)
        for t in engine.evaluate(AlertInputs(now, "node-1", (conn("c0", 0.1),))).transitions
    ]
    (t,) = moves
    assert (t.old, t.new) == (AlertState.PENDING, AlertState.INACTIVE)
    assert engine.get(t.fingerprint) is None
    assert t.alertname == "high_latency" and t.labels is not None
    assert t.labels["connection"] == "c0" and t.at == 3.0
