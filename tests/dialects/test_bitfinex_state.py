"""Bitfinex late-joiner state: books with CRC32 checksum, trades, candles, ticker."""

from __future__ import annotations

import ctypes
import json
import zlib

from wsgate.dialects.base import (
    ChannelData,
    ChannelState,
    FrameForm,
    Integrity,
    SubKey,
    Subscribe,
)
from wsgate.dialects.bitfinex import OB_CHECKSUM, SEQ_ALL, BitfinexDialect, BitfinexUpstream
from wsgate.dialects.bitfinex_state import BookState, Num, dump_raw, load_raw

D = BitfinexDialect(trades_limit=3, candles_limit=2)
UP = BitfinexUpstream(OB_CHECKSUM)
NOW = 1_700_000_000.0


def key(**fields: object) -> SubKey:
    s = D.open_session("/")
    intents = s.on_client_message(json.dumps({"event": "subscribe", **fields}), NOW)
    assert isinstance(intents[0], Subscribe)
    return intents[0].key


def ev(text: str) -> ChannelData:
    e = UP.on_upstream_frame(text)
    assert isinstance(e, ChannelData)
    return e


def _late(state: ChannelState, gw: int) -> bytes:
    """The frame a late joiner gets: the state's snapshot event, rewritten as the fan-out does."""
    snap = state.snapshot_event()
    assert snap is not None
    return D.rewrite(snap, gw, FrameForm.PLAIN)


def feed(state: object, *frames: str) -> list[Integrity]:
    return [state.apply(ev(f)) for f in frames]  # type: ignore[attr-defined]


def signed_crc(text: str) -> int:
    """Independent of the code under test: ctypes wraps to signed 32 bits."""
    return ctypes.c_int32(zlib.crc32(text.encode())).value


def test_raw_json_keeps_number_tokens() -> None:
    doc = load_raw('[29999,0.00001,1e-8,-2.50,null,"x",{"a":1.0}]')
    assert all(isinstance(x, Num) for x in doc[:4])
    assert dump_raw(doc) == '[29999,0.00001,1e-8,-2.50,null,"x",{"a":1.0}]'


def test_p0_book_from_snapshot_and_updates_matches_independent_checksum() -> None:
    state = D.new_state(key(channel="book", symbol="tBTCUSD"))
    assert isinstance(state, BookState)
    snapshot = (
        "[17,[[29999,2,0.5],[29998,1,1e-8],[29997,4,3],"
        "[30000,1,-0.00001],[30001,3,-2],[30002,1,-1.25]]]"
    )
    updates = [
        "[17,[29998,0,1]]",  # delete bid 29998
        "[17,[29996,1,0.1]]",  # new bid
        "[17,[30001,0,-1]]",  # delete ask 30001
        "[17,[30000,2,-0.75]]",  # update ask 30000
        "[17,[30003,1,-4]]",  # new ask
    ]
    assert feed(state, snapshot, *updates) == [Integrity.OK] * 6
    # Hand-made final book, best first, written as the exchange wrote the numbers.
    bids = [("29999", "0.5"), ("29997", "3"), ("29996", "0.1")]
    asks = [("30000", "-0.75"), ("30002", "-1.25"), ("30003", "-4")]
    parts: list[str] = []
    for b, a in zip(bids, asks, strict=True):
        parts += [*b, *a]
    expected = signed_crc(":".join(parts))
    assert expected == signed_crc("29999:0.5:30000:-0.75:29997:3:30002:-1.25:29996:0.1:30003:-4")
    assert state.checksum() == expected
    assert state.apply(ev(f'[17,"cs",{expected}]')) is Integrity.OK
    assert state.apply(ev(f'[17,"cs",{expected + 1}]')) is Integrity.MISMATCH
    assert state.statistics().mismatches == 1 and state.statistics().depth == 6
    # Late joiner: snapshot in Bitfinex format, bids best first then asks best first.
    assert _late(state, 5) == (
        b"[5,[[29999,2,0.5],[29997,4,3],[29996,1,0.1],[30000,2,-0.75],[30002,1,-1.25],[30003,1,-4]]]"
    )


def test_checksum_interleaves_uneven_sides_and_uses_top_25_only() -> None:
    state = D.new_state(key(channel="book", symbol="tBTCUSD", len="100"))
    assert isinstance(state, BookState)
    bids = [f"[{1000 - i},1,{i + 1}]" for i in range(30)]
    asks = [f"[{2000 + i},1,-{i + 1}]" for i in range(2)]
    feed(state, "[3,[" + ",".join(bids + asks) + "]]")
    parts = ["1000", "1", "2000", "-1", "999", "2", "2001", "-2"]
    for i in range(2, 25):
        parts += [str(1000 - i), str(i + 1)]
    assert state.checksum() == signed_crc(":".join(parts))


def test_mismatch_after_a_lost_update() -> None:
    truth = D.new_state(key(channel="book", symbol="tETHUSD"))
    lossy = D.new_state(key(channel="book", symbol="tETHUSD"))
    snap = "[4,[[2000,1,1],[2001,1,-1]]]"
    feed(truth, snap, "[4,[1999,1,2]]")
    feed(lossy, snap)  # missed the update
    assert isinstance(truth, BookState)
    cs = f'[4,"cs",{truth.checksum()}]'
    assert truth.apply(ev(cs)) is Integrity.OK
    assert lossy.apply(ev(cs)) is Integrity.MISMATCH
    lossy.reset()
    assert lossy.snapshot_event() is None  # no snapshot until the resubscribe delivers one
    assert lossy.apply(ev(cs)) is Integrity.OK  # nothing to verify before the snapshot


def test_r0_book_uses_order_ids_and_price_zero_deletes() -> None:
    state = D.new_state(key(channel="book", symbol="tBTCUSD", prec="R0"))
    assert isinstance(state, BookState) and state.raw
    feed(
        state,
        "[8,[[111,29999,0.5],[112,29999,0.25],[113,29998,1],[211,30000,-0.3],[212,30001,-2]]]",
        "[8,[113,0,1]]",  # order 113 removed
        "[8,[114,29999.5,0.01]]",  # new best bid
        "[8,[212,30000.5,-2]]",  # order 212 moved
    )
    expected = signed_crc("114:0.01:211:-0.3:111:0.5:212:-2:112:0.25")
    assert state.checksum() == expected
    assert state.apply(ev(f'[8,"cs",{expected}]')) is Integrity.OK
    snap = state.snapshot_event()
    assert snap is not None
    assert D.rewrite(snap, 2, FrameForm.PLAIN) == (
        b"[2,[[114,29999.5,0.01],[111,29999,0.5],[112,29999,0.25],[211,30000,-0.3],[212,30000.5,-2]]]"
    )


def test_late_joiner_snapshot_renders_with_per_session_sequence() -> None:
    state = D.new_state(key(channel="ticker", symbol="tBTCUSD"))
    ticker = "[12,[29999,10.5,30000,9.25,-100,-0.0033,29999.5,1234.5678,30500,29000]]"
    assert state.snapshot_event() is None
    feed(state, ticker, '[12,"hb"]')
    snap = state.snapshot_event()
    assert snap is not None
    s = D.open_session("/")
    s.on_client_message(json.dumps({"event": "conf", "flags": SEQ_ALL}), NOW)
    assert s.render(snap, 77, NOW) == (
        b"[77,[29999,10.5,30000,9.25,-100,-0.0033,29999.5,1234.5678,30500,29000],1]"
    )
    assert _late(state, 77) == ticker.replace("[12,", "[77,").encode()


def test_trades_keep_last_n_newest_first() -> None:
    state = D.new_state(key(channel="trades", symbol="tBTCUSD"))
    feed(
        state,
        "[9,[[3,1003,0.1,29999],[2,1002,-0.2,29998],[1,1001,0.3,29997]]]",
        '[9,"te",[4,1004,0.00001,30000]]',
        '[9,"tu",[4,1004,0.00001,30000]]',
        '[9,"te",[5,1005,-1,30001]]',
    )
    assert _late(state, 1) == (b"[1,[[5,1005,-1,30001],[4,1004,0.00001,30000],[3,1003,0.1,29999]]]")
    assert state.statistics().depth == 3


def test_candles_keep_last_n_and_update_in_place() -> None:
    state = D.new_state(key(channel="candles", key="trade:1m:tBTCUSD"))
    feed(
        state,
        "[6,[[1700000120000,3,3.5,4,2,10],[1700000060000,2,3,3,2,5],[1700000000000,1,2,2,1,1]]]",
        "[6,[1700000120000,3,3.75,4,2,12.5]]",
    )
    assert _late(state, 2) == (b"[2,[[1700000120000,3,3.75,4,2,12.5],[1700000060000,2,3,3,2,5]]]")
    feed(state, "[6,[1700000180000,3.75,3.8,3.9,3.7,0.001]]")
    assert _late(state, 2) == (
        b"[2,[[1700000180000,3.75,3.8,3.9,3.7,0.001],[1700000120000,3,3.75,4,2,12.5]]]"
    )


def test_empty_book_snapshot_and_funding_book_without_model() -> None:
    state = D.new_state(key(channel="book", symbol="tBTCUSD"))
    feed(state, "[3,[]]")
    assert _late(state, 1) == b"[1,[]]"
    funding = D.new_state(key(channel="book", symbol="fUSD"))
    feed(funding, "[4,[[0.0002,2,1,-100]]]")
    assert funding.snapshot_event() is None
    assert "frames=1" in repr(funding)


def test_price_level_flipping_sides_is_not_kept_twice() -> None:
    state = D.new_state(key(channel="book", symbol="tBTCUSD"))
    assert isinstance(state, BookState)
    feed(state, "[3,[[100,1,1],[101,1,-1]]]", "[3,[101,2,0.5]]")
    assert state.checksum() == signed_crc("101:0.5:100:1")
    assert state.statistics().depth == 2


def test_a_hand_over_snapshot_on_a_live_book_becomes_the_updates_a_bot_applies() -> None:
    """The sessions' book plus the rebase updates is the new book: checksums keep verifying."""
    k = key(channel="book", symbol="tBTCUSD", prec="P0")
    live, fresh = BookState(k), BookState(k)
    feed(live, "[7,[[100,1,2],[99,2,3],[101,1,-1],[102,3,-4]]]", "[7,[99,0,1]]")
    # The new upstream subscription's view: 100 changed, 99 gone, 101 flipped to a bid,
    # 98 new, 102 unchanged.
    snap = "[9,[[100,2,5],[101,1,1],[98,1,1],[102,3,-4]]]"
    feed(fresh, snap)
    updates = live.rebase(ev(snap))
    assert updates is not None
    bodies = [u.text[u.start + 1 : u.end] for u in updates]
    assert bodies[0] == "[101,0,-1]"  # deletions first: 101 leaves the asks
    assert set(bodies[1:]) == {"[100,2,5]", "[101,1,1]", "[98,1,1]"}  # 102 unchanged: not sent
    assert live.checksum() == fresh.checksum()
    # A bot's book (the updates applied to what it had) verifies the exchange's checksum.
    bot = BookState(k)
    feed(bot, "[7,[[100,1,2],[101,1,-1],[102,3,-4]]]")
    for u in updates:
        bot.apply(u)
    assert bot.checksum() == fresh.checksum()
    # An update, or a book that never had a snapshot, is not rebased.
    assert live.rebase(ev("[9,[100,3,5]]")) is None
    assert BookState(k).rebase(ev(snap)) is None
    funding = BookState(key(channel="book", symbol="fUSD", prec="P0"))
    feed(funding, "[5,[[0.0002,2,3,100]]]")
    assert funding.rebase(ev("[5,[[0.0003,2,1,50]]]")) is None  # not modelled: a snapshot
