"""Lease decisions, renewal timing and follower sequence checks (pure, fake time)."""

from __future__ import annotations

from wsgate.core.leases import (
    LeaseRole,
    SeqTracker,
    SeqVerdict,
    decide_lease,
    key_token,
    renew_due,
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
