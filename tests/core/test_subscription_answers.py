"""The registry remembers who is owed an answer, and says when one is overdue."""

from __future__ import annotations

from wsgate.core.subscriptions import SubscriptionRegistry, SubState

KEY = "trades:tBTCUSD"


def test_waiting_until_confirmed_and_late_joiners_of_a_live_channel_never_wait() -> None:
    reg = SubscriptionRegistry(answer_timeout=5.0)
    sub, new = reg.acquire(KEY, 1, 0.0, 10.0)
    assert new and sub.waiting == {1: 0.0}
    reg.acquire(KEY, 2, 1.0, 10.0)
    assert sub.waiting == {1: 0.0, 2: 1.0}
    reg.assign(sub, "c1", 1.0)
    reg.confirm(sub, 17, 2.0)
    assert sub.waiting == {}  # the caller acks both
    reg.acquire(KEY, 3, 3.0, 10.0)
    assert sub.state is SubState.CONFIRMED and sub.waiting == {}


def test_unplaced_past_the_timeout_reports_only_the_overdue_sessions_once() -> None:
    reg = SubscriptionRegistry(answer_timeout=5.0)
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    reg.acquire(KEY, 2, 3.0, 10.0)
    assert reg.tick(4.9).unanswered == []
    acts = reg.tick(5.0)
    assert acts.unanswered == [(sub, [1])] and acts.retry == [sub]
    assert reg.tick(6.0).unanswered == []  # session 1 is the caller's to answer now
    assert reg.tick(8.0).unanswered == [(sub, [2])]


def test_take_waiting_and_release_forget_the_session() -> None:
    reg = SubscriptionRegistry()
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    reg.acquire(KEY, 2, 0.0, 10.0)
    reg.release(KEY, 2, 1.0)
    assert reg.take_waiting(sub) == [1] and sub.waiting == {}
    reg.release(KEY, 1, 1.0)
    assert reg.get(KEY) is None  # unplaced and unwanted: gone


def test_pending_sessions_are_not_timed_out_while_the_exchange_is_asked() -> None:
    # A subscribe sitting in the exchange's message budget is slow, not unanswerable.
    reg = SubscriptionRegistry(answer_timeout=5.0, pending_timeout=60.0)
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    reg.assign(sub, "c1", 0.0)
    assert reg.tick(30.0).unanswered == [] and sub.waiting == {1: 0.0}
