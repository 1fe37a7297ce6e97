"""ClientRegistry: who a token belongs to, token re-reads, duplicates, reload semantics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsgate.config.schema import ClientConfig
from wsgate.runtime.downstream.clients import ClientRegistry


class _Session:
    """What the registry reads of a session: its subscription count."""

    def __init__(self, subs: int) -> None:
        self.subs = subs

    def subscription_count(self) -> int:
        return self.subs


def _add(registry: ClientRegistry, name: str, session: Any) -> None:
    registry.clients[name].sessions.add(session)


def test_identify_matches_only_a_configured_non_empty_token(tmp_path: Path) -> None:
    token = tmp_path / "b.token"
    token.write_text("tok-b\n")
    reg = ClientRegistry()
    assert reg.load([]) is None and not reg.enabled
    reg.load(
        [
            ClientConfig("a", token_env="A"),
            ClientConfig("b", token_file=str(token)),
            ClientConfig("c", token_env="UNSET"),
        ],
        environ={"A": "tok-a"},
    )
    assert reg.enabled
    a, b = reg.identify("tok-a"), reg.identify("tok-b")
    assert a is not None and a.name == "a" and b is not None and b.name == "b"
    assert reg.identify("") is None  # c's missing token matches nothing
    assert reg.identify("tok-") is None
    assert {s.name: s.token for s in reg.statistics()} == {"a": "ok", "b": "ok", "c": "missing"}
    assert "tok-a" not in repr(reg) and "tok-a" not in repr(a)


def test_same_token_for_two_clients_lets_neither_in() -> None:
    reg = ClientRegistry()
    note = reg.load(
        [ClientConfig("a", token_env="A"), ClientConfig("b", token_env="B")],
        environ={"A": "same", "B": "same"},
    )
    assert reg.identify("same") is None
    assert [s.token for s in reg.statistics()] == ["duplicate", "duplicate"]
    assert note is not None and "no usable token: a, b" in note and "same" not in note


def test_reload_keeps_state_swaps_limits_and_retires_removed_clients() -> None:
    reg = ClientRegistry()
    reg.load([ClientConfig("a", token_env="A", max_subscriptions=5)], environ={"A": "t1"})
    state = reg.clients["a"]
    _add(reg, "a", _Session(3))
    _add(reg, "a", _Session(1))
    state.refused["route"] += 1
    assert state.subscriptions() == 4
    note = reg.load([ClientConfig("a", token_env="A", max_subscriptions=2)], environ={"A": "t2"})
    assert reg.clients["a"] is state and state.cfg.max_subscriptions == 2  # same counts
    assert note is not None and "new token for a" in note
    assert reg.identify("t1") is None and reg.identify("t2") is state
    note = reg.load([ClientConfig("b", token_env="B")], environ={"B": "tb"})
    assert note is not None and "removed a (2 open session(s) run on)" in note
    stats = {s.name: s for s in reg.statistics()}
    assert stats["a"].configured is False and stats["a"].sessions == 2
    assert stats["a"].refused == {"route": 1, "max_sessions": 0, "max_subscriptions": 0}
    assert reg.identify("t2") is None  # a removed client cannot open new sessions
    reg.load([ClientConfig("a", token_env="A"), ClientConfig("b", token_env="B")], {"A": "t3"})
    assert reg.clients["a"] is state and state.configured  # re-added: the same counts
    assert not reg.retired
