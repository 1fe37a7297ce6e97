import pytest

from wsgate.core.states import ALLOWED, ConnectionStateMachine, ConnState, IllegalTransition


def test_lifecycle_counts_and_history() -> None:
    sm = ConnectionStateMachine("bitfinex-1", now=0.0)
    for i, (state, why) in enumerate(
        [
            (ConnState.CONNECTING, "start"),
            (ConnState.OPEN, "handshake ok"),
            (ConnState.DEGRADED, "maintenance 20060"),
            (ConnState.OPEN, "maintenance 20061"),
            (ConnState.CLOSING, "stale"),
            (ConnState.BACKOFF, "wait 0.4s"),
            (ConnState.CONNECTING, "retry"),
        ]
    ):
        t = sm.move(state, now=float(i + 1), reason=why)
        assert t.new is state
    assert sm.state is ConnState.CONNECTING
    assert sm.since == 7.0
    assert sm.transitions()["connecting->open"] == 1
    assert sm.transitions()["backoff->connecting"] == 1
    assert [t.reason for t in sm.history()][-1] == "retry"
    assert "bitfinex-1 connecting" in repr(sm)


def test_illegal_transition_raises() -> None:
    sm = ConnectionStateMachine("c", now=0.0)
    with pytest.raises(IllegalTransition):
        sm.move(ConnState.OPEN, 1.0, "skip connecting")
    sm.move(ConnState.CLOSED, 1.0, "stopped")
    assert not sm.can_move(ConnState.CONNECTING)


def test_admin_states_reachable_from_everywhere_but_closed() -> None:
    for s in ConnState:
        if s in (ConnState.CLOSED, ConnState.DISABLED, ConnState.DRAINING):
            continue
        assert ConnState.DISABLED in ALLOWED[s]


def test_up_states() -> None:
    assert ConnState.OPEN.is_up and ConnState.DEGRADED.is_up
    assert not ConnState.BACKOFF.is_up
    assert ConnState.OPEN.accepts_placements and not ConnState.DRAINING.accepts_placements
