"""Bitfinex trades channels: resumes are bridged, gaps announced, no trade twice."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.core.types import DialectName
from wsgate.dialects.base import ChannelData, FrameForm, Integrity, SubKey, TradeTape
from wsgate.dialects.bitfinex import OB_CHECKSUM, BitfinexDialect, BitfinexUpstream
from wsgate.dialects.bitfinex_trades import TradesState

D = BitfinexDialect()
UP = BitfinexUpstream(OB_CHECKSUM)
BTC = SubKey(DialectName.BITFINEX, "trades", "tBTCUSD", (), "trades:tBTCUSD")
USD = SubKey(DialectName.BITFINEX, "trades", "fUSD", (), "trades:fUSD")


def ev(text: str) -> ChannelData:
    e = UP.on_upstream_frame(text)
    assert isinstance(e, ChannelData)
    return e


def t(i: int) -> list[Any]:
    return [i, 1_700_000_000_000 + i, 0.5 if i % 2 else -0.25, 30000 + i]


def snap(ids: list[int], chan: int = 9) -> str:
    return json.dumps([chan, [t(i) for i in sorted(ids, reverse=True)]])


def upd(tag: str, i: int, chan: int = 9) -> str:
    return json.dumps([chan, tag, t(i)])


def out(frames: list[ChannelData], gw: int = 5) -> list[Any]:
    return [json.loads(D.rewrite(f, gw, FrameForm.PLAIN)) for f in frames]


def live(state: TradesState, *texts: str) -> list[Integrity]:
    return [state.apply(ev(x)) for x in texts]


def test_a_resumed_snapshot_that_reaches_back_is_bridged_with_the_missed_trades_once() -> None:
    s = TradesState(BTC, limit=30)
    assert isinstance(s, TradeTape)
    assert live(s, snap([1, 2, 3]), upd("te", 4), upd("tu", 4)) == [Integrity.OK] * 3
    s.reset()  # connection lost: a new upstream subscription is on its way
    assert live(s, snap([2, 3, 4, 5, 6], chan=44)) == [Integrity.BRIDGED]
    assert out(s.take_bridge().frames) == [
        [5, "te", t(5)],
        [5, "tu", t(5)],
        [5, "te", t(6)],
        [5, "tu", t(6)],
    ]
    assert s.take_bridge().frames == []
    # The new channel's live updates continue; a late te of a bridged trade is dropped.
    assert live(s, upd("te", 6, 44), upd("te", 7, 44)) == [Integrity.DUPLICATE, Integrity.OK]
    st_ = s.tape_statistics()
    assert (st_.bridged, st_.announced, st_.trades_bridged, st_.duplicates) == (1, 0, 2, 1)
    # A late joiner gets one snapshot holding everything, newest first.
    snap_ev = s.snapshot_event()
    assert snap_ev is not None
    assert [e[0] for e in json.loads(D.rewrite(snap_ev, 5, FrameForm.PLAIN))[1]] == list(
        range(7, 0, -1)
    )


def test_a_trade_whose_te_went_out_gets_its_tu_from_the_bridge() -> None:
    s = TradesState(BTC)
    live(s, snap([1]), upd("te", 2), upd("tu", 2), upd("te", 3))  # drop before tu 3
    s.reset()
    assert live(s, snap([1, 2, 3, 4])) == [Integrity.BRIDGED]
    assert out(s.take_bridge().frames) == [[5, "tu", t(3)], [5, "te", t(4)], [5, "tu", t(4)]]


def test_a_channel_without_tu_is_bridged_with_te_only_and_funding_uses_fte() -> None:
    s = TradesState(BTC)
    live(s, snap([1, 2]), upd("te", 3))
    s.reset()
    live(s, snap([2, 3, 4]))
    assert out(s.take_bridge().frames) == [[5, "te", t(4)]]
    f = TradesState(USD)
    live(f, snap([1]), upd("fte", 2), upd("ftu", 2))
    f.reset()
    live(f, snap([1, 2, 3]))
    assert out(f.take_bridge().frames) == [[5, "fte", t(3)], [5, "ftu", t(3)]]


def test_a_snapshot_that_does_not_reach_back_announces_the_gap() -> None:
    s = TradesState(BTC)
    live(s, snap([1, 2, 3]))
    s.reset()
    assert live(s, snap([10, 11, 12])) == [Integrity.ANNOUNCED]  # delivered as it is
    assert s.tape_statistics().announced == 1 and s.statistics().gaps == 1
    assert live(s, upd("te", 12), upd("te", 13)) == [Integrity.DUPLICATE, Integrity.OK]


def test_duplicates_and_first_snapshots() -> None:
    s = TradesState(BTC)
    # Before any snapshot and with an empty tape nothing can repeat: the snapshot goes out.
    assert live(s, snap([])) == [Integrity.OK]
    assert live(s, snap([1, 2])) == [Integrity.OK]
    assert live(s, upd("te", 2)) == [Integrity.DUPLICATE]  # it was in the snapshot
    assert live(s, upd("tu", 2), upd("tu", 2)) == [Integrity.OK, Integrity.DUPLICATE]
    # An empty snapshot after a resume: nothing missed, nothing to send.
    s.reset()
    assert live(s, snap([])) == [Integrity.BRIDGED] and s.take_bridge().frames == []


def test_a_make_before_break_snapshot_without_reset_is_bridged_too() -> None:
    s = TradesState(BTC)
    live(s, snap([1, 2]), upd("te", 3), upd("tu", 3))
    # The move's target confirms and sends its own snapshot; the old channel delivered 3.
    assert live(s, snap([1, 2, 3], chan=70)) == [Integrity.BRIDGED]
    assert s.take_bridge().frames == []


# ------------------------------------------------------------------ the drill, as a property


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 45), st.integers(0, 12)), min_size=1, max_size=6),
    st.integers(5, 30),
)
def test_sessions_never_see_a_trade_twice_and_miss_none_when_bridged(
    script: list[tuple[int, int]], exchange_depth: int
) -> None:
    """The exchange prints trades 1, 2, 3...; each trade goes out as te then tu. Between
    drops the session sees every frame; during a drop it sees nothing. After each drop the
    exchange sends a snapshot of its last ``exchange_depth`` trades."""
    s = TradesState(BTC, limit=30)
    seen: list[int] = []  # te ids the session received, in order

    def deliver(frames: list[ChannelData]) -> None:
        for f in frames:
            msg = json.loads(D.rewrite(f, 5, FrameForm.PLAIN))
            if msg[1] == "te":
                seen.append(msg[2][0])
            elif isinstance(msg[1], list):
                seen.extend(e[0] for e in reversed(msg[1]))

    def apply(text: str) -> None:
        frame = ev(text)
        verdict = s.apply(frame)
        if verdict is Integrity.BRIDGED:
            deliver(s.take_bridge().frames)
        elif verdict is not Integrity.DUPLICATE:
            deliver([frame])

    tape = 3
    apply(snap(list(range(max(1, tape - exchange_depth + 1), tape + 1))))
    gaps = 0
    for live_trades, missed in script:
        for _ in range(live_trades):
            tape += 1
            apply(upd("te", tape))
            apply(upd("tu", tape))
        tape += missed  # printed while the upstream was down
        s.reset()
        lo = max(1, tape - exchange_depth + 1)
        if lo > (seen[-1] if seen else 0) and missed:
            gaps += 1
        apply(snap(list(range(lo, tape + 1))))
    assert len(seen) == len(set(seen)), "a trade reached the session twice"
    assert seen == sorted(seen), "trades out of order"
    if gaps == 0:
        assert seen == list(range(seen[0], tape + 1)), "a bridged resume lost trades"
    assert s.tape_statistics().announced == gaps
