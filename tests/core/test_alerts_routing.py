"""Grouping, timers and per-channel routing, with exact fake-time boundaries."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.alert_rules import OFF, conn, only
from wsgate.core.alerts import (
    DEFAULT_RULES,
    AlertEngine,
    AlertInputs,
    ChannelRoute,
    ConnInput,
    EvalResult,
    Notification,
)
from wsgate.core.types import Severity


def engine_for(
    channels: tuple[ChannelRoute, ...] = (ChannelRoute("ops"),),
    *,
    send_resolved: bool = True,
    external_url: str = "",
) -> AlertEngine:
    rules = only("high_latency", "connection_failure")
    return AlertEngine(rules, channels, send_resolved=send_resolved, external_url=external_url)


def evaluate(engine: AlertEngine, now: float, *conns: ConnInput) -> EvalResult:
    return engine.evaluate(AlertInputs(now, "node-1", conns))


def test_group_wait_then_group_interval_exactly() -> None:
    engine = engine_for()
    assert evaluate(engine, 0, conn("c1", 0.9)).notifications == ()
    assert engine.tick(29.999) == []
    (first,) = engine.tick(30.0)
    assert first.reason == "first notification"
    assert first.group_key == '{alertname="high_latency",route="bitfinex"}'
    assert [a.labels["connection"] for a in first.alerts] == ["c1"]
    # A second alert of the same group waits for the group's next tick (30 + 300).
    assert evaluate(engine, 100, conn("c1", 0.9), conn("c2", 0.9)).notifications == ()
    assert engine.tick(329.999) == []
    (update,) = engine.tick(330.0)
    assert update.reason == "new alerts added"
    assert sorted(a.labels["connection"] for a in update.alerts) == ["c1", "c2"]
    # Nothing changed: later ticks stay quiet.
    assert engine.tick(630.0) == []
    assert engine.tick(930.0) == []


def test_alert_resolved_before_group_wait_is_never_notified() -> None:
    engine = engine_for()
    evaluate(engine, 0, conn("c1", 0.9))
    evaluate(engine, 10, conn("c1", 0.1))
    assert engine.tick(30.0) == []
    assert engine.tick(330.0) == []


def test_repeat_interval_exactly() -> None:
    engine = engine_for()
    evaluate(engine, 0, conn("c1", 0.9))
    assert len(engine.tick(30.0)) == 1
    sent: list[tuple[float, str]] = []
    t = 330.0
    while t <= 30.0 + 2 * 14400:
        sent.extend((t, n.reason) for n in engine.tick(t))
        t += 300.0
    assert sent == [(14430.0, "repeat interval elapsed"), (28830.0, "repeat interval elapsed")]


def test_resolved_notice_and_group_cleanup() -> None:
    engine = engine_for()
    evaluate(engine, 0, conn("c1", 0.9))
    engine.tick(30.0)
    evaluate(engine, 40, conn("c1", 0.1))
    assert engine.tick(329.0) == []
    (resolved,) = engine.tick(330.0)
    assert resolved.status == "resolved"
    assert resolved.reason == "all alerts resolved"
    assert resolved.alerts[0].status == "resolved"
    assert engine.statistics().groups == 1
    engine.tick(630.0)  # an empty group is dropped on its next tick
    assert engine.statistics().groups == 0


def test_channel_min_severity_and_matchers() -> None:
    channels = (
        ChannelRoute("pager", Severity.CRITICAL),
        ChannelRoute("binance-chat", Severity.WARNING, matchers=(("route", "binance"),)),
        ChannelRoute("log", Severity.INFO),
    )
    engine = engine_for(channels)
    evaluate(
        engine,
        0,
        conn("c1", 0.9, route="bitfinex"),  # high_latency warning on bitfinex
        conn("c2", 0.1, route="binance", up=False),  # connection_failure critical on binance
    )
    notes = engine.tick(30.0)
    got = sorted((n.channel, n.alerts[0].alertname, n.alerts[0].labels["route"]) for n in notes)
    assert got == [
        ("binance-chat", "connection_failure", "binance"),
        ("log", "connection_failure", "binance"),
        ("log", "high_latency", "bitfinex"),
        ("pager", "connection_failure", "binance"),
    ]


def test_send_resolved_false_still_notifies_refire() -> None:
    channels = (ChannelRoute("email", send_resolved=False), ChannelRoute("hook"))
    engine = engine_for(channels)
    evaluate(engine, 0, conn("c1", 0.9))
    assert {n.channel for n in engine.tick(30.0)} == {"email", "hook"}
    evaluate(engine, 40, conn("c1", 0.1))
    assert [(n.channel, n.status) for n in engine.tick(330.0)] == [("hook", "resolved")]
    evaluate(engine, 400, conn("c1", 0.9))
    refire = engine.tick(630.0)
    # The re-fire is new for both channels (Alertmanager #1063 loses it for send_resolved=false).
    assert sorted((n.channel, n.reason) for n in refire) == [
        ("email", "new alerts added"),
        ("hook", "new alerts added"),
    ]


def test_engine_send_resolved_false() -> None:
    engine = engine_for(send_resolved=False)
    evaluate(engine, 0, conn("c1", 0.9))
    engine.tick(30.0)
    evaluate(engine, 40, conn("c1", 0.1))
    assert engine.tick(330.0) == []


def test_notification_payload_is_alertmanager_v4_like() -> None:
    engine = engine_for(external_url="http://127.0.0.1:9108")
    evaluate(engine, 1_767_225_600.0, conn("c1", 0.9), conn("c2", 0.8))
    (note,) = engine.tick(1_767_225_630.0)
    d = note.to_dict()
    json.dumps(d)  # JSON-able
    assert d["version"] == "4"
    assert d["status"] == "firing"
    assert d["receiver"] == "ops"
    assert d["groupKey"] == note.group_key
    assert d["groupLabels"] == {"alertname": "high_latency", "route": "bitfinex"}
    assert d["commonLabels"]["alertname"] == "high_latency"
    assert "connection" not in d["commonLabels"]
    assert d["externalURL"] == "http://127.0.0.1:9108"
    assert d["notification_reason"] == "first notification"
    first = d["alerts"][0]
    assert set(first) == {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"}
    assert first["startsAt"] == "2026-01-01T00:00:00.000Z"
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert first["annotations"]["summary"]
    assert Notification.from_dict(json.loads(json.dumps(d))) == note
    assert "ops" in repr(note)


def test_notification_ids_are_unique() -> None:
    engine = engine_for((ChannelRoute("a"), ChannelRoute("b")))
    ids = []
    for cycle in range(4):
        base = cycle * 1000.0
        evaluate(engine, base, conn("c1", 0.9))
        ids += [n.id for n in engine.tick(base + 30)]
        evaluate(engine, base + 40, conn("c1", 0.1))
        ids += [n.id for n in engine.tick(base + 330)]
        engine.tick(base + 630)
    assert len(ids) == len(set(ids)) == 16


def run_and_check(steps: list[tuple[float, float, float]], pending: int) -> int:
    """Drive an engine; assert notifications of one group to one channel are spaced by at
    least group_interval; return how many alert notifications were sent."""
    spec = replace(DEFAULT_RULES["high_latency"], pending_samples=pending, window=3)
    engine = AlertEngine({**OFF, "high_latency": spec}, [ChannelRoute("ops")])
    sent: dict[tuple[str, str], list[Notification]] = defaultdict(list)
    now = 0.0
    for gap, lat1, lat2 in steps:
        # Ticks land at arbitrary times between evaluations, as a runtime timer would.
        for note in engine.tick(now + gap / 2):
            sent[(note.channel, note.group_key)].append(note)
        now += gap
        result = evaluate(engine, now, conn("c1", lat1), conn("c2", lat2))
        for note in result.notifications:
            sent[(note.channel, note.group_key)].append(note)
    total = 0
    for notes in sent.values():
        alerts = [n for n in notes if n.kind == "alert"]
        total += len(alerts)
        for prev, cur in itertools.pairwise(alerts):
            assert cur.created_at - prev.created_at >= 300.0
        firing = [n for n in alerts if n.status == "firing"]
        for prev, cur in itertools.pairwise(firing):
            assert cur.created_at - prev.created_at >= 300.0
    return total


def test_spacing_checker_sees_notifications() -> None:
    steps = [(70.0, 0.9 if (i // 6) % 2 == 0 else 0.1, 0.2) for i in range(60)]
    assert run_and_check(steps, 2) >= 4


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=1.0, max_value=400.0),
            st.floats(min_value=0.0, max_value=1.0),
            st.floats(min_value=0.0, max_value=1.0),
        ),
        min_size=1,
        max_size=60,
    ),
    pending=st.integers(min_value=1, max_value=3),
)
def test_no_duplicate_firing_within_group_interval(
    steps: list[tuple[float, float, float]], pending: int
) -> None:
    run_and_check(steps, pending)
