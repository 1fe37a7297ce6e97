"""The subscription registry of one route: desired, pending and confirmed, per connection.

Pure bookkeeping: the hub reports what happened (a session wants a key, the exchange
confirmed, data arrived, a connection was lost) and calls :meth:`tick` with ``now``
to learn what is due (retry a pending subscribe, drop a lingering one, resubscribe a
silent channel, reconnect a connection whose channels are all silent). Nothing is
ever dropped silently: a failed subscription names the sessions to tell.

Every subscribe is answered, and the registry decides when: a subscribe sent and not
confirmed within ``pending_timeout`` is sent again, ``resends`` times (one by default);
when the last resend times out too, the sessions still waiting get the venue's error
(``TickActions.unanswered``). The clock of a subscribe runs from when it left for the
exchange (:meth:`SubscriptionRegistry.written`), not while it waits for the connection's
message budget; one the runtime could not even queue
(:meth:`~SubscriptionRegistry.send_dropped`) counts as sent and unanswered from then.

Gateway channel ids are stable per key for the life of the registry, so a session
never sees its channel id change when wsgate moves the subscription to another
upstream connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "RegistryStats",
    "SubState",
    "Subscription",
    "SubscriptionRegistry",
    "TickActions",
]


class SubState(StrEnum):
    DESIRED = "desired"  # wanted, not yet placed on a connection (or re-homing)
    PENDING = "pending"  # subscribe sent, waiting for the exchange's confirmation
    CONFIRMED = "confirmed"  # live
    LINGER = "linger"  # no session left; kept for `linger` seconds in case one returns
    FAILED = "failed"  # the exchange refused it for good (unknown symbol, ...)


@dataclass(eq=False)
class Subscription:
    key: Hashable
    gw_id: int
    cadence: float
    state: SubState = SubState.DESIRED
    conn_id: str | None = None
    upstream_id: object = None  # exchange channel id on conn_id
    sessions: set[int] = field(default_factory=set)
    since: float = 0.0  # when the current state began
    last_data_at: float | None = None
    linger_until: float | None = None
    attempts: int = 0
    # PENDING: whether the subscribe has left for the exchange. One still queued behind the
    # connection's message budget is not overdue: ``since`` restarts when it is written.
    written: bool = True
    timeouts: int = 0  # PENDING timeouts since the last confirmation
    resubscribes: int = 0
    error: str | None = None
    # Opaque to the registry: the runtime caches its per-subscription hot-path context
    # here (a frozen-dataclass key re-hashes on every dict lookup). A subscription that
    # leaves the registry is never looked up again, so the cache dies with it.
    attachment: Any = field(default=None, repr=False, compare=False)
    # Sessions still owed an answer (subscribed or an error), with when they asked. Emptied
    # by the confirmation; :meth:`SubscriptionRegistry.tick` reports the overdue ones.
    waiting: dict[int, float] = field(default_factory=dict, repr=False, compare=False)

    def silent_for(self, now: float) -> float:
        ref = self.last_data_at if self.last_data_at is not None else self.since
        return now - ref

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "key": str(self.key),
            "gateway_id": self.gw_id,
            "state": self.state.value,
            "connection": self.conn_id,
            "sessions": len(self.sessions),
            "last_message_age": None if self.last_data_at is None else now - self.last_data_at,
            "cadence": self.cadence,
            "resubscribes": self.resubscribes,
            "error": self.error,
        }


@dataclass
class TickActions:
    retry: list[Subscription] = field(default_factory=list)  # pending timed out: place again
    unsubscribe: list[Subscription] = field(default_factory=list)  # linger over: drop upstream
    resubscribe: list[Subscription] = field(default_factory=list)  # channel silent too long
    reconnect: list[str] = field(default_factory=list)  # every channel of the conn is silent
    # (subscription, sessions) still unplaced after answer_timeout, or unconfirmed after a
    # resend: tell them it failed.
    unanswered: list[tuple[Subscription, list[int]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.retry or self.unsubscribe or self.resubscribe or self.reconnect or self.unanswered
        )


@dataclass(frozen=True)
class RegistryStats:
    subscriptions: int
    by_state: dict[str, int]
    sessions_attached: int
    resubscribes: int
    failures: int
    re_homed: int


class SubscriptionRegistry:
    def __init__(
        self,
        *,
        pending_timeout: float = 10.0,
        resends: int = 1,
        linger: float = 30.0,
        stale_grace: float = 1.0,
        answer_timeout: float = 15.0,
    ) -> None:
        self.pending_timeout = pending_timeout
        # Sends of an unconfirmed subscribe after the first; past them the sessions get an error.
        self.resends = resends
        # A session's subscribe that no connection could take for this long gets an error.
        self.answer_timeout = answer_timeout
        self.linger = linger
        self.stale_grace = stale_grace
        self._subs: dict[Hashable, Subscription] = {}
        self._by_upstream: dict[tuple[str, object], Subscription] = {}
        self._gw_ids: dict[Hashable, int] = {}
        self._next_gw = itertools.count(1)
        self._resubscribes = 0
        self._failures = 0
        self._re_homed = 0

    # ---------------------------------------------------------------- sessions
    def acquire(
        self, key: Hashable, session: int, now: float, cadence: float
    ) -> tuple[Subscription, bool]:
        """A session wants ``key``. Returns (subscription, needs_placement)."""
        sub = self._subs.get(key)
        if sub is None or sub.state is SubState.FAILED:
            gw = self._gw_ids.get(key)
            if gw is None:
                gw = self._gw_ids[key] = next(self._next_gw)
            sub = Subscription(key, gw, cadence, since=now)
            self._subs[key] = sub
            sub.sessions.add(session)
            sub.waiting[session] = now
            return sub, True
        sub.sessions.add(session)
        if sub.state is SubState.LINGER:
            sub.linger_until = None
            sub.state = SubState.CONFIRMED
        if sub.state is not SubState.CONFIRMED:
            sub.waiting.setdefault(session, now)
        return sub, False

    def take_waiting(self, sub: Subscription) -> list[int]:
        """The sessions still owed an answer, now handed to the caller to answer."""
        sessions = list(sub.waiting)
        sub.waiting.clear()
        return sessions

    def release(self, key: Hashable, session: int, now: float) -> Subscription | None:
        sub = self._subs.get(key)
        if sub is None:
            return None
        sub.sessions.discard(session)
        sub.waiting.pop(session, None)
        if not sub.sessions:
            if sub.state is SubState.CONFIRMED:
                sub.state, sub.linger_until = SubState.LINGER, now + self.linger
            elif sub.state in (SubState.DESIRED, SubState.FAILED):
                self._remove(sub)
            # PENDING with no sessions: tick drops it once confirmed and lingered
        return sub

    def release_all(self, session: int, now: float) -> list[Subscription]:
        return [
            s
            for s in [self.release(k, session, now) for k in self.keys_of_session(session)]
            if s is not None
        ]

    def keys_of_session(self, session: int) -> list[Hashable]:
        return [k for k, s in self._subs.items() if session in s.sessions]

    # ---------------------------------------------------------------- upstream
    def assign(self, sub: Subscription, conn_id: str, now: float, *, written: bool = True) -> None:
        """The hub sent a subscribe for ``sub`` on ``conn_id`` (``written=False``: queued
        behind the connection's budget; :meth:`written` starts its clock)."""
        self._unbind(sub)
        sub.conn_id, sub.state, sub.since = conn_id, SubState.PENDING, now
        sub.written = written
        sub.attempts += 1

    def written(self, sub: Subscription, conn_id: str, attempt: int, now: float) -> None:
        """The subscribe of ``attempt`` on ``conn_id`` left for the exchange at ``now``."""
        if (
            sub.state is SubState.PENDING
            and sub.conn_id == conn_id
            and sub.attempts == attempt
            and not sub.written
        ):
            sub.written, sub.since = True, now

    def send_dropped(self, sub: Subscription, conn_id: str, attempt: int, now: float) -> None:
        """The subscribe of ``attempt`` never left: the connection's send queue was full.
        It is timed as sent at ``now``, so the timeout resends it within the budget."""
        self.written(sub, conn_id, attempt, now)

    def confirm(self, sub: Subscription, upstream_id: object, now: float) -> None:
        assert sub.conn_id is not None
        self._unbind(sub)
        sub.upstream_id = upstream_id
        self._by_upstream[(sub.conn_id, upstream_id)] = sub
        sub.state, sub.since, sub.error = SubState.CONFIRMED, now, None
        sub.written, sub.timeouts = True, 0
        sub.waiting.clear()  # the caller acks every session
        sub.last_data_at = None
        if not sub.sessions:
            sub.state, sub.linger_until = SubState.LINGER, now + self.linger

    def lookup(self, conn_id: str, upstream_id: object) -> Subscription | None:
        return self._by_upstream.get((conn_id, upstream_id))

    def fail(self, sub: Subscription, reason: str, now: float) -> set[int]:
        """The exchange refused ``sub`` for good: returns the sessions to tell."""
        self._unbind(sub)
        sub.state, sub.since, sub.error, sub.conn_id = SubState.FAILED, now, reason, None
        self._failures += 1
        sessions = set(sub.sessions)
        sub.waiting.clear()
        self._remove(sub)
        return sessions

    def unplace(self, sub: Subscription, now: float) -> None:
        """Back to DESIRED (e.g. 10305 channel limit): the hub places it elsewhere."""
        self._unbind(sub)
        sub.state, sub.since, sub.conn_id, sub.upstream_id = SubState.DESIRED, now, None, None

    def connection_lost(self, conn_id: str, now: float) -> list[Subscription]:
        """Every subscription of a lost connection goes back to DESIRED, for re-homing."""
        moved = []
        for sub in list(self._subs.values()):
            if sub.conn_id != conn_id:
                continue
            if sub.state is SubState.LINGER:
                self._remove(sub)
                continue
            self.unplace(sub, now)
            moved.append(sub)
        self._re_homed += len(moved)
        return moved

    def dropped(self, sub: Subscription) -> None:
        """The hub unsubscribed upstream after the linger period."""
        self._remove(sub)

    def on_data(self, sub: Subscription, now: float) -> None:
        sub.last_data_at = now

    # ---------------------------------------------------------------- timers
    def tick(self, now: float, live_connections: Iterable[str] = ()) -> TickActions:
        actions = TickActions()
        per_conn: dict[str, list[bool]] = {}
        for sub in list(self._subs.values()):
            if (
                sub.state is SubState.PENDING
                and sub.written
                and now - sub.since >= self.pending_timeout
            ):
                sub.timeouts += 1
                if sub.timeouts > self.resends and sub.waiting:
                    # The last resend went unconfirmed too: the sessions get the venue's
                    # error (and are released); anyone already acked keeps the retries.
                    actions.unanswered.append((sub, list(sub.waiting)))
                    sub.waiting.clear()
                self.unplace(sub, now)
                actions.retry.append(sub)
            elif sub.state is SubState.LINGER and sub.linger_until is not None:
                if now >= sub.linger_until:
                    actions.unsubscribe.append(sub)
            elif sub.state is SubState.CONFIRMED and sub.conn_id is not None:
                silent = sub.silent_for(now) > sub.cadence + self.stale_grace
                per_conn.setdefault(sub.conn_id, []).append(silent)
                if silent:
                    sub.resubscribes += 1
                    self._resubscribes += 1
                    sub.since, sub.last_data_at = now, None
                    actions.resubscribe.append(sub)
            elif sub.state is SubState.DESIRED and sub.sessions:
                overdue = [
                    s for s, asked in sub.waiting.items() if now - asked >= self.answer_timeout
                ]
                if overdue:
                    for s in overdue:
                        del sub.waiting[s]
                    actions.unanswered.append((sub, overdue))
                actions.retry.append(sub)  # still unplaced (no capacity earlier): try again
        live = set(live_connections)
        for conn_id, flags in per_conn.items():
            if flags and all(flags) and (not live or conn_id in live):
                actions.reconnect.append(conn_id)
        return actions

    # ---------------------------------------------------------------- views
    def get(self, key: Hashable) -> Subscription | None:
        return self._subs.get(key)

    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def load(self, conn_id: str) -> int:
        return sum(
            1
            for s in self._subs.values()
            if s.conn_id == conn_id and s.state is not SubState.FAILED
        )

    def keys_on(self, conn_id: str) -> list[Hashable]:
        return [k for k, s in self._subs.items() if s.conn_id == conn_id]

    def statistics(self) -> RegistryStats:
        by: dict[str, int] = {}
        for s in self._subs.values():
            by[s.state.value] = by.get(s.state.value, 0) + 1
        return RegistryStats(
            subscriptions=len(self._subs),
            by_state=by,
            sessions_attached=sum(len(s.sessions) for s in self._subs.values()),
            resubscribes=self._resubscribes,
            failures=self._failures,
            re_homed=self._re_homed,
        )

    # ---------------------------------------------------------------- internals
    def _unbind(self, sub: Subscription) -> None:
        if sub.conn_id is not None and sub.upstream_id is not None:
            self._by_upstream.pop((sub.conn_id, sub.upstream_id), None)
        sub.upstream_id = None

    def _remove(self, sub: Subscription) -> None:
        self._unbind(sub)
        if self._subs.get(sub.key) is sub:
            del self._subs[sub.key]

    def __repr__(self) -> str:
        return f"<SubscriptionRegistry {len(self._subs)} subscriptions>"
