"""Per-bot identities at run time: who a token belongs to, and what that bot holds.

The gateway asks :meth:`ClientRegistry.identify` for the client a presented token
belongs to; every configured token is compared (``hmac.compare_digest``, no early exit),
so the time taken does not tell which entry, if any, matched. A :class:`ClientState`
counts the client's sessions and, through them, its subscriptions on shared routes.

A reload (:meth:`ClientRegistry.load`) re-reads every token (env or file) and swaps the
table: new handshakes use it at once. A session keeps the :class:`ClientState` it
connected with; a client still configured keeps the same state object with its new
limits, which apply to its next session and its next subscribe request (nothing open
is closed or unsubscribed). A removed client's open sessions run on under its name
until they end.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wsgate.config.schema import ClientConfig

__all__ = ["REFUSALS", "ClientRegistry", "ClientState", "ClientStats"]

log = logging.getLogger("wsgate.gateway")

# Why a client was turned away (metric label values, status keys).
REFUSALS = ("route", "max_sessions", "max_subscriptions")


@dataclass(frozen=True)
class ClientStats:
    name: str
    sessions: int
    subscriptions: int
    routes: tuple[str, ...] | None
    max_sessions: int | None
    max_subscriptions: int | None
    refused: dict[str, int]
    token: str  # "ok", "missing" (env unset or file unreadable) or "duplicate"
    configured: bool  # False: removed by a reload, sessions still open


class HeldSession(Protocol):
    """What a client counts of its sessions (a :class:`~wsgate.runtime.downstream.session.
    Session`; no import of it, which refers back here)."""

    @property
    def subscription_count(self) -> Callable[[], int]: ...


class ClientState:
    """One identity: its config (replaced by a reload), token, open sessions and refusals."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self.token: bytes | None = None
        self.token_status = "missing"
        self.fingerprint = ""  # sha256 of the token: tells a reload it changed, nothing more
        self.sessions: set[HeldSession] = set()
        self.refused: Counter[str] = Counter()
        self.configured = True

    @property
    def name(self) -> str:
        return self.cfg.name

    def subscriptions(self) -> int:
        """Subscriptions held (or waiting for the exchange) across its sessions."""
        return sum(s.subscription_count() for s in self.sessions)

    def statistics(self) -> ClientStats:
        return ClientStats(
            name=self.name,
            sessions=len(self.sessions),
            subscriptions=self.subscriptions(),
            routes=self.cfg.routes,
            max_sessions=self.cfg.max_sessions,
            max_subscriptions=self.cfg.max_subscriptions,
            refused={k: self.refused[k] for k in REFUSALS},
            token=self.token_status,
            configured=self.configured,
        )

    def __repr__(self) -> str:
        return f"<ClientState {self.name} sessions={len(self.sessions)} token={self.token_status}>"


def _read_token(cfg: ClientConfig, environ: Mapping[str, str]) -> str:
    """The client's token, or "" when it cannot be had (never logged, never raised)."""
    if cfg.token_env:
        return environ.get(cfg.token_env, "").strip()
    if cfg.token_file:
        try:
            return Path(cfg.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            log.error(
                "client %s: cannot read token_file %s (%s); it cannot connect",
                cfg.name,
                cfg.token_file,
                getattr(exc, "strerror", None) or type(exc).__name__,
            )
    return ""


class ClientRegistry:
    def __init__(self) -> None:
        self.clients: dict[str, ClientState] = {}
        self.retired: set[ClientState] = set()  # removed by a reload, sessions still open

    @property
    def enabled(self) -> bool:
        """Clients are configured: every bot route then needs a token."""
        return bool(self.clients)

    def configs(self) -> tuple[ClientConfig, ...]:
        return tuple(c.cfg for c in self.clients.values())

    def load(
        self, configs: Sequence[ClientConfig], environ: Mapping[str, str] | None = None
    ) -> str | None:
        """Take ``configs`` and (re-)read every token; a note for the reload, or None."""
        env = os.environ if environ is None else environ
        old = self.clients
        new: dict[str, ClientState] = {}
        changed_tokens: list[str] = []
        for cfg in configs:
            revived = [s for s in self.retired if s.name == cfg.name]
            state = old.get(cfg.name) or (revived[0] if revived else ClientState(cfg))
            state.cfg = cfg
            state.configured = True
            token = _read_token(cfg, env)
            fingerprint = hashlib.sha256(token.encode()).hexdigest() if token else ""
            if cfg.name in old and fingerprint != state.fingerprint:
                changed_tokens.append(cfg.name)
            state.fingerprint = fingerprint
            state.token = token.encode() if token else None
            state.token_status = "ok" if token else "missing"
            if not token and cfg.token_env:
                log.warning(
                    "client %s: $%s is not set or empty; it cannot connect",
                    cfg.name,
                    cfg.token_env,
                )
            new[cfg.name] = state
        self._refuse_duplicates(new)
        for name, state in old.items():
            if name not in new and state.sessions:
                state.configured = False
                self.retired.add(state)
        self.retired = {s for s in self.retired if s.sessions and s.name not in new}
        self.clients = new
        if not configs and not old:
            return None
        return self._note(old, new, changed_tokens)

    @staticmethod
    def _refuse_duplicates(states: Mapping[str, ClientState]) -> None:
        by_token: dict[bytes, list[ClientState]] = {}
        for state in states.values():
            if state.token is not None:
                by_token.setdefault(state.token, []).append(state)
        for same in by_token.values():
            if len(same) < 2:
                continue
            names = ", ".join(s.name for s in same)
            log.error(
                "clients %s have the same token: none of them can connect until each has its own",
                names,
            )
            for s in same:
                s.token = None
                s.token_status = "duplicate"

    def _note(
        self, old: Mapping[str, ClientState], new: Mapping[str, ClientState], changed: list[str]
    ) -> str:
        added = [n for n in new if n not in old]
        removed = [n for n in old if n not in new]
        parts = [f"{len(new)} client(s)"]
        if added:
            parts.append(f"added {', '.join(added)}")
        if removed:
            kept = sum(len(old[n].sessions) for n in removed)
            parts.append(f"removed {', '.join(removed)} ({kept} open session(s) run on)")
        if changed:
            parts.append(f"new token for {', '.join(changed)}")
        unusable = [s.name for s in new.values() if s.token is None]
        if unusable:
            parts.append(f"no usable token: {', '.join(unusable)}")
        return (
            f"gateway.clients: {'; '.join(parts)}. Tokens re-read: new connections "
            "authenticate against them and their routes; max_sessions and max_subscriptions "
            "apply to new sessions and new subscribe requests; open sessions keep the "
            "identity they connected with and nothing open is closed"
        )

    def identify(self, given: str) -> ClientState | None:
        """The client whose token is ``given``; every entry is compared, in constant time."""
        presented = given.encode()
        found: ClientState | None = None
        for state in self.clients.values():
            expected = state.token if state.token is not None else b"\x00"
            if hmac.compare_digest(presented, expected) and state.token is not None:
                found = state
        return found

    def all_states(self) -> list[ClientState]:
        return [*self.clients.values(), *sorted(self.retired, key=lambda s: s.name)]

    def statistics(self) -> list[ClientStats]:
        return [s.statistics() for s in self.all_states()]

    def __repr__(self) -> str:
        return f"<ClientRegistry clients={list(self.clients)} retired={len(self.retired)}>"
