from wsgate.core.subscriptions import SubscriptionRegistry, SubState


def _reg() -> SubscriptionRegistry:
    return SubscriptionRegistry(pending_timeout=10.0, linger=30.0, stale_grace=1.0)


def test_two_sessions_share_one_subscription_with_stable_gateway_id() -> None:
    r = _reg()
    a, new_a = r.acquire("ticker:tBTCUSD", 1, 0.0, cadence=15.0)
    b, new_b = r.acquire("ticker:tBTCUSD", 2, 0.1, cadence=15.0)
    assert new_a and not new_b and a is b
    r.assign(a, "c1", 0.2)
    r.confirm(a, 17, 0.3)
    assert r.lookup("c1", 17) is a and a.state is SubState.CONFIRMED
    # moved to another connection: the gateway id does not change
    moved = r.connection_lost("c1", 1.0)
    assert moved == [a] and a.state is SubState.DESIRED and r.lookup("c1", 17) is None
    r.assign(a, "c2", 1.1)
    r.confirm(a, 99, 1.2)
    assert a.gw_id == 1 and r.lookup("c2", 99) is a


def test_linger_then_unsubscribe_and_rejoin_cancels_linger() -> None:
    r = _reg()
    s, _ = r.acquire("k", 1, 0.0, 15.0)
    r.assign(s, "c1", 0.0)
    r.confirm(s, 5, 0.0)
    r.release("k", 1, 10.0)
    assert s.state is SubState.LINGER and s.linger_until == 40.0
    assert not r.tick(39.0).unsubscribe
    s2, new = r.acquire("k", 2, 39.5, 15.0)
    assert s2 is s and not new and s.state is SubState.CONFIRMED
    r.release("k", 2, 50.0)
    acts = r.tick(80.0)
    assert acts.unsubscribe == [s]
    r.dropped(s)
    assert r.get("k") is None
    _, new = r.acquire("k", 3, 90.0, 15.0)
    assert new and r.get("k") is not None and r.get("k").gw_id == s.gw_id  # type: ignore[union-attr]


def test_pending_timeout_retries() -> None:
    r = _reg()
    s, _ = r.acquire("k", 1, 0.0, 15.0)
    r.assign(s, "c1", 0.0)
    assert not r.tick(9.9).retry
    acts = r.tick(10.0)
    assert acts.retry == [s] and s.state is SubState.DESIRED


def test_silent_channel_resubscribed_and_all_silent_connection_reconnected() -> None:
    r = _reg()
    subs = []
    for i, key in enumerate(("a", "b")):
        s, _ = r.acquire(key, 1, 0.0, 15.0)
        r.assign(s, "c1", 0.0)
        r.confirm(s, i, 0.0)
        subs.append(s)
    r.on_data(subs[0], 10.0)
    acts = r.tick(16.5)  # b silent since 0 (> 15 + 1); a heard at 10
    assert acts.resubscribe == [subs[1]] and not acts.reconnect
    acts = r.tick(40.0)  # both silent now
    assert set(acts.reconnect) == {"c1"}


def test_failure_names_sessions_and_unknown_never_silent() -> None:
    r = _reg()
    s, _ = r.acquire("bad", 1, 0.0, 15.0)
    r.acquire("bad", 2, 0.0, 15.0)
    r.assign(s, "c1", 0.0)
    assert r.fail(s, "symbol: invalid", 1.0) == {1, 2}
    assert r.get("bad") is None
    assert r.statistics().failures == 1


def test_unplaced_subscription_is_retried_each_tick() -> None:
    r = _reg()
    s, _ = r.acquire("k", 1, 0.0, 15.0)
    assert r.tick(1.0).retry == [s]
    assert r.load("c1") == 0
