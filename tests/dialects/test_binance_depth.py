"""DepthBook: the pure continuity state machine behind Binance depth re-homing."""

from __future__ import annotations

from wsgate.dialects.binance_depth import (
    Action,
    DepthBook,
    DepthEvent,
    Phase,
    Snapshot,
    SnapshotOutcome,
    parse_event,
    parse_snapshot,
    render_event,
)


def ev(
    first: int, last: int, bids: dict[str, str] | None = None, asks: dict[str, str] | None = None
) -> DepthEvent:
    return DepthEvent(
        first,
        last,
        1000 + last,
        "BTCUSDT",
        tuple((bids or {}).items()),
        tuple((asks or {}).items()),
    )


def snap(last: int, bids: dict[str, str], asks: dict[str, str]) -> Snapshot:
    return Snapshot(last, tuple(bids.items()), tuple(asks.items()))


def book_of(b: DepthBook) -> tuple[dict[str, str], dict[str, str]]:
    bids, asks = b.book()
    return dict(bids), dict(asks)


def apply(book: tuple[dict[str, str], dict[str, str]], e: DepthEvent) -> None:
    for side, levels in ((book[0], e.bids), (book[1], e.asks)):
        for p, q in levels:
            if float(q) == 0:
                side.pop(p, None)
            else:
                side[p] = q


def seeded() -> DepthBook:
    b = DepthBook("btcusdt@depth@100ms")
    assert b.observe(ev(101, 103, {"10": "1"})) is Action.DELIVER
    assert b.phase is Phase.SEEDING and b.wants_snapshot
    assert b.observe(ev(104, 105, {"9": "2"})) is Action.DELIVER
    # lastUpdateId 102 falls inside the first event: it applies, the documented way.
    out = b.on_snapshot(snap(102, {"10": "5", "8": "1"}, {"11": "1", "12": "3"}))
    assert out is SnapshotOutcome.DONE and b.statistics().phase is Phase.LIVE
    assert b.delivered_u == 105
    assert book_of(b) == ({"10": "1", "9": "2", "8": "1"}, {"11": "1", "12": "3"})
    return b


def test_seed_from_snapshot_and_events() -> None:
    b = seeded()
    assert b.observe(ev(106, 106, {"8": "0"})) is Action.DELIVER
    assert book_of(b)[0] == {"10": "1", "9": "2"}
    assert b.statistics().seeds == 1


def test_snapshot_too_old_is_refetched_and_a_newer_one_waits_for_the_stream() -> None:
    b = DepthBook("s")
    b.observe(ev(101, 103))
    assert b.on_snapshot(snap(90, {}, {})) is SnapshotOutcome.REFETCH
    assert b.wants_snapshot
    assert b.on_snapshot(snap(104, {"1": "1"}, {})) is SnapshotOutcome.WAITING
    assert not b.wants_snapshot
    # The sessions reach exactly lastUpdateId: the snapshot is their book.
    assert b.observe(ev(104, 104)) is Action.DELIVER and b.phase is Phase.LIVE
    assert b.observe(ev(105, 106, {"2": "1"})) is Action.DELIVER
    assert b.phase is Phase.LIVE and book_of(b) == ({"1": "1", "2": "1"}, {})


def test_duplicates_dropped_and_straddling_events_rewritten() -> None:
    b = seeded()
    assert b.observe(ev(104, 105)) is Action.DROP
    assert b.observe(ev(104, 107, {"7": "1"})) is Action.REWRITE
    assert b.rewrite_u == 106 and b.delivered_u == 107
    assert "7" in book_of(b)[0]


def test_gap_is_held_and_bridged_by_one_synthetic_event() -> None:
    b = seeded()
    sessions = book_of(b)  # what every bot holds at u=105
    assert b.observe(ev(150, 152, {"10": "4"})) is Action.HOLD
    assert b.phase is Phase.RESYNC and b.wants_snapshot
    assert b.observe(ev(153, 153, {"6": "1"})) is Action.HOLD
    # Snapshot at 151 (inside the first held event), then the held events apply.
    out = b.on_snapshot(snap(151, {"10": "9", "9": "2"}, {"12": "3", "13": "1"}))
    assert out is SnapshotOutcome.DONE
    bridge = b.take_bridge()
    assert bridge is not None and b.take_bridge() is None
    assert (bridge.first, bridge.last) == (106, 153)
    apply(sessions, bridge)
    assert sessions == book_of(b) == ({"10": "4", "9": "2", "6": "1"}, {"12": "3", "13": "1"})
    assert ("8", "0") in bridge.bids and ("11", "0") in bridge.asks  # removed levels
    assert b.observe(ev(154, 154)) is Action.DELIVER
    # The synthetic frame is a Binance depthUpdate that parses back to itself.
    assert parse_event(render_event(bridge)) == bridge


def test_a_snapshot_past_the_held_events_bridges_at_once_and_the_stream_follows_it() -> None:
    # A quiet book may push nothing for minutes after the gap: the snapshot alone bridges.
    b = seeded()
    b.observe(ev(150, 152))
    assert b.on_snapshot(snap(160, {"1": "1"}, {})) is SnapshotOutcome.DONE
    bridge = b.take_bridge()
    assert bridge is not None and (bridge.first, bridge.last) == (106, 160)
    assert b.observe(ev(153, 158)) is Action.DROP  # in the snapshot already
    assert b.observe(ev(159, 161, {"2": "2"})) is Action.REWRITE  # straddles it: U = 161
    assert b.rewrite_u == 161 and b.delivered_u == 161


def test_a_snapshot_older_than_the_held_events_is_fetched_again() -> None:
    b = seeded()
    b.observe(ev(150, 152))
    assert b.on_snapshot(snap(100, {"1": "1"}, {})) is SnapshotOutcome.REFETCH  # too old
    b.observe(ev(153, 158))
    assert b.on_snapshot(snap(158, {"1": "1"}, {})) is SnapshotOutcome.DONE


def test_truncated_snapshot_does_not_remove_levels_beyond_its_range() -> None:
    b = DepthBook("s", snapshot_limit=2)
    b.observe(ev(1, 1))
    b.on_snapshot(snap(1, {"10": "1", "9": "1", "5": "1"}, {"11": "1"}))
    b.observe(ev(10, 10))
    b.on_snapshot(snap(9, {"10": "2", "9": "1"}, {"11": "1"}))  # 2 bids: truncated side
    bridge = b.take_bridge()
    assert bridge is not None
    assert dict(bridge.bids) == {"10": "2"}  # "5" lies below the snapshot: not removed


def test_gap_before_seeding_and_held_overflow_fail() -> None:
    b = DepthBook("s")
    b.observe(ev(1, 2))
    assert b.observe(ev(5, 6)) is Action.FAIL
    assert b.phase is Phase.UNSEEDED and b.delivered_u is None
    b2 = DepthBook("s", max_held=2)
    b2.observe(ev(1, 1))
    b2.on_snapshot(snap(1, {}, {}))
    assert b2.observe(ev(5, 5)) is Action.HOLD
    assert b2.observe(ev(6, 6)) is Action.HOLD
    assert b2.observe(ev(7, 7)) is Action.FAIL
    assert b2.statistics().failures == 1


def test_parsers_reject_what_is_not_depth() -> None:
    assert parse_event('{"e":"trade"}') is None
    assert parse_event("not json") is None
    assert parse_snapshot(b'{"lastUpdateId":5,"bids":[["1.0","2"]],"asks":[]}').last_update_id == 5
    for bad in (b"[]", b'{"bids":[]}', b"garbage"):
        try:
            parse_snapshot(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
