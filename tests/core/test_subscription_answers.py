"""The registry remembers who is owed an answer, and says when one is overdue."""

from __future__ import annotations

import pytest

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


def test_a_queued_subscribe_is_not_overdue_its_clock_starts_when_written() -> None:
    reg = SubscriptionRegistry(pending_timeout=10.0)
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    reg.assign(sub, "c1", 0.0, written=False)
    assert not reg.tick(60.0)  # still behind the connection's message budget
    reg.written(sub, "c1", sub.attempts - 1, 61.0)  # an older attempt's frame: ignored
    assert not sub.written
    reg.written(sub, "c1", sub.attempts, 61.0)
    assert not reg.tick(70.9).retry
    assert reg.tick(71.0).retry == [sub]


def test_the_waiting_sessions_are_answered_when_the_resend_times_out_too() -> None:
    reg = SubscriptionRegistry(pending_timeout=10.0, answer_timeout=15.0)
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    reg.assign(sub, "c1", 0.0)
    acts = reg.tick(10.0)
    assert acts.retry == [sub] and acts.unanswered == []  # first timeout: resend
    reg.assign(sub, "c1", 10.0)
    acts = reg.tick(20.0)
    assert acts.unanswered == [(sub, [1])] and sub.waiting == {}
    # A confirmation starts the count over.
    reg.acquire(KEY, 2, 20.0, 10.0)
    reg.assign(sub, "c1", 20.0)
    reg.confirm(sub, 5, 21.0)
    assert sub.timeouts == 0


@pytest.mark.parametrize("resends", [0, 1, 2])
def test_the_resend_budget_decides_which_timeout_answers_the_sessions(resends: int) -> None:
    """``resends`` more sends after the first; the timeout of the last one answers."""
    reg = SubscriptionRegistry(pending_timeout=10.0, resends=resends, answer_timeout=1000.0)
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    now = 0.0
    for sent in range(resends + 1):
        reg.assign(sub, "c1", now)
        assert not reg.tick(now + 9.9)  # not yet overdue
        now += 10.0
        acts = reg.tick(now)
        assert acts.retry == [sub]  # placed again either way: acked sessions keep the channel
        last = sent == resends
        assert acts.unanswered == ([(sub, [1])] if last else []), sent
    assert sub.waiting == {} and sub.timeouts == resends + 1


def test_a_subscribe_that_could_not_be_queued_is_timed_from_the_drop() -> None:
    reg = SubscriptionRegistry(pending_timeout=10.0)
    sub, _ = reg.acquire(KEY, 1, 0.0, 10.0)
    reg.assign(sub, "c1", 0.0, written=False)
    reg.send_dropped(sub, "c1", sub.attempts - 1, 5.0)  # an older attempt: ignored
    assert not reg.tick(100.0)
    reg.send_dropped(sub, "c1", sub.attempts, 100.0)
    assert not reg.tick(109.9).retry
    acts = reg.tick(110.0)
    assert acts.retry == [sub] and acts.unanswered == []  # counted as sent: this is the resend
