"""Where the daemon registers its upstream connections: an interface and its in-memory form.

The :class:`ConnectionStore` protocol is the seam later clustering plugs into (a Redis
store shares the same records across nodes). The daemon feeds it from the routes'
transition listener (:meth:`InMemoryConnectionStore.observe`): a connection is added
on its first transition, updated on every later one and removed once CLOSED.

Thread-safe: readers (a metrics scrape thread, a future replication thread) may run
beside the event loop, so every access holds one :class:`threading.Lock`.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from wsgate.core.states import ConnState, Transition
from wsgate.core.types import ConnectionType

if TYPE_CHECKING:
    from wsgate.runtime.upstream.connection import UpstreamConnection

__all__ = [
    "ConnectionRecord",
    "ConnectionStore",
    "ConnectionStoreStats",
    "InMemoryConnectionStore",
]


@dataclass(frozen=True)
class ConnectionRecord:
    """What a node publishes about one upstream connection (no live objects: serialisable)."""

    id: str
    route: str
    endpoint: str
    url: str
    type: ConnectionType
    state: ConnState
    since: float  # when the current state began (the daemon's monotonic clock)
    reason: str = ""
    node: str = ""
    transitions: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "route": self.route,
            "endpoint": self.endpoint,
            "url": self.url,
            "type": self.type.value,
            "state": self.state.label,
            "since": self.since,
            "reason": self.reason,
            "node": self.node,
            "transitions": self.transitions,
        }


@dataclass(frozen=True)
class ConnectionStoreStats:
    connections: int
    by_type: dict[str, int]
    by_state: dict[str, int]
    by_route: dict[str, int]
    added: int
    removed: int


@runtime_checkable
class ConnectionStore(Protocol):
    """Registry of upstream connections; implementations must be thread-safe."""

    def add(self, record: ConnectionRecord) -> None: ...
    def update(self, conn_id: str, state: ConnState, since: float, reason: str = "") -> None: ...
    def remove(self, conn_id: str) -> ConnectionRecord | None: ...
    def get(self, conn_id: str) -> ConnectionRecord | None: ...
    def list(
        self, *, route: str | None = None, type: ConnectionType | None = None
    ) -> list[ConnectionRecord]: ...
    def statistics(self) -> ConnectionStoreStats: ...
    def observe(self, conn: UpstreamConnection, t: Transition) -> None: ...


class InMemoryConnectionStore:
    """The single-node store: a dict behind a lock."""

    def __init__(self, node: str = "") -> None:
        self.node = node
        self._lock = threading.Lock()
        self._records: dict[str, ConnectionRecord] = {}
        self._added = 0
        self._removed = 0

    def add(self, record: ConnectionRecord) -> None:
        with self._lock:
            if record.id not in self._records:
                self._added += 1
            self._records[record.id] = record

    def update(self, conn_id: str, state: ConnState, since: float, reason: str = "") -> None:
        with self._lock:
            rec = self._records.get(conn_id)
            if rec is None:
                raise KeyError(f"connection {conn_id!r} is not in the store")
            self._records[conn_id] = replace(
                rec, state=state, since=since, reason=reason, transitions=rec.transitions + 1
            )

    def remove(self, conn_id: str) -> ConnectionRecord | None:
        with self._lock:
            rec = self._records.pop(conn_id, None)
            if rec is not None:
                self._removed += 1
            return rec

    def get(self, conn_id: str) -> ConnectionRecord | None:
        with self._lock:
            return self._records.get(conn_id)

    def list(
        self, *, route: str | None = None, type: ConnectionType | None = None
    ) -> list[ConnectionRecord]:
        with self._lock:
            records = list(self._records.values())
        return [
            r
            for r in records
            if (route is None or r.route == route) and (type is None or r.type is type)
        ]

    def statistics(self) -> ConnectionStoreStats:
        with self._lock:
            records = list(self._records.values())
            added, removed = self._added, self._removed
        return ConnectionStoreStats(
            connections=len(records),
            by_type=dict(Counter(r.type.value for r in records)),
            by_state=dict(Counter(r.state.label for r in records)),
            by_route=dict(Counter(r.route for r in records)),
            added=added,
            removed=removed,
        )

    # ---------------------------------------------------------------- daemon wiring
    def observe(self, conn: UpstreamConnection, t: Transition) -> None:
        """A ``RouteEnv.on_transition`` listener: keeps the store in step with every connection."""
        if t.new is ConnState.CLOSED:
            self.remove(conn.id)
            return
        with self._lock:
            known = conn.id in self._records
        if not known:
            s = conn.settings
            self.add(
                ConnectionRecord(
                    id=conn.id,
                    route=s.route,
                    endpoint=s.endpoint,
                    url=s.display_url,
                    type=s.conn_type,
                    state=t.new,
                    since=t.at,
                    reason=t.reason,
                    node=self.node,
                    transitions=1,
                )
            )
            return
        self.update(conn.id, t.new, t.at, t.reason)

    def __repr__(self) -> str:
        with self._lock:
            n = len(self._records)
        return f"<InMemoryConnectionStore node={self.node!r} connections={n}>"
