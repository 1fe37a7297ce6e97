"""Binance trade/aggTrade continuity: no id twice, jumps bridged from REST or announced."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.dialects.base import ChannelData, DataKind, FrameForm
from wsgate.dialects.binance import BinanceDialect, parse_stream
from wsgate.dialects.binance_trades import TradeAction, TradeContinuity, rest_path, trade_id

D = BinanceDialect()
TRADE = parse_stream("btcusdt@trade")
AGG = parse_stream("btcusdt@aggTrade")
assert TRADE is not None and AGG is not None


def frame(i: int, agg: bool = False) -> ChannelData:
    stream = "btcusdt@aggTrade" if agg else "btcusdt@trade"
    payload: dict[str, Any] = {"e": "aggTrade" if agg else "trade", "E": 1000 + i, "s": "BTCUSDT"}
    payload |= {"a": i, "f": i, "l": i} if agg else {"t": i}
    payload |= {"p": "1.00000000", "q": "2.00000000", "T": 1000 + i, "m": False, "M": True}
    head = '{"stream":"' + stream + '","data":'
    text = head + json.dumps(payload, separators=(",", ":")) + "}"
    return ChannelData(stream, DataKind.DATA, text, len(head), len(text) - 1)


def rest_trades(ids: range) -> str:
    return json.dumps(
        [
            {
                "id": i,
                "price": "1.00000000",
                "qty": "2.00000000",
                "quoteQty": "2.00000000",
                "time": 1000 + i,
                "isBuyerMaker": False,
                "isBestMatch": True,
            }
            for i in ids
        ]
    )


def rest_aggs(ids: range) -> str:
    return json.dumps(
        [
            {"a": i, "p": "1.00000000", "q": "2.00000000", "f": i, "l": i, "T": 1000 + i}
            | {"m": False, "M": True}
            for i in ids
        ]
    )


def ids_of(frames: list[ChannelData]) -> list[int]:
    out = []
    for f in frames:
        data = json.loads(D.rewrite(f, 0, FrameForm.PLAIN))
        out.append(data.get("t", data.get("a")))
    return out


def test_ids_in_order_pass_repeats_drop() -> None:
    c = TradeContinuity(TRADE)
    assert [c.observe(i, frame(i)) for i in (5, 6, 7)] == [TradeAction.DELIVER] * 3
    assert c.observe(7, frame(7)) is TradeAction.DROP
    assert c.observe(3, frame(3)) is TradeAction.DROP
    assert c.statistics().duplicates == 2 and c.last_id == 7


def test_a_jump_is_held_and_bridged_from_the_rest_trades() -> None:
    c = TradeContinuity(TRADE)
    c.observe(10, frame(10))
    assert c.observe(14, frame(14)) is TradeAction.FETCH  # 11..13 missed
    assert c.observe(15, frame(15)) is TradeAction.HOLD
    assert c.observe(14, frame(14)) is TradeAction.DROP  # an overlap repeat while held
    assert rest_path(TRADE, c.missed_after()) == "/trades?symbol=BTCUSDT&limit=1000"
    # /trades is the most recent: it holds older trades and the held ones too.
    result = c.bridge(rest_trades(range(5, 17)))
    assert result.bridged and (result.recovered, result.lost) == (3, 0)
    assert ids_of(result.frames) == [11, 12, 13, 14, 15]
    recovered = json.loads(D.rewrite(result.frames[0], 0, FrameForm.COMBINED))
    assert recovered == {
        "stream": "btcusdt@trade",
        "data": {
            "e": "trade",
            "E": 1011,
            "s": "BTCUSDT",
            "t": 11,
            "p": "1.00000000",
            "q": "2.00000000",
            "T": 1011,
            "m": False,
            "M": True,
        },
    }
    assert trade_id(TRADE, result.frames[0]) == 11
    assert c.last_id == 15 and not c.fetching
    assert c.observe(16, frame(16)) is TradeAction.DELIVER
    st_ = c.statistics()
    assert (st_.bridged, st_.announced, st_.trades_bridged, st_.lost) == (1, 0, 3, 0)


def test_agg_trades_fetch_from_the_missed_id() -> None:
    c = TradeContinuity(AGG)
    c.observe(100, frame(100, agg=True))
    assert c.observe(103, frame(103, agg=True)) is TradeAction.FETCH
    assert rest_path(AGG, c.missed_after()) == "/aggTrades?symbol=BTCUSDT&fromId=101&limit=1000"
    result = c.bridge(rest_aggs(range(101, 110)))
    assert result.bridged and ids_of(result.frames) == [101, 102, 103]


def test_rest_that_does_not_reach_back_announces_the_gap_with_what_it_has() -> None:
    c = TradeContinuity(TRADE)
    c.observe(10, frame(10))
    c.observe(50, frame(50))
    result = c.bridge(rest_trades(range(45, 52)))  # 11..44 are gone
    assert not result.bridged and (result.recovered, result.lost) == (5, 34)
    assert ids_of(result.frames) == [45, 46, 47, 48, 49, 50]
    assert c.statistics().announced == 1


def test_no_rest_bad_rest_and_too_many_held_give_up() -> None:
    c = TradeContinuity(TRADE, max_held=2)
    c.observe(1, frame(1))
    c.observe(5, frame(5))
    assert c.bridge(b"<html>busy</html>").frames and c.statistics().announced == 1
    c.observe(9, frame(9))
    c.observe(10, frame(10))
    c.observe(11, frame(11))
    assert c.over_limit
    result = c.give_up()
    assert ids_of(result.frames) == [9, 10, 11] and result.lost == 3
    assert c.last_id == 11


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 40), st.integers(0, 5)), max_size=6),
    st.integers(5, 40),
)
def test_sessions_get_each_trade_once_in_order(
    script: list[tuple[int, int, int]], tape: int
) -> None:
    """Live trades, then an outage of ``missed`` trades, then the new stream starts with an
    overlap of ``repeat`` trades; REST keeps the exchange's last ``tape`` trades."""
    c = TradeContinuity(TRADE)
    seen: list[int] = []
    n = 0

    def feed(i: int) -> None:
        act = c.observe(i, frame(i))
        if act is TradeAction.DELIVER:
            seen.append(i)
        elif act is TradeAction.FETCH:
            result = c.bridge(rest_trades(range(max(1, n - tape + 1), n + 1)))
            seen.extend(ids_of(result.frames))

    for live, missed, repeat in script:
        for _ in range(live):
            n += 1
            feed(n)
        n += missed
        for i in range(max(1, n - repeat + 1), n + 1):
            feed(i)  # the new stream's first frames (what the exchange prints next)
        n += 1
        feed(n)
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    st_ = c.statistics()
    if st_.announced == 0 and seen:
        assert seen == list(range(seen[0], n + 1))
