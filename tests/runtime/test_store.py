"""The SQLite store: migrations, round trips, history queries, outbox bookkeeping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from wsgate.errors import WsgateError
from wsgate.runtime.persistence.store import SCHEMA_VERSION, Store


def test_new_database_is_migrated_and_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "wsgate.db")
    assert store.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    want = {"alerts", "acks", "silences", "events", "outbox", "deliveries", "kv"}
    assert want <= tables
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"events_ts", "events_kind_ts", "events_route_ts", "outbox_channel_order"} <= indexes
    db.close()
    store.close()


def test_reopen_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.db"
    store = Store(path)
    store.save_engine_state({"records": [{"state": "firing", "since": 1.5}]})
    store.close()
    again = Store(path)
    assert again.schema_version == SCHEMA_VERSION
    assert again.load_engine_state() == {"records": [{"state": "firing", "since": 1.5}]}
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(WsgateError, match="newer than this wsgate"):
        Store(path)


def test_alert_engine_ack_silence_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    assert store.load_engine_state() is None
    store.save_engine_state({"groups": {"g": [1, 2]}, "rev": 3})
    assert store.load_engine_state() == {"groups": {"g": [1, 2]}, "rev": 3}
    store.put_ack("fp1", {"by": "ops", "comment": "looking"})
    assert store.load_acks() == {"fp1": {"by": "ops", "comment": "looking"}}
    store.delete_ack("fp1")
    assert store.load_acks() == {}
    store.put_silence("s1", {"matchers": [["route", "=", "bitfinex"]], "ends_at": 10.0})
    assert store.load_silences()["s1"]["ends_at"] == 10.0
    store.delete_silence("s1")
    assert store.load_silences() == {}
    store.close()


def test_events_filter_order_and_prune(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.add_event(10.0, "alert_fired", {"fp": "a"}, route="bitfinex", connection="c1")
    store.add_event(20.0, "reconnect", {"n": 1}, route="binance")
    store.add_event(30.0, "alert_fired", {"fp": "b"}, route="binance")
    assert [e.ts for e in store.events()] == [30.0, 20.0, 10.0]
    assert [e.data for e in store.events(kind="alert_fired")] == [{"fp": "b"}, {"fp": "a"}]
    assert [e.ts for e in store.events(route="binance", since=25.0)] == [30.0]
    first = store.events(kind="alert_fired", route="bitfinex")[0]
    assert (first.route, first.connection) == ("bitfinex", "c1")
    assert len(store.events(limit=1)) == 1
    assert store.prune_events(older_than=25.0) == 2
    assert [e.ts for e in store.events()] == [30.0]
    store.close()


def test_a_held_row_is_not_sent_until_its_claim_is_settled(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    claim = [{"fingerprint": "fp", "alertname": "x", "proposal": "firing", "episode": "e"}]
    assert store.outbox_put("n1", "hook", {"id": "n1", "v": 1}, now=1.0, claim=claim)
    assert store.outbox_put("n2", "hook", {"id": "n2"}, now=2.0, claim=claim)
    assert store.outbox_head("hook") is None  # held rows never go out
    assert store.outbox_count("hook") == 2
    assert [(r.id, r.claim) for r in store.outbox_claims()] == [("n1", claim), ("n2", claim)]
    assert store.outbox_settle("n1", "hook", {"id": "n1", "v": 2})  # won: sent from now on
    head = store.outbox_head("hook")
    assert head is not None and (head.id, head.payload, head.claim) == (
        "n1",
        {"id": "n1", "v": 2},
        None,
    )
    assert not store.outbox_settle("n1", "hook", None)  # settled once: a ready row stays
    assert store.outbox_settle("n2", "hook", None)  # lost: dropped
    assert [r.id for r in store.outbox_rows("hook")] == ["n1"] and store.outbox_claims() == []


def test_outbox_rows_delivery_bookkeeping(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    assert store.outbox_put("n1", "slack", {"id": "n1"}, now=1.0)
    assert store.outbox_put("n2", "slack", {"id": "n2"}, now=2.0)
    assert store.outbox_put("n1", "email", {"id": "n1"}, now=1.0)
    assert not store.outbox_put("n1", "slack", {"id": "n1"}, now=3.0)  # already queued
    head = store.outbox_head("slack")
    assert head is not None and head.id == "n1" and head.attempts == 0
    store.outbox_retry("n1", "slack", 1, 99.0, "HTTP 503")
    row = store.outbox_get("n1", "slack")
    assert row is not None and (row.attempts, row.next_attempt_at, row.last_error) == (
        1,
        99.0,
        "HTTP 503",
    )
    store.outbox_delivered("n1", "slack", attempts=2, delivered_at=100.0)
    assert store.is_delivered("n1", "slack")
    assert not store.is_delivered("n1", "email")
    assert not store.outbox_put("n1", "slack", {"id": "n1"}, now=101.0)  # already delivered
    assert [r.id for r in store.outbox_rows("slack")] == ["n2"]
    assert store.outbox_count("email") == 1
    stats = store.delivery_stats()["slack"]
    assert (stats.delivered, stats.last_delivered_at) == (1, 100.0)
    n2 = store.outbox_get("n2", "slack")
    assert n2 is not None
    store.outbox_dead(n2, "HTTP 400", now=102.0)
    assert store.outbox_count("slack") == 0
    (dropped,) = store.events(kind="notification_dropped")
    assert dropped.data["payload"] == {"id": "n2"} and dropped.data["error"] == "HTTP 400"
    store.close()


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.outbox_put("n1", "slack", {"id": "n1"}, now=1.0)
    with pytest.raises(RuntimeError), store._tx():
        store._db.execute("DELETE FROM outbox")
        raise RuntimeError("crash mid-transaction")
    assert store.outbox_count("slack") == 1
    store.close()
