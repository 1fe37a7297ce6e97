"""Lease decisions, renewal timing and follower sequence checks (pure, fake time)."""

from __future__ import annotations

import random

from wsgate.core.leases import (
    LeaseRole,
    SeqTracker,
    SeqVerdict,
    TargetHealth,
    decide_lease,
    key_token,
    plan_spread,
    renew_due,
    route_health,
    stream_start,
    target_unfit,
)


def test_who_owns_a_key() -> None:
    assert decide_lease(None, "a", "i1", link_up=True).role is LeaseRole.TAKE
    assert decide_lease({}, "a", "i1", link_up=True).role is LeaseRole.TAKE
    mine = {"node": "a", "instance": "i1", "epoch": "i1"}
    v = decide_lease(mine, "a", "i1", link_up=True)
    assert (v.role, v.owner, v.epoch) == (LeaseRole.OWN, "a", "i1")
    v = decide_lease(mine, "b", "i2", link_up=True)
    assert (v.role, v.owner, v.epoch) == (LeaseRole.FOLLOW, "a", "i1")
    # our node id from an earlier life of this node: nobody serves it, take it over
    assert decide_lease(mine, "a", "i9", link_up=True).role is LeaseRole.TAKE
    # no link: subscribe ourselves, whatever the record said
    assert decide_lease(mine, "b", "i2", link_up=False).role is LeaseRole.LOCAL


def test_renewal_at_a_third_of_the_ttl() -> None:
    assert not renew_due(100.0, 100.9, 3.0)
    assert renew_due(100.0, 101.0, 3.0)
    assert renew_due(100.0, 105.0, 3.0)


def test_key_token_is_stable_safe_and_per_route() -> None:
    t = key_token("bfx", ("trades", "tBTCUSD"))
    assert t == key_token("bfx", ("trades", "tBTCUSD"))
    assert t != key_token("bfx2", ("trades", "tBTCUSD"))
    assert t.isalnum() and len(t) == 20


def test_sequence_next_stale_gap_and_new_epoch() -> None:
    s = SeqTracker()
    s.start("e1", 10)
    assert s.observe("e1", 11) is SeqVerdict.NEXT
    assert s.observe("e1", 11) is SeqVerdict.STALE  # a repeat is never delivered
    assert s.observe("e1", 9) is SeqVerdict.STALE  # older than the state we started from
    assert s.observe("e1", 13) is SeqVerdict.GAP  # 12 missing
    assert s.seq == 11  # a gap does not advance: the caller refetches the owner's state
    assert s.observe("e2", 1) is SeqVerdict.GAP  # a new owner
    assert (s.gaps, s.stale) == (2, 2)
    s.start("e2", 5)
    assert s.observe("e2", 6) is SeqVerdict.NEXT


# ---------------------------------------------------------------- hand-over links


def test_a_link_at_the_followers_position_switches_at_once() -> None:
    t = SeqTracker()
    t.start("old", 5)
    assert t.link("new", "old", 5) is SeqVerdict.NEXT
    assert (t.epoch, t.seq) == ("new", 0)
    assert t.observe("new", 1) is SeqVerdict.NEXT
    assert t.observe("old", 6) is SeqVerdict.STALE  # the old stream after its cut: never


def test_a_link_ahead_holds_the_new_epoch_until_the_cut_is_delivered() -> None:
    t = SeqTracker()
    t.start("old", 3)
    assert t.link("new", "old", 5) is SeqVerdict.HOLD
    assert t.observe("new", 1) is SeqVerdict.HOLD  # the caller keeps it
    assert t.observe("old", 4) is SeqVerdict.NEXT
    assert t.after_delivery() is False
    assert t.observe("old", 5) is SeqVerdict.NEXT
    assert t.after_delivery() is True  # switched: deliver the held frames now
    assert t.observe("new", 1) is SeqVerdict.NEXT
    assert t.linked == 1 and t.gaps == 0


def test_a_key_owned_again_in_one_epoch_never_reuses_a_sequence_number() -> None:
    # An owner published 1..31, fell back while its link was down (its sessions went on,
    # nothing published), then holds the same lease again with the same epoch. A follower
    # still on the first stream must see a gap, not 31 frames it takes for ones it has.
    t = SeqTracker()
    t.start("e", 0)
    for seq in range(1, 32):
        assert t.observe("e", seq) is SeqVerdict.NEXT
    start = stream_start(31)
    assert start == 32  # the state a fresh follower fetches is taken at 32
    assert t.observe("e", start + 1) is SeqVerdict.GAP  # announced by a fresh snapshot
    fresh = SeqTracker()
    fresh.start("e", start)
    assert fresh.observe("e", start + 1) is SeqVerdict.NEXT
    assert stream_start(None) == 0  # a key this epoch never owned starts at 0


def test_a_link_names_where_the_successors_stream_starts() -> None:
    # A successor owning the key again in its own epoch starts past its earlier numbers.
    t = SeqTracker()
    t.start("old", 5)
    assert t.link("new", "old", 5, 40) is SeqVerdict.NEXT
    assert (t.epoch, t.seq) == ("new", 40)
    assert t.observe("new", 41) is SeqVerdict.NEXT
    held = SeqTracker()
    held.start("old", 3)
    assert held.link("new", "old", 5, 40) is SeqVerdict.HOLD
    assert held.observe("old", 4) is SeqVerdict.NEXT and not held.after_delivery()
    assert held.observe("old", 5) is SeqVerdict.NEXT and held.after_delivery()
    assert held.observe("new", 41) is SeqVerdict.NEXT


def test_a_link_behind_the_follower_or_without_a_cut_is_a_gap() -> None:
    t = SeqTracker()
    t.start("old", 7)
    assert t.link("new", "old", 5) is SeqVerdict.GAP  # we have frames its stream lacks
    t.start("old", 7)
    assert t.link("new", "old", -1) is SeqVerdict.GAP  # the old owner could not cut
    t.start("old", 7)
    assert t.link("new", "other", 7) is SeqVerdict.GAP  # continues a stream we never had


def test_a_frame_past_the_cut_of_the_old_epoch_is_a_gap() -> None:
    t = SeqTracker()
    t.start("old", 1)
    assert t.link("new", "old", 2) is SeqVerdict.HOLD
    assert t.observe("old", 3) is SeqVerdict.GAP


# ---------------------------------------------------------------- spread


def test_spread_moves_one_key_per_round_to_the_least_loaded_follower() -> None:
    owned = {f"k{i}": ("b", "c") for i in range(10)}
    moves = plan_spread("a", owned, {"a": 10, "b": 0, "c": 0}, 100.0, last_round=None, moved_at={})
    assert [(m.key, m.target) for m in moves] == [("k0", "b")]
    assert "a owns 10 keys, b 0" in moves[0].why
    # Within the interval: nothing (bounded move rate).
    assert plan_spread("a", owned, {"b": 1, "c": 0}, 100.5, last_round=100.0, moved_at={}) == []


def test_spread_converges_and_then_holds_still() -> None:
    loads = {"a": 10, "b": 0, "c": 0}
    owned = {f"k{i}": ("b", "c") for i in range(10)}
    now, last, moved = 0.0, None, {}
    for _ in range(20):
        mine = {k: v for k, v in owned.items()}
        loads["a"] = len(mine)
        moves = plan_spread("a", mine, dict(loads), now, last_round=last, moved_at=moved)
        for m in moves:
            del owned[m.key]
            loads[m.target] += 1
            moved[m.key] = now
            last = now
        now += 1.0
    loads["a"] = len(owned)
    assert sorted(loads.values()) == [3, 3, 4]  # within the slack of the mean; no flapping
    assert plan_spread("a", owned, dict(loads), now, last_round=last, moved_at=moved) == []


def test_spread_only_to_live_followers_and_never_a_key_that_just_moved() -> None:
    owned = {"k1": ("b",), "k2": ("gone",), "k3": ()}
    loads = {"a": 6, "b": 0}
    moves = plan_spread("a", owned, loads, 10.0, last_round=None, moved_at={"k1": 5.0})
    assert moves == []  # k1 moved 5 s ago (hold), k2's follower is not alive, k3 has none
    moves = plan_spread("a", owned, loads, 100.0, last_round=None, moved_at={"k1": 5.0})
    assert [(m.key, m.target) for m in moves] == [("k1", "b")]


def test_spread_never_leaves_the_target_above_the_source() -> None:
    owned = {"k1": ("b",), "k2": ("b",), "k3": ("b",), "k4": ("b",)}
    assert (
        plan_spread("a", owned, {"a": 4, "b": 3, "c": 0}, 0.0, last_round=None, moved_at={}) == []
    )


def test_spread_counts_and_targets_only_the_live_nodes() -> None:
    # d was killed (kill -9): it still follows every key and owns nothing.
    owned = {f"k{i}": ("c", "d") for i in range(4)}
    loads = {"a": 4, "c": 1, "d": 0}
    moves = plan_spread("a", owned, loads, 0.0, last_round=None, moved_at={})
    assert [m.target for m in moves] == ["d"]  # without the membership's word: the dead one
    live = frozenset({"a", "c"})
    moves = plan_spread("a", owned, loads, 0.0, last_round=None, moved_at={}, live=live)
    assert [(m.key, m.target) for m in moves] == [("k0", "c")]
    assert "cluster mean 2.5" in moves[0].why  # (4 + 1) / 2: d lowers no mean
    # Two live nodes at 3 and 2: within the mean + 1 once d does not count; it would at 0.
    three = {f"k{i}": ("c", "d") for i in range(3)}
    loads = {"a": 3, "c": 2, "d": 0}
    moves = plan_spread("a", three, loads, 0.0, last_round=None, moved_at={})
    assert [m.target for m in moves] == ["d"]
    assert plan_spread("a", three, loads, 0.0, last_round=None, moved_at={}, live=live) == []


def test_a_node_with_bad_upstream_health_not_up_or_near_its_connect_budget_is_no_target() -> None:
    fine = {"state": "up", "route_health": {"bfx": 96.0}, "connect_budget": {"bfx": 0.2}}
    assert target_unfit(fine, "bfx") is None
    assert target_unfit(None, "bfx") is None  # nothing heard beyond its being up
    # No upstream connection on the route (it follows every key): no figure, room to spare.
    assert target_unfit({"state": "up", "route_health": {"okx": 10.0}}, "bfx") is None
    assert route_health({"route_health": {"okx": 10.0}}, "bfx") == 100.0
    sick = {**fine, "route_health": {"bfx": 31.0}}
    assert target_unfit(sick, "bfx") == "upstream health 31 on bfx (below 50)"
    assert target_unfit(sick, "okx") is None  # judged per route
    assert target_unfit({**fine, "state": "left"}, "bfx") == "state left"
    spent = {**fine, "connect_budget": {"bfx": 0.85}}
    assert target_unfit(spent, "bfx") == "connect budget 85% used"
    assert target_unfit({**fine, "route_health": {"bfx": "bad"}}, "bfx") is None  # not a figure


def test_an_unfit_node_stays_out_until_it_looked_fit_for_the_recovery_time() -> None:
    targets = TargetHealth()  # recover: 30 s
    targets.observe("b", "upstream health 31 on bfx (below 50)", 0.0)
    targets.observe("c", None, 0.0)
    assert targets.unfit(0.0) == {"b": "upstream health 31 on bfx (below 50)"}
    # Its health went back above the threshold at 5 s and dips once more at 20 s.
    targets.observe("b", None, 5.0)
    assert "b" in targets.unfit(29.0)
    targets.observe("b", "upstream health 49 on bfx (below 50)", 20.0)
    assert "b" in targets.unfit(45.0)
    assert targets.unfit(50.0) == {}  # 30 s since it last looked unfit


def test_spread_skips_unfit_followers_and_prefers_the_healthiest_of_the_least_loaded() -> None:
    owned = {f"k{i}": ("b", "c", "d") for i in range(6)}
    loads = {"a": 6, "b": 0, "c": 0, "d": 1}

    def plan(
        unfit: dict[str, str] | None = None, health: dict[str, float] | None = None
    ) -> list[tuple[str, str]]:
        moves = plan_spread(
            "a", owned, loads, 0.0, last_round=None, moved_at={}, unfit=unfit, health=health
        )
        return [(m.key, m.target) for m in moves]

    assert plan() == [("k0", "b")]  # least loaded, ties by node id
    assert plan(unfit={"b": "upstream health 31 on bfx (below 50)"}) == [("k0", "c")]
    assert plan(health={"b": 70.0, "c": 99.0}) == [("k0", "c")]  # equal load: healthier
    # Every follower unfit: nothing moves (spreading is never urgent), though a is over.
    assert plan(unfit={"b": "x", "c": "x", "d": "x"}) == []
    # Unfit nodes still count in the mean: a at 6 with b, c, d at 0, 0, 1 is over it.
    assert plan(unfit={"b": "x", "c": "x"}) == [("k0", "d")]


def test_spread_draws_among_equal_targets_with_the_seeded_rng() -> None:
    owned = {f"k{i}": ("b", "c", "d", "e") for i in range(9)}
    loads = {"a": 9, "b": 0, "c": 0, "d": 0, "e": 0}

    def target(seed: int) -> str:
        rng = random.Random(seed)
        return plan_spread("a", owned, loads, 0.0, last_round=None, moved_at={}, rng=rng)[0].target

    picks = {target(seed) for seed in range(20)}
    assert picks == {"b", "c", "d", "e"}  # owners spreading at once do not all pick b
    assert target(7) == target(7)  # the same seed decides the same
