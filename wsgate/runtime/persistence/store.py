"""The local SQLite store: alert state, acks, silences, history, the outbox and deliveries.

Synchronous on purpose: one local WAL database, small rows, a write costs tens of
microseconds (see ``tests/runtime/test_store.py::test_write_cost``), far below what
moving each call to a thread would cost. With ``synchronous=NORMAL`` in WAL mode a
commit survives a process crash (the case the outbox exists for); only an OS crash or
power loss can drop the last transactions.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsgate.errors import WsgateError

__all__ = ["SCHEMA_VERSION", "ChannelDeliveries", "Event", "OutboxRow", "Store", "StoreStatistics"]

log = logging.getLogger("wsgate.store")

# Each entry migrates from version i to i+1; never edit a released entry, append one.
# Migration 1's `alerts` table is unused: alert state lives in the engine snapshot
# (kv "engine"). Migrations are never edited, so databases of every age stay the same.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        state       TEXT NOT NULL
    );
    CREATE TABLE acks (
        fingerprint TEXT PRIMARY KEY,
        data        TEXT NOT NULL
    );
    CREATE TABLE silences (
        id   TEXT PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        ts         REAL NOT NULL,
        kind       TEXT NOT NULL,
        route      TEXT,
        connection TEXT,
        data       TEXT NOT NULL
    );
    CREATE INDEX events_ts ON events (ts);
    CREATE INDEX events_kind_ts ON events (kind, ts);
    CREATE INDEX events_route_ts ON events (route, ts);
    CREATE TABLE outbox (
        id              TEXT NOT NULL,
        channel         TEXT NOT NULL,
        payload         TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at      REAL NOT NULL,
        last_error      TEXT,
        PRIMARY KEY (id, channel)
    );
    CREATE INDEX outbox_channel_order ON outbox (channel, created_at);
    CREATE TABLE deliveries (
        id           TEXT NOT NULL,
        channel      TEXT NOT NULL,
        delivered_at REAL NOT NULL,
        attempts     INTEGER NOT NULL,
        PRIMARY KEY (id, channel)
    );
    CREATE INDEX deliveries_channel_at ON deliveries (channel, delivered_at);
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v2: a channel that could not show or send a notification (the console channel
    # without a terminal) records it as skipped, never as delivered.
    """
    ALTER TABLE deliveries ADD COLUMN skipped TEXT;
    """,
    # v3: a notification about the cluster is queued before its claim is asked for; until
    # the claim is settled the row holds it (JSON) and is not sent.
    """
    ALTER TABLE outbox ADD COLUMN claim TEXT;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class OutboxRow:
    id: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: float
    created_at: float
    last_error: str | None
    # Set while the row waits for the cluster's claim (not sent before it is settled):
    # what was asked, e.g. [{"fingerprint": ..., "proposal": "firing", "episode": ...}].
    claim: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    kind: str
    route: str | None
    connection: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class ChannelDeliveries:
    channel: str
    delivered: int
    last_delivered_at: float | None
    skipped: int = 0
    last_skip_reason: str | None = None


@dataclass(frozen=True)
class StoreStatistics:
    path: str
    schema_version: int
    events: int
    outbox: int
    deliveries: int


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Store:
    """One SQLite file. Not thread-safe: use it from the event loop thread only."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode; multi-statement changes go through ``_tx`` explicitly.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._migrate()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise WsgateError(
                f"{self.path}: database schema v{current} is newer than this wsgate "
                f"(v{SCHEMA_VERSION}); upgrade wsgate or move the state directory aside"
            )
        for version in range(current, SCHEMA_VERSION):
            with self._tx():
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version + 1}")
            log.info("store %s migrated to schema v%d", self.path, version + 1)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def statistics(self) -> StoreStatistics:
        def count(table: str) -> int:
            return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        return StoreStatistics(
            path=self.path,
            schema_version=self.schema_version,
            events=count("events"),
            outbox=count("outbox"),
            deliveries=count("deliveries"),
        )

    def __repr__(self) -> str:
        return f"<Store {self.path!r} v{SCHEMA_VERSION}>"

    # -- alert engine state ---------------------------------------------------------------------

    def save_engine_state(self, state: dict[str, Any]) -> None:
        self._kv_put("engine", state)

    def load_engine_state(self) -> dict[str, Any] | None:
        value = self._kv_get("engine")
        return value if isinstance(value, dict) else None

    def _kv_put(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, _dumps(value)),
        )

    def _kv_get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    # -- acks and silences (written through at once: a lost silence pages someone) -------------

    def put_ack(self, fingerprint: str, ack: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO acks (fingerprint, data) VALUES (?, ?) "
            "ON CONFLICT (fingerprint) DO UPDATE SET data = excluded.data",
            (fingerprint, _dumps(ack)),
        )

    def delete_ack(self, fingerprint: str) -> None:
        self._db.execute("DELETE FROM acks WHERE fingerprint = ?", (fingerprint,))

    def load_acks(self) -> dict[str, dict[str, Any]]:
        return {
            fp: json.loads(d) for fp, d in self._db.execute("SELECT fingerprint, data FROM acks")
        }

    def put_silence(self, silence_id: str, silence: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO silences (id, data) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (silence_id, _dumps(silence)),
        )

    def delete_silence(self, silence_id: str) -> None:
        self._db.execute("DELETE FROM silences WHERE id = ?", (silence_id,))

    def load_silences(self) -> dict[str, dict[str, Any]]:
        return {i: json.loads(d) for i, d in self._db.execute("SELECT id, data FROM silences")}

    # -- history --------------------------------------------------------------------------------

    def add_event(
        self,
        ts: float,
        kind: str,
        data: dict[str, Any],
        route: str | None = None,
        connection: str | None = None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO events (ts, kind, route, connection, data) VALUES (?, ?, ?, ?, ?)",
            (ts, kind, route, connection, _dumps(data)),
        )
        return int(cur.lastrowid or 0)

    def events(
        self,
        since: float | None = None,
        kind: str | None = None,
        route: str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Newest first."""
        where, args = [], []
        for clause, value in (("ts >= ?", since), ("kind = ?", kind), ("route = ?", route)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = "SELECT id, ts, kind, route, connection, data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit))
        return [Event(i, ts, k, r, c, json.loads(d)) for i, ts, k, r, c, d in rows]

    def prune_events(self, older_than: float) -> int:
        cur = self._db.execute("DELETE FROM events WHERE ts < ?", (older_than,))
        return cur.rowcount

    # -- outbox ---------------------------------------------------------------------------------

    def outbox_put(
        self,
        notification_id: str,
        channel: str,
        payload: dict[str, Any],
        now: float,
        *,
        claim: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Queue a delivery; ``False`` when it is already queued or already delivered.

        With ``claim`` the row waits, unsent, until :meth:`outbox_settle` says whether
        this node sends it: it is durable before the cluster is asked, so a crash between
        winning the claim and queueing cannot lose the page.
        """
        with self._tx():
            if self.is_delivered(notification_id, channel):
                return False
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (id, channel, payload, attempts, next_attempt_at,"
                " created_at, claim) VALUES (?, ?, ?, 0, ?, ?, ?)",
                (
                    notification_id,
                    channel,
                    _dumps(payload),
                    now,
                    now,
                    None if claim is None else _dumps(claim),
                ),
            )
            return cur.rowcount == 1

    def outbox_settle(
        self, notification_id: str, channel: str, payload: dict[str, Any] | None
    ) -> bool:
        """A claim is settled: send ``payload`` (what this node won of the notification)
        from now on, or drop the row (``None``: another node sends it). ``False`` when no
        row waited for it."""
        if payload is None:
            cur = self._db.execute(
                "DELETE FROM outbox WHERE id = ? AND channel = ? AND claim IS NOT NULL",
                (notification_id, channel),
            )
        else:
            cur = self._db.execute(
                "UPDATE outbox SET payload = ?, claim = NULL"
                " WHERE id = ? AND channel = ? AND claim IS NOT NULL",
                (_dumps(payload), notification_id, channel),
            )
        return cur.rowcount == 1

    def outbox_claims(self) -> list[OutboxRow]:
        """Rows still waiting for their claim (left by a crash, or being settled now)."""
        rows = self._db.execute(self._ROW + " WHERE claim IS NOT NULL ORDER BY created_at, rowid")
        return [self._row(r) for r in rows]

    _ROW = (
        "SELECT id, channel, payload, attempts, next_attempt_at, created_at, last_error, claim"
        " FROM outbox"
    )

    @staticmethod
    def _row(r: tuple[Any, ...]) -> OutboxRow:
        claim = None if r[7] is None else json.loads(r[7])
        return OutboxRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], claim)

    def outbox_head(self, channel: str) -> OutboxRow | None:
        """The oldest queued row of a channel that may be sent (its claim, if any, won):
        deliveries go out in the order raised."""
        r = self._db.execute(
            self._ROW + " WHERE channel = ? AND claim IS NULL ORDER BY created_at, rowid LIMIT 1",
            (channel,),
        ).fetchone()
        return None if r is None else self._row(r)

    def outbox_get(self, notification_id: str, channel: str) -> OutboxRow | None:
        r = self._db.execute(
            self._ROW + " WHERE id = ? AND channel = ?", (notification_id, channel)
        ).fetchone()
        return None if r is None else self._row(r)

    def outbox_rows(self, channel: str | None = None) -> list[OutboxRow]:
        if channel is None:
            rows = self._db.execute(self._ROW + " ORDER BY created_at, rowid")
        else:
            rows = self._db.execute(
                self._ROW + " WHERE channel = ? ORDER BY created_at, rowid", (channel,)
            )
        return [self._row(r) for r in rows]

    def outbox_count(self, channel: str) -> int:
        r = self._db.execute("SELECT count(*) FROM outbox WHERE channel = ?", (channel,))
        return int(r.fetchone()[0])

    def outbox_retry(
        self, notification_id: str, channel: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE id = ? AND channel = ?",
            (attempts, next_attempt_at, error, notification_id, channel),
        )

    def outbox_delivered(
        self,
        notification_id: str,
        channel: str,
        attempts: int,
        delivered_at: float,
        *,
        skipped: str | None = None,
    ) -> None:
        """Remove the row and remember the delivery, in one transaction.

        ``skipped`` (a reason) records that the channel deliberately did not show or send
        it: the row is done, but it is not counted as delivered.
        """
        with self._tx():
            self._db.execute(
                "DELETE FROM outbox WHERE id = ? AND channel = ?", (notification_id, channel)
            )
            self._db.execute(
                "INSERT OR REPLACE INTO deliveries (id, channel, delivered_at, attempts, skipped)"
                " VALUES (?, ?, ?, ?, ?)",
                (notification_id, channel, delivered_at, attempts, skipped),
            )

    def outbox_dead(self, row: OutboxRow, error: str, now: float) -> None:
        """Give up on a row the destination rejected for good; it is kept in history."""
        with self._tx():
            self._db.execute(
                "DELETE FROM outbox WHERE id = ? AND channel = ?", (row.id, row.channel)
            )
            data = {"id": row.id, "channel": row.channel, "error": error, "payload": row.payload}
            self.add_event(now, "notification_dropped", data)

    def is_delivered(self, notification_id: str, channel: str) -> bool:
        r = self._db.execute(
            "SELECT 1 FROM deliveries WHERE id = ? AND channel = ?", (notification_id, channel)
        )
        return r.fetchone() is not None

    def delivery_stats(self) -> dict[str, ChannelDeliveries]:
        rows = self._db.execute(
            "SELECT channel,"
            " sum(skipped IS NULL),"
            " max(CASE WHEN skipped IS NULL THEN delivered_at END),"
            " sum(skipped IS NOT NULL),"
            " (SELECT d2.skipped FROM deliveries d2 WHERE d2.channel = d.channel"
            "  AND d2.skipped IS NOT NULL ORDER BY d2.delivered_at DESC LIMIT 1)"
            " FROM deliveries d GROUP BY channel"
        )
        return {
            ch: ChannelDeliveries(ch, int(n or 0), last, int(sk or 0), reason)
            for ch, n, last, sk, reason in rows
        }

    def prune_deliveries(self, older_than: float) -> int:
        cur = self._db.execute("DELETE FROM deliveries WHERE delivered_at < ?", (older_than,))
        return cur.rowcount
