"""Silences (equality and regex), acknowledgements and inhibition."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.core.alert_rules import only
from wsgate.core.alerts import (
    Ack,
    AlertEngine,
    AlertInputs,
    ChannelRoute,
    ConnInput,
    EvalResult,
    Matcher,
    Silence,
)
from wsgate.core.alerts.silences import InhibitRule, inhibitions
from wsgate.core.types import ConnectionType
from wsgate.errors import AlertError


def make_engine() -> AlertEngine:
    rules = only("high_latency", "connection_failure", "anomaly_detected")
    return AlertEngine(rules, [ChannelRoute("ops")])


def conn(
    cid: str, route: str, latency: float = 0.1, up: bool = True, anomaly: bool = False
) -> ConnInput:
    return ConnInput(
        cid,
        route,
        ConnectionType.MARKET_DATA,
        up,
        seconds_down=0.0 if up else 20.0,
        latency=latency,
        anomaly_rate=anomaly,
    )


def evaluate(engine: AlertEngine, now: float, *conns: ConnInput) -> EvalResult:
    return engine.evaluate(AlertInputs(now, "node-1", conns))


def test_matcher_parse_and_match() -> None:
    assert Matcher.parse("route=bitfinex") == Matcher("route", "bitfinex", "=")
    assert Matcher.parse('route=~"bit.*"') == Matcher("route", "bit.*", "=~")
    assert Matcher.parse("severity!=info") == Matcher("severity", "info", "!=")
    assert Matcher.parse("route!~bin.*") == Matcher("route", "bin.*", "!~")
    regex = Matcher("route", "bit.*", "=~")
    assert regex.matches({"route": "bitfinex"})
    assert not regex.matches({"route": "xbitfinex"})  # anchored
    assert not regex.matches({})
    assert Matcher("team", "", "=").matches({})  # missing label == empty
    with pytest.raises(AlertError):
        Matcher.parse("no operator here")
    with pytest.raises(AlertError):
        Matcher("route", "(", "=~")


def test_silence_by_regex_mutes_only_matching_routes() -> None:
    engine = make_engine()
    sil = engine.silence(
        ['route=~"bit.*"'],
        created_by="alice",
        comment="exchange maintenance",
        now=0.0,
        duration=3600,
    )
    evaluate(engine, 0, conn("c1", "bitfinex", 0.9), conn("c2", "binance", 0.9))
    by_route = {v.labels["route"]: v for v in engine.active()}
    assert by_route["bitfinex"].silenced_by == (sil.id,)
    assert by_route["binance"].silenced_by == ()
    notes = engine.tick(30.0)
    assert [n.alerts[0].labels["route"] for n in notes] == ["binance"]
    assert engine.statistics().silenced == 1
    # After expiry, the still-firing alert is notified at its group's next tick.
    assert engine.expire_silences(3599.0) == []
    assert [s.id for s in engine.expire_silences(3600.0)] == [sil.id]
    later = engine.tick(3600.0)
    assert [(n.alerts[0].labels["route"], n.reason) for n in later] == [
        ("bitfinex", "first notification")
    ]


def test_silence_validation_and_round_trip() -> None:
    engine = make_engine()
    with pytest.raises(AlertError, match="comment"):
        engine.silence(["route=x"], created_by="bob", comment=" ", now=0.0, duration=60)
    with pytest.raises(AlertError, match="matcher"):
        engine.silence([], created_by="bob", comment="why", now=0.0, duration=60)
    with pytest.raises(AlertError, match="after"):
        engine.silence(["route=x"], created_by="bob", comment="why", now=0.0, ends_at=0.0)
    sil = engine.silence(
        ["route=x", 'connection=~"c[0-9]+"'], created_by="bob", comment="why", now=5.0, duration=60
    )
    assert (
        sil.state(4.0) == "pending" and sil.state(5.0) == "active" and sil.state(65.0) == "expired"
    )
    assert Silence.from_dict(json.loads(json.dumps(sil.to_dict()))) == sil
    assert "bob" in repr(sil)
    expired = engine.unsilence(sil.id, now=10.0)
    assert expired.ends_at == 10.0
    assert engine.silences() == []
    with pytest.raises(AlertError):
        engine.unsilence(sil.id)


def test_ack_stops_repeats_and_clears_on_resolve() -> None:
    engine = make_engine()
    evaluate(engine, 0, conn("c1", "bitfinex", 0.9))
    assert len(engine.tick(30.0)) == 1
    (alert,) = engine.active()
    ack = engine.ack(alert.fingerprint, "alice", "looking into it", 40.0)
    assert Ack.from_dict(json.loads(json.dumps(ack.to_dict()))) == ack
    assert engine.active()[0].acknowledged and engine.active()[0].acked_by == "alice"
    t, repeats = 330.0, []
    while t <= 30.0 + 3 * 14400:
        repeats += engine.tick(t)
        t += 300.0
    assert repeats == []
    # Resolve still notified despite the ack, and the ack is gone.
    # (t is also the group's next tick, so the evaluation itself flushes the group.)
    resolved = list(evaluate(engine, t, conn("c1", "bitfinex", 0.1)).notifications)
    resolved += engine.tick(t + 300.0)
    assert [n.status for n in resolved] == ["resolved"]
    assert engine.acks() == []
    # A new episode is not acknowledged.
    evaluate(engine, t + 400.0, conn("c1", "bitfinex", 0.9))
    assert not engine.active()[0].acknowledged
    assert engine.acks() == []


def test_ack_unknown_alert_is_refused() -> None:
    engine = make_engine()
    with pytest.raises(AlertError):
        engine.ack("0123456789abcdef", "alice", "", 0.0)


def test_connection_failure_inhibits_symptoms_of_that_connection_only() -> None:
    engine = make_engine()
    down = replace(conn("c1", "bitfinex", 0.9, anomaly=True), state_up=False, seconds_down=20.0)
    evaluate(engine, 0, down, conn("c2", "bitfinex", 0.9), conn("c3", "binance", 0.9))
    views = {(v.alertname, v.labels["connection"]): v for v in engine.active()}
    failure = views[("connection_failure", "c1")]
    assert views[("anomaly_detected", "c1")].inhibited_by == (failure.fingerprint,)
    # Another connection's latency on the same route is its own problem, not a symptom.
    assert views[("high_latency", "c2")].inhibited_by == ()
    assert failure.inhibited_by == ()
    notified = {(n.alerts[0].alertname, n.alerts[0].labels["connection"]) for n in engine.tick(30)}
    assert notified == {
        ("connection_failure", "c1"),
        ("high_latency", "c2"),
        ("high_latency", "c3"),
    }


def test_inhibition_self_guard() -> None:
    rule = InhibitRule(
        "sev", source=(Matcher("kind", "x"),), target=(Matcher("kind", "x"),), equal=("route",)
    )
    alerts = [("a", {"kind": "x", "route": "r"}), ("b", {"kind": "x", "route": "r"})]
    assert inhibitions(alerts, alerts, [rule]) == {}
