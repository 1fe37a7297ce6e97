"""Bybit v5 codec: acks per request and category, the topic locator, the book's u rule."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dialects.jsonfmt import formatted, json_values
from wsgate.dialects.base import (
    Auth,
    ChannelData,
    DataKind,
    Error,
    Integrity,
    Pong,
    Reply,
    Result,
    Subscribe,
    SubscribeFailed,
    Unsubscribe,
)
from wsgate.dialects.bybit import BybitDialect, BybitState, BybitUpstream, topic_key
from wsgate.errors import InvalidPath

D = BybitDialect()


def key(category: str, topic: str) -> Any:
    k = topic_key(category, topic)
    assert k is not None
    return k


def test_topics_categories_and_paths() -> None:
    assert key("spot", "orderbook.50.BTCUSDT").param("depth") == "50"
    assert topic_key("spot", "orderbook.7.BTCUSDT") is None
    assert topic_key("linear", "kline.1.BTCUSDT") is None
    assert key("spot", "tickers.BTCUSDT") != key("linear", "tickers.BTCUSDT")
    assert D.upstream_suffix(key("spot", "publicTrade.BTCUSDT")) == "/v5/public/spot"
    assert D.upstream_suffix(key("linear", "publicTrade.BTCUSDT")) == "/v5/public/linear"
    assert D.open_session("/v5/private").on_open(0) == [Auth("", "/v5/private")]
    with pytest.raises(InvalidPath):
        D.open_session("/v5/public/option")


@pytest.mark.parametrize(("category", "ok_msg"), [("spot", "subscribe"), ("linear", "")])
def test_one_ack_per_request_with_the_bots_req_id(category: str, ok_msg: str) -> None:
    s = D.open_session(f"/v5/public/{category}")
    out = s.on_client_message(
        '{"req_id":"abc","op":"subscribe","args":["orderbook.50.BTCUSDT","publicTrade.BTCUSDT"]}',
        0,
    )
    subs = [i for i in out if isinstance(i, Subscribe)]
    assert len(subs) == 2
    assert s.render_subscribed(subs[0], 0) is None  # the request waits for its last topic
    ack = json.loads(s.render_subscribed(subs[1], 0) or "")
    assert ack == {
        "success": True,
        "ret_msg": ok_msg,
        "conn_id": s.conn_id,
        "req_id": "abc",
        "op": "subscribe",
    }
    pong = json.loads(s.on_client_message('{"op":"ping"}', 1)[0].frame)  # type: ignore[union-attr]
    assert pong["ret_msg"] == "pong" and pong["op"] == "ping"
    assert ("req_id" in pong) is (category == "linear")  # linear writes "req_id":""
    un = s.on_client_message('{"req_id":"u","op":"unsubscribe","args":["publicTrade.BTCUSDT"]}', 2)
    assert isinstance(un[0], Reply) and json.loads(un[0].frame)["req_id"] == "u"
    assert isinstance(un[1], Unsubscribe)


def test_spot_takes_ten_args_a_request_and_bad_topics_fail_the_request() -> None:
    s = D.open_session("/v5/public/spot")
    args = json.dumps([f"tickers.A{i}USDT" for i in range(11)])
    err = s.on_client_message(f'{{"req_id":"r","op":"subscribe","args":{args}}}', 0)[0]
    assert isinstance(err, Error) and "args size >10" in json.loads(err.frame)["ret_msg"]
    err = s.on_client_message('{"req_id":"q","op":"subscribe","args":["orderbook.3.X"]}', 0)[0]
    assert isinstance(err, Error)
    assert json.loads(err.frame)["ret_msg"] == "error:handler not found,topic:orderbook.3.X"


def test_a_failed_topic_fails_its_request_once() -> None:
    s = D.open_session("/v5/public/linear")
    out = s.on_client_message(
        '{"req_id":"f","op":"subscribe","args":["tickers.AAAUSDT","tickers.BBBUSDT"]}', 0
    )
    subs = [i for i in out if isinstance(i, Subscribe)]
    msg = json.loads(s.render_subscribe_error(subs[0], 10001, "handler not found") or "")
    assert msg["success"] is False and msg["req_id"] == "f"
    assert s.render_subscribed(subs[1], 0) is None  # that request was already answered


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    topic=st.sampled_from(["orderbook.50.BTCUSDT", "publicTrade.ETHUSDT", "tickers.BTCUSDT"]),
    payload=st.dictionaries(st.text(max_size=4), json_values, max_size=4),
)
def test_locator_over_any_valid_formatting(
    data: st.DataObject, topic: str, payload: dict[str, Any]
) -> None:
    body = {"topic": topic, "type": "delta", "ts": 1672304486868, "data": payload}
    frame = data.draw(formatted(body))
    ev = BybitUpstream().on_upstream_frame(frame)
    assert isinstance(ev, ChannelData), ev
    assert ev.channel == topic
    sliced = ev.text[ev.start : ev.end]
    assert sliced in frame and json.loads(sliced) == body


def test_upstream_acks_by_req_id_coalescing_and_pongs() -> None:
    up = BybitUpstream()
    first = up.subscribe_frame(key("spot", "tickers.A0USDT"), 1)
    queue = deque(up.subscribe_frame(key("spot", f"tickers.A{i}USDT"), i + 1) for i in range(1, 12))
    merged = json.loads(up.coalesce(first, queue))
    assert len(merged["args"]) == 10 and len(queue) == 2  # spot: 10 args a request
    ack = up.on_upstream_frame(
        '{"success":true,"ret_msg":"subscribe","conn_id":"c","req_id":"1","op":"subscribe"}'
    )
    assert isinstance(ack, Result) and len(ack.subscribed) == 10
    up.subscribe_frame(key("linear", "tickers.ZZZUSDT"), 40)
    fail = up.on_upstream_frame(
        '{"success":false,"ret_msg":"error:handler not found,topic:tickers.ZZZUSDT",'
        '"conn_id":"c","req_id":"40","op":"subscribe"}'
    )
    assert isinstance(fail, SubscribeFailed) and fail.key == key("linear", "tickers.ZZZUSDT")
    assert up.ping_frame(7) == '{"req_id":"p7","op":"ping"}'
    pong = '{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"p7","op":"ping"}'
    assert up.on_upstream_frame(pong) == Pong(7, None)
    assert up.on_upstream_frame('{"success":true,"ret_msg":"pong","req_id":"","op":"ping"}') == (
        Pong(7, None)  # linear may not echo it: the last ping
    )


def test_a_refused_merged_request_fails_the_named_topic_and_resends_the_others() -> None:
    up = BybitUpstream()
    good, bad = key("spot", "publicTrade.BTCUSDT"), key("spot", "publicTrade.BTCUSDTX")
    first = up.subscribe_frame(good, 1)
    up.coalesce(first, deque([up.subscribe_frame(bad, 2)]))
    fail = up.on_upstream_frame(
        '{"success":false,"ret_msg":"error:handler not found,topic:publicTrade.BTCUSDTX",'
        '"conn_id":"c","req_id":"1","op":"subscribe"}'
    )
    assert isinstance(fail, SubscribeFailed)
    assert fail.key == bad and fail.retry == (good,)  # BTCUSDT is a prefix, not the name
    up.subscribe_frame(good, 3)
    again = up.on_upstream_frame(
        '{"success":false,"ret_msg":"error:already subscribed,topic:publicTrade.BTCUSDT",'
        '"conn_id":"c","req_id":"3","op":"subscribe"}'
    )
    assert isinstance(again, Result) and [s.key for s in again.subscribed] == [good]


def _book(kind: str, u: int, bids: list[list[str]] | None = None) -> ChannelData:
    body = {
        "topic": "orderbook.50.BTCUSDT",
        "type": kind,
        "ts": 1,
        "data": {"s": "BTCUSDT", "b": bids or [], "a": [], "u": u, "seq": u * 7},
    }
    text = json.dumps(body)
    return ChannelData("orderbook.50.BTCUSDT", DataKind.DATA, text, 0, len(text))


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    us=st.lists(st.integers(2, 10**9), min_size=2, max_size=30, unique=True).map(sorted),
)
def test_u_must_move_forward_and_a_snapshot_or_u1_resets(
    data: st.DataObject, us: list[int]
) -> None:
    state = BybitState(key("linear", "orderbook.50.BTCUSDT"))
    assert state.apply(_book("delta", us[0])) is Integrity.OK  # before any snapshot: relayed
    assert state.apply(_book("snapshot", us[0], [["100", "1"]])) is Integrity.OK
    for u in us[1:]:
        assert state.apply(_book("delta", u)) is Integrity.OK  # jumps are allowed
    stale = data.draw(st.sampled_from(us))
    assert state.apply(_book("delta", stale)) is Integrity.MISMATCH  # not forward: resubscribe
    assert state.apply(_book("delta", 1, [["99", "2"]])) is Integrity.OK  # engine restart
    snap = state.snapshot_event()
    assert snap is not None
    msg = json.loads(snap.text)
    assert msg["type"] == "snapshot" and msg["data"]["u"] == 1 and msg["data"]["b"] == [["99", "2"]]


def test_linear_ticker_deltas_merge_into_a_full_late_joiner_snapshot() -> None:
    state = BybitState(key("linear", "tickers.BTCUSDT"))

    def frame(kind: str, data: dict[str, str]) -> ChannelData:
        text = json.dumps(
            {"topic": "tickers.BTCUSDT", "type": kind, "data": data, "cs": 1, "ts": 2}
        )
        return ChannelData("tickers.BTCUSDT", DataKind.DATA, text, 0, len(text))

    state.apply(frame("snapshot", {"symbol": "BTCUSDT", "lastPrice": "1", "bid1Price": "0.9"}))
    state.apply(frame("delta", {"symbol": "BTCUSDT", "bid1Price": "0.95"}))
    snap = state.snapshot_event()
    assert snap is not None
    assert json.loads(snap.text)["data"] == {
        "symbol": "BTCUSDT",
        "lastPrice": "1",
        "bid1Price": "0.95",
    }


def test_dedup_ids() -> None:
    assert D.dedup_id(_book("delta", 55)) == 55
    trade = '{"topic":"publicTrade.BTCUSDT","type":"snapshot","data":[{"i":"2290000000007764263"}]}'
    ev = BybitUpstream().on_upstream_frame(trade)
    assert isinstance(ev, ChannelData) and D.dedup_id(ev) == 2290000000007764263


def test_a_hand_over_snapshot_continues_the_bots_book_as_one_delta() -> None:
    """u is the book's on every connection: a newer snapshot becomes one delta with its u
    (levels gone as size "0"); an older one is dropped and the deltas up to the bots' u
    are duplicates, then the stream goes on; u = 1 is an engine restart: a real reset."""
    state = BybitState(key("linear", "orderbook.50.BTCUSDT"))
    state.apply(_book("snapshot", 10, [["100", "1"], ["99", "2"]]))
    state.apply(_book("delta", 11, [["98", "3"]]))
    updates = state.rebase(_book("snapshot", 15, [["100", "4"], ["98", "3"]]))
    assert updates is not None and len(updates) == 1
    msg = json.loads(updates[0].text)
    assert msg["type"] == "delta" and msg["data"]["u"] == 15
    assert msg["data"]["b"] == [["99", "0"], ["100", "4"]]  # 98 unchanged: not sent
    assert state.apply(_book("delta", 16)) is Integrity.OK

    older = BybitState(key("linear", "orderbook.50.BTCUSDT"))
    older.apply(_book("snapshot", 10, [["100", "1"]]))
    older.apply(_book("delta", 12))
    assert older.rebase(_book("snapshot", 9, [["100", "1"]])) == []
    assert older.apply(_book("delta", 11)) is Integrity.DUPLICATE
    assert older.apply(_book("delta", 12)) is Integrity.DUPLICATE
    assert older.apply(_book("delta", 13)) is Integrity.OK
    assert older.apply(_book("delta", 13)) is Integrity.MISMATCH  # outside a hand-over
    assert older.rebase(_book("snapshot", 1, [])) is None  # engine restart
    assert older.rebase(_book("delta", 20)) is None
