"""Membership: states from heartbeat ages with fake time, skew, stalls, link loss."""

from __future__ import annotations

from wsgate.core.cluster import Membership, NodeChange, NodeState

DOWN_AFTER = 2.0


def member(self_id: str = "a") -> Membership:
    return Membership(self_id, node_down_after=DOWN_AFTER, stall_after=1.5)


def beat(m: Membership, node: str, rev: int, now: float, **summary: object) -> NodeChange | None:
    return m.observe(node, rev, {"instance": f"{node}-i1", **summary}, now, 1_000_000.0 + now)


def test_join_down_and_back_with_one_episode() -> None:
    m = member()
    m.set_link(True, 0.0)
    assert beat(m, "b", 1, 0.0) == NodeChange("b", None, NodeState.UP, "")
    assert beat(m, "a", 5, 0.0) is None  # our own heartbeat is not a peer
    for t in (0.5, 1.0, 1.5, 2.0):
        assert m.tick(t) == []
    assert beat(m, "b", 2, 1.9) is None
    for t in (2.5, 3.0, 3.5, 3.8):
        assert m.tick(t) == []  # up to 1.9 s of silence: still up
    [change] = m.tick(4.0)
    assert change == NodeChange("b", NodeState.UP, NodeState.DOWN, "b-i1.2")
    assert m.tick(4.5) == []  # judged once
    back = beat(m, "b", 3, 5.0)
    assert back == NodeChange("b", NodeState.DOWN, NodeState.UP, "b-i1.2")
    assert m.episode("b") == "b-i1.2"


def test_graceful_leave_is_left_not_down() -> None:
    m = member()
    m.set_link(True, 0.0)
    beat(m, "b", 1, 0.0)
    change = beat(m, "b", 2, 0.5, state="left")
    assert change is not None and change.new is NodeState.LEFT
    assert m.tick(100.0) == []
    assert m.state("b") is NodeState.LEFT


def test_repeated_revision_is_not_news() -> None:
    m = member()
    m.set_link(True, 0.0)
    beat(m, "b", 7, 0.0)
    assert beat(m, "b", 7, 1.9) is None  # a watch restart replays the last value
    assert m.tick(1.0) == [] and m.tick(1.9) == []
    assert [c.new for c in m.tick(2.5)] == [NodeState.DOWN]
    assert m.statistics().stale_heartbeats == 1


def test_no_verdicts_while_link_down_and_grace_after_it_returns() -> None:
    m = member()
    m.set_link(True, 0.0)
    beat(m, "b", 1, 0.0)
    m.set_link(False, 0.5)
    assert m.tick(10.0) == []  # blind: no judgement
    assert m.state("b") is NodeState.UP
    m.set_link(True, 30.0)
    assert m.tick(30.1) == []  # 30 s since the last beat, but we were the ones cut off
    beat(m, "b", 2, 30.5)  # it was alive all along
    for t in (31.0, 31.5, 32.0, 32.4):
        assert m.tick(t) == []
    assert m.tick(32.6) != []  # and now really silent for DOWN_AFTER


def test_peer_that_died_during_our_outage_is_down_after_the_grace() -> None:
    m = member()
    m.set_link(True, 0.0)
    beat(m, "b", 1, 0.0)
    m.set_link(False, 0.5)
    m.set_link(True, 20.0)
    for t in (20.5, 21.0, 21.5, 21.9):
        assert m.tick(t) == []
    assert [c.new for c in m.tick(22.1)] == [NodeState.DOWN]


def test_a_frozen_process_does_not_judge_its_peers_on_waking() -> None:
    m = member()
    m.set_link(True, 0.0)
    beat(m, "b", 1, 0.0)
    m.tick(0.5)
    assert m.tick(15.0) == []  # SIGSTOP for 14.5 s: our view is stale, not theirs
    assert m.statistics().grace_restarts == 2
    beat(m, "b", 2, 15.1)
    assert m.tick(16.0) == []


def test_clock_skew_is_irrelevant_ages_are_local() -> None:
    m = member()
    m.set_link(True, 0.0)
    # The peer's own clock runs 5 s ahead / behind: its sent_at is ignored.
    for i, t in enumerate((0.0, 0.5, 1.0, 1.5, 2.0, 2.5)):
        beat(m, "fast", i + 1, t, sent_at=1e6 + t + 5)
        beat(m, "slow", i + 1, t, sent_at=1e6 + t - 5)
        assert m.tick(t) == []
    view = {v.node_id: v for v in m.view(2.5, 1e6 + 2.5)}
    assert view["fast"].state is NodeState.UP and view["slow"].state is NodeState.UP
    assert view["a"].is_self and view["fast"].last_seen == 1e6 + 2.5


def test_view_rows_and_statistics() -> None:
    m = member()
    m.set_own_summary({"version": "1", "health": 100, "sessions": 3, "upstreams": {}})
    m.set_link(True, 0.0)
    beat(m, "c", 1, 0.0, version="1", health=90)
    beat(m, "b", 1, 0.0)
    rows = [v.as_dict() for v in m.view(1.0, 1e6 + 1.0)]
    assert [r["node_id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["sessions"] == 3 and rows[2]["health"] == 90
    assert set(rows[0]) >= {"node_id", "state", "last_seen", "health", "sessions", "upstreams"}
    s = m.statistics()
    assert (s.up, s.down, s.left, s.link_up) == (2, 0, 0, True)
    assert "up=2" in repr(m)


def test_a_value_seen_only_in_the_replay_is_unknown_to_the_alert_rule() -> None:
    m = member()
    m.set_link(True, 0.0)
    beat(m, "b", 9, 0.0)  # what the bucket held when we started: maybe a dead node's last beat
    assert m.alert_peers(0.1) == [("b", "unknown", 0.1)]
    assert m.view(0.1, 1e6)[1].state is NodeState.UP  # shown as its last word said
    beat(m, "b", 10, 0.5)  # news: it is alive
    assert m.alert_peers(0.6)[0][1] == "up"


def test_claims_one_winner_per_transition() -> None:
    from wsgate.core.cluster import ClaimVerdict as V
    from wsgate.core.cluster import decide_claim

    firing = {"state": "firing", "episode": "c1.7", "node": "a"}
    resolved = {"state": "resolved", "episode": "c1.7", "node": "b"}
    assert decide_claim(None, "firing", "c1.7", "a") is V.WRITE
    assert decide_claim(firing, "firing", "c1.7", "a") is V.WON  # a repeat, or channel two
    assert decide_claim(firing, "firing", "c1.7", "b") is V.LOST  # sent elsewhere
    assert decide_claim(firing, "resolved", "c1.7", "b") is V.WRITE
    assert decide_claim(resolved, "resolved", "c1.7", "a") is V.LOST
    assert decide_claim(resolved, "firing", "c1.7", "a") is V.LOST  # stale: episode over
    assert decide_claim(resolved, "firing", "c2.3", "a") is V.WRITE  # a new down episode
    assert decide_claim(firing, "firing", "c2.3", "b") is V.WRITE  # resolve was never sent
    assert decide_claim(None, "resolved", "", "a") is V.LOST  # nobody was paged
    # A survivor restarted meanwhile knows no episode: it follows the record.
    assert decide_claim(firing, "resolved", "", "c") is V.WRITE
    assert decide_claim(firing, "firing", "", "c") is V.LOST
