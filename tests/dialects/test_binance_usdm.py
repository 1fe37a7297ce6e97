"""Binance USD-M codec: stream grammar, paths, requests, locator and the pu gap rule."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dialects.jsonfmt import formatted, json_values
from wsgate.dialects.base import Auth, ChannelData, Close, Integrity, Subscribe
from wsgate.dialects.binance_depth import (
    Action,
    DepthBook,
    DepthEvent,
    Snapshot,
    SnapshotOutcome,
    parse_event,
    render_event,
)
from wsgate.dialects.binance_usdm import (
    MARKET,
    PUBLIC,
    BinanceUsdmDialect,
    UsdmState,
    parse_usdm_stream,
)
from wsgate.dialects.jsonspan import int_field
from wsgate.errors import InvalidPath

D = BinanceUsdmDialect()


def key(name: str) -> Any:
    k = parse_usdm_stream(name)
    assert k is not None, name
    return k


# ----------------------------------------------------------------------------- grammar and paths


@pytest.mark.parametrize(
    ("raw", "name", "path"),
    [
        ("BTCUSDT@aggTrade", "btcusdt@aggTrade", MARKET),
        ("btcusdt@trade", "btcusdt@trade", PUBLIC),
        ("btcusdt@markPrice@1s", "btcusdt@markPrice@1s", MARKET),
        ("btcusdt@kline_1M", "btcusdt@kline_1M", MARKET),
        ("btcusdt@ticker", "btcusdt@ticker", MARKET),
        ("btcusdt@forceOrder", "btcusdt@forceOrder", MARKET),
        ("!markPrice@arr@1s", "!markPrice@arr@1s", MARKET),
        ("btcusdt@depth", "btcusdt@depth", PUBLIC),
        ("btcusdt@depth@500ms", "btcusdt@depth@500ms", PUBLIC),
        ("btcusdt@depth20@100ms", "btcusdt@depth20@100ms", PUBLIC),
        ("btcusdt@bookTicker", "btcusdt@bookTicker", PUBLIC),
        ("!bookTicker", "!bookTicker", PUBLIC),
    ],
)
def test_stream_names_and_the_path_that_carries_them(raw: str, name: str, path: str) -> None:
    k = key(raw)
    assert k.name == name
    assert D.upstream_suffix(k) == path


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "btcusdt",
        "btcusdt@kline_1s",
        "btcusdt@depth@1000ms",
        "btcusdt@depth5@250ms",
        "x@y",
        "!x",
    ],
)
def test_streams_fstream_does_not_have(raw: str) -> None:
    assert parse_usdm_stream(raw) is None


def test_session_paths() -> None:
    s = D.open_session("/market/stream", "streams=btcusdt@aggTrade/btcusdt@depth")
    assert [i.key.name for i in s.on_open(0) if isinstance(i, Subscribe)] == [
        "btcusdt@aggTrade",
        "btcusdt@depth",
    ]
    assert D.open_session("/public/ws/btcusdt@bookTicker").on_open(0)[0].key.name == (  # type: ignore[union-attr]
        "btcusdt@bookTicker"
    )
    assert D.open_session("/ws").on_open(0) == []  # legacy root
    private = D.open_session("/private/ws", "listenKey=" + "k" * 40 + "&events=ACCOUNT_UPDATE")
    assert private.on_open(0) == [
        Auth("", "/private/ws?listenKey=" + "k" * 40 + "&events=ACCOUNT_UPDATE")
    ]
    with pytest.raises(InvalidPath):
        D.open_session("/private/ws")
    with pytest.raises(InvalidPath):
        D.open_session("/market/stream", "streams=btcusdt@nope")
    with pytest.raises(InvalidPath):
        D.open_session("/v5/public/linear")


def test_requests_ids_errors_and_the_ten_per_second_limit() -> None:
    s = D.open_session("/market/ws")
    out = s.on_client_message('{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":3}', 0.0)
    (sub,) = out  # answered when the exchange is (render_subscribed)
    assert isinstance(sub, Subscribe)
    assert s.render_subscribed(sub, 0) == '{"result":null,"id":3}'
    bad = s.on_client_message('{"method":"SUBSCRIBE","params":["btcusdt@kline_1s"],"id":4}', 0.1)
    assert json.loads(bad[0].frame)["error"]["code"] == 2  # type: ignore[union-attr]
    listed = s.on_client_message('{"method":"LIST_SUBSCRIPTIONS","id":5}', 0.2)
    assert json.loads(listed[0].frame) == {"result": ["btcusdt@aggTrade"], "id": 5}  # type: ignore[union-attr]
    for i in range(7):
        assert not isinstance(
            s.on_client_message('{"method":"LIST_SUBSCRIPTIONS","id":1}', 0.3 + i / 100)[0], Close
        )
    assert isinstance(s.on_client_message('{"method":"LIST_SUBSCRIPTIONS","id":1}', 0.5)[0], Close)


# ----------------------------------------------------------------------------- locator

_STREAMS = st.sampled_from(["btcusdt@depth@100ms", "ethusdt@aggTrade", "!markPrice@arr", "x/y@z"])


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    stream=_STREAMS,
    payload=st.dictionaries(st.text(max_size=4), json_values, max_size=5),
)
def test_locator_over_any_valid_formatting(
    data: st.DataObject, stream: str, payload: dict[str, Any]
) -> None:
    """The documented wrapper ``{"stream":…,"data":…}`` in either order, with whitespace
    anywhere and any escapes: the routing key is the decoded name, the plain form the data
    value exactly as written (stripped of the whitespace around it), never re-encoded."""
    frame = data.draw(formatted({"stream": stream, "data": payload}))
    _check_located(frame, stream, payload)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    payload=st.dictionaries(st.text(max_size=4), json_values, max_size=5),
    extra=st.dictionaries(st.sampled_from(["x", "ts", "s"]), json_values, min_size=1, max_size=2),
)
def test_locator_with_undocumented_members(
    data: st.DataObject, payload: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Members beside stream/data are tolerated in any non-compact writing (the compact fast
    path assumes data last, as Binance documents the wrapper)."""
    frame = " " + data.draw(formatted({"stream": "btcusdt@depth", "data": payload, **extra}))
    _check_located(frame, "btcusdt@depth", payload)


def _check_located(frame: str, stream: str, payload: dict[str, Any]) -> None:
    ev = D.open_upstream().on_upstream_frame(frame)
    assert isinstance(ev, ChannelData), ev
    assert ev.channel == stream
    sliced = ev.text[ev.start : ev.end]
    assert sliced == sliced.strip() and json.loads(sliced) == payload
    assert sliced in frame  # a slice of what the venue wrote, never a re-encoding
    assert json.loads(D.rewrite(ev, 0, D.open_session("/ws").form)) == payload
    combined = D.open_session("/stream", "streams=btcusdt@depth").form
    # the frame as written, without the whitespace around it (clients expect an object)
    assert D.rewrite(ev, 0, combined) == frame.strip(" \t\n\r").encode()


def test_locator_fast_path_keeps_numbers_as_written() -> None:
    frame = '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","u":29999,"b":[["1e-8","1.0"]]}}'
    ev = D.open_upstream().on_upstream_frame(frame)
    assert isinstance(ev, ChannelData)
    assert frame[ev.start : ev.end] == '{"e":"depthUpdate","u":29999,"b":[["1e-8","1.0"]]}'


def test_replies_are_matched_to_their_request() -> None:
    up = D.open_upstream()
    up.subscribe_batch_frame([key("btcusdt@aggTrade")], 9)
    ev = up.on_upstream_frame('{ "id" : 9 , "result" : null }')
    assert [s.channel for s in ev.subscribed] == ["btcusdt@aggTrade"]  # type: ignore[union-attr]


def _depth(u: int, pu: int) -> dict[str, Any]:
    return {
        "e": "depthUpdate",
        "E": 1,
        "T": 1,
        "s": "BTCUSDT",
        "U": pu + 3,
        "u": u,
        "pu": pu,
        "b": [],
        "a": [],
    }


@settings(max_examples=200, deadline=None)
@given(data=st.data(), u=st.integers(0, 10**15), pu=st.integers(0, 10**15))
def test_int_field_over_any_formatting(data: st.DataObject, u: int, pu: int) -> None:
    text = data.draw(formatted(_depth(u, pu)))
    assert int_field(text, "u", 0, len(text)) == u
    assert int_field(text, "pu", 0, len(text)) == pu


# ----------------------------------------------------------------------------- the pu gap rule


def _chain(ids: list[int]) -> list[tuple[int, int]]:
    """(u, pu) of consecutive events with update ids ``ids`` (sorted, distinct)."""
    return [(u, p) for p, u in itertools.pairwise(ids)]


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    ids=st.lists(st.integers(1, 10**9), min_size=3, max_size=40, unique=True).map(sorted),
)
def test_state_reports_a_gap_exactly_where_events_are_missing(
    data: st.DataObject, ids: list[int]
) -> None:
    events = _chain(ids)
    kept = [e for e in events if data.draw(st.integers(0, 4)) != 0] or events[:1]
    state = UsdmState(key("btcusdt@depth"))
    verdicts = []
    indent = data.draw(st.sampled_from([None, 0, 2]))  # compact, newlines, pretty
    for u, pu in kept:
        text = json.dumps({"stream": "btcusdt@depth", "data": _depth(u, pu)}, indent=indent)
        ev = D.open_upstream().on_upstream_frame(text)
        assert isinstance(ev, ChannelData)
        verdicts.append(state.apply(ev))
    expected = [Integrity.OK] + [
        Integrity.OK if cur[1] == prev[0] else Integrity.GAP
        for prev, cur in itertools.pairwise(kept)
    ]
    assert verdicts == expected
    assert state.statistics().gaps == expected.count(Integrity.GAP)


def _fev(u: int, pu: int, bids: dict[str, str] | None = None) -> DepthEvent:
    return DepthEvent(pu + 5, u, 1000 + u, "BTCUSDT", tuple((bids or {}).items()), (), pu)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    ids=st.lists(st.integers(1, 10**9), min_size=4, max_size=40, unique=True).map(sorted),
)
def test_futures_book_follows_pu_never_u_plus_one(data: st.DataObject, ids: list[int]) -> None:
    """U jumps on futures: a contiguous pu chain is never a gap, a missing event always is."""
    events = _chain(ids)
    missing = data.draw(st.integers(1, len(events) - 2))  # one event never arrives
    book = DepthBook("btcusdt@depth", futures=True)
    u0, pu0 = events[0]
    assert book.observe(_fev(u0, pu0)) is Action.DELIVER
    assert book.on_snapshot(Snapshot(u0, (("1", "1"),), (("2", "1"),))) is SnapshotOutcome.DONE
    for u, pu in events[1:missing]:
        assert book.observe(_fev(u, pu)) is Action.DELIVER
    u, pu = events[missing + 1]
    assert book.observe(_fev(u, pu)) is Action.HOLD  # resync: its pu is not the last u
    assert book.statistics().phase.value == "resync"


def test_futures_bridge_carries_pu_and_straddles_rewrite_pu() -> None:
    book = DepthBook("btcusdt@depth", futures=True)
    assert book.observe(_fev(110, 100, {"10": "1"})) is Action.DELIVER
    # The first event may start right at lastUpdateId (pu == lastUpdateId), as ccxt accepts.
    assert book.on_snapshot(Snapshot(100, (("10", "5"),), (("11", "1"),))) is SnapshotOutcome.DONE
    assert book.observe(_fev(120, 110)) is Action.DELIVER
    assert book.observe(_fev(120, 110)) is Action.DROP  # a duplicate from the other home
    assert book.observe(_fev(130, 115)) is Action.REWRITE and book.rewrite_u == 120
    assert book.observe(_fev(150, 140, {"9": "2"})) is Action.HOLD  # 130..140 missing
    assert book.observe(_fev(160, 150)) is Action.HOLD
    assert (
        book.on_snapshot(Snapshot(150, (("10", "1"), ("9", "2")), (("11", "1"),)))
        is SnapshotOutcome.DONE
    )
    bridge = book.take_bridge()
    assert bridge is not None and (bridge.prev, bridge.last) == (130, 160)
    rendered = json.loads(render_event(bridge))
    assert rendered["pu"] == 130 and rendered["u"] == 160 and "T" in rendered
    assert parse_event(render_event(bridge)) == bridge
    assert book.observe(_fev(170, 160)) is Action.DELIVER


def test_dedup_ids_per_stream() -> None:
    for stream, payload, want in (
        ("btcusdt@aggTrade", {"e": "aggTrade", "a": 77, "p": "1"}, 77),
        ("btcusdt@depth", _depth(12, 9), 12),
        ("btcusdt@markPrice", {"e": "markPriceUpdate", "p": "1"}, None),
    ):
        text = json.dumps({"stream": stream, "data": payload}, indent=1)
        ev = D.open_upstream().on_upstream_frame(text)
        assert isinstance(ev, ChannelData)
        assert D.dedup_id(ev) == want
