"""Upstream connection states: one enum, one transition table, one place that changes state.

::

    IDLE ─▶ CONNECTING ─▶ OPEN ◀─▶ DEGRADED
               │  ▲          │         │
               ▼  │          ▼         ▼
             BACKOFF ◀──── CLOSING ◀───┘
               │
    any ─▶ DRAINING ─▶ CLOSING        (admin: drain, then close)
    any ─▶ DISABLED                   (admin: no reconnects until enabled)
    CONNECTING ─▶ FAILED              (401/403: not retried silently)
    any ─▶ CLOSED                     (final: the daemon stopped the connection)

The state machine is pure: callers pass ``now``; it returns a :class:`Transition`
record, counts it and keeps a short history. The asyncio shell logs and publishes it.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["ConnState", "ConnectionStateMachine", "IllegalTransition", "Transition"]


class ConnState(IntEnum):
    IDLE = 0
    CONNECTING = 1
    OPEN = 2
    DEGRADED = 3
    CLOSING = 4
    BACKOFF = 5
    DRAINING = 6
    DISABLED = 7
    FAILED = 8
    CLOSED = 9

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def is_up(self) -> bool:
        """True when frames flow (DEGRADED still holds the socket, e.g. maintenance)."""
        return self in (ConnState.OPEN, ConnState.DEGRADED, ConnState.DRAINING)

    @property
    def accepts_placements(self) -> bool:
        return self is ConnState.OPEN


_S = ConnState
_ADMIN = {_S.DRAINING, _S.DISABLED, _S.CLOSED}
ALLOWED: dict[ConnState, frozenset[ConnState]] = {
    _S.IDLE: frozenset({_S.CONNECTING} | _ADMIN),
    _S.CONNECTING: frozenset({_S.OPEN, _S.BACKOFF, _S.FAILED, _S.CLOSING} | _ADMIN),
    _S.OPEN: frozenset({_S.DEGRADED, _S.CLOSING} | _ADMIN),
    _S.DEGRADED: frozenset({_S.OPEN, _S.CLOSING} | _ADMIN),
    _S.CLOSING: frozenset({_S.BACKOFF} | _ADMIN),
    _S.BACKOFF: frozenset({_S.CONNECTING} | _ADMIN),
    _S.DRAINING: frozenset({_S.CLOSING, _S.OPEN, _S.DISABLED, _S.CLOSED}),
    _S.DISABLED: frozenset({_S.BACKOFF, _S.CONNECTING, _S.CLOSED}),
    _S.FAILED: frozenset({_S.CONNECTING, _S.BACKOFF} | _ADMIN),
    _S.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A programming error: the shell asked for a transition the table forbids."""


@dataclass(frozen=True)
class Transition:
    connection: str
    old: ConnState
    new: ConnState
    at: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "connection": self.connection,
            "old": self.old.label,
            "new": self.new.label,
            "at": self.at,
            "reason": self.reason,
        }


class ConnectionStateMachine:
    """Holds the state of one upstream connection; :meth:`move` is the only mutator."""

    def __init__(self, connection: str, now: float, history: int = 32) -> None:
        self.connection = connection
        self._state = ConnState.IDLE
        self._since = now
        self._counts: Counter[tuple[ConnState, ConnState]] = Counter()
        self._history: deque[Transition] = deque(maxlen=history)
        self.reason = "created"

    @property
    def state(self) -> ConnState:
        return self._state

    @property
    def since(self) -> float:
        return self._since

    def can_move(self, new: ConnState) -> bool:
        return new in ALLOWED[self._state]

    def move(self, new: ConnState, now: float, reason: str) -> Transition:
        if new not in ALLOWED[self._state]:
            raise IllegalTransition(
                f"{self.connection}: {self._state.label} -> {new.label} ({reason})"
            )
        t = Transition(self.connection, self._state, new, now, reason)
        self._counts[(self._state, new)] += 1
        self._history.append(t)
        self._state, self._since, self.reason = new, now, reason
        return t

    def transitions(self) -> dict[str, int]:
        return {f"{a.label}->{b.label}": n for (a, b), n in sorted(self._counts.items())}

    def history(self) -> list[Transition]:
        return list(self._history)

    def __repr__(self) -> str:
        name = self._state.label
        return f"<ConnectionStateMachine {self.connection} {name} since={self._since:.3f}>"
