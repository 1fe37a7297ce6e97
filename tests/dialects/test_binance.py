"""Binance spot codec: paths, SUBSCRIBE ids, combined wrapper, 5 msg/s, depth contiguity."""

from __future__ import annotations

import json

import pytest

from wsgate.dialects.base import (
    Auth,
    ChannelData,
    ChannelState,
    Close,
    DataKind,
    Dialect,
    Error,
    ErrorAction,
    FrameForm,
    Integrity,
    Reply,
    Result,
    ServerShutdown,
    SessionCodec,
    Subscribe,
    Subscribed,
    SubscribeFailed,
    Unsubscribe,
    Unsubscribed,
    UpstreamCodec,
)
from wsgate.dialects.binance import BinanceDialect, BinanceSession, BinanceUpstream, parse_stream
from wsgate.errors import InvalidPath

D = BinanceDialect()

TRADE = (
    '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.00100000","q":"100",'
    '"T":1672515782136,"m":true,"M":true}'
)
AGG = '{"e":"aggTrade","E":1,"s":"BNBBTC","a":5933014,"p":"0.001","q":"100","f":100,"l":105}'


def combined(stream: str, data: str) -> str:
    return '{"stream":"' + stream + '","data":' + data + "}"


def reply_of(intent: object) -> dict[str, object]:
    assert isinstance(intent, Reply | Error), intent
    return json.loads(intent.frame)  # type: ignore[no-any-return]


def send(s: BinanceSession, msg: object, now: float) -> list[object]:
    return list(s.on_client_message(json.dumps(msg), now))


def test_protocol_conformance() -> None:
    assert isinstance(D, Dialect)
    assert isinstance(D.open_session("/ws"), SessionCodec)
    assert isinstance(D.open_upstream(), UpstreamCodec)
    k = parse_stream("btcusdt@trade")
    assert k is not None and isinstance(D.new_state(k), ChannelState)
    assert D.url_suffix == "/stream"


def test_stream_keys_are_canonical() -> None:
    a = parse_stream("BTCUSDT@aggtrade")
    assert a is not None and a.name == "btcusdt@aggTrade" and a.symbol == "btcusdt"
    assert a == parse_stream("btcusdt@aggTrade")
    d, d100 = parse_stream("btcusdt@depth"), parse_stream("btcusdt@depth@100ms")
    assert d is not None and d100 is not None and d != d100 and d100.name == "btcusdt@depth@100ms"
    m1, mon = parse_stream("btcusdt@kline_1m"), parse_stream("btcusdt@kline_1M")
    assert m1 is not None and mon is not None and m1 != mon
    for bad in (
        "btcusdt@kline_2m",
        "btcusdt@nope",
        "btc usdt@trade",
        "btcusdt",
        "@trade",
        "btcusdt@trade@100ms",
        "!nope@arr",
        "",
    ):
        assert parse_stream(bad) is None, bad
    for good in (
        "btcusdt@depth20@100ms",
        "btcusdt@ticker_1h",
        "!miniTicker@arr",
        "btcusdt@bookTicker",
        "btcusdt@avgPrice",
        "btcusdt@miniTicker",
    ):
        k = parse_stream(good)
        assert k is not None and k.name == good


def test_paths_and_initial_streams() -> None:
    raw = D.open_session("/ws/btcusdt@trade")
    assert raw.form is FrameForm.PLAIN
    assert raw.on_open(0.0) == [Subscribe(parse_stream("btcusdt@trade"))]  # type: ignore[arg-type]
    many = D.open_session("/ws/btcusdt@trade/ethusdt@depth")
    assert len(many.on_open(0.0)) == 2
    comb = D.open_session("/stream", "streams=btcusdt@aggTrade/ethusdt@bookTicker")
    assert comb.form is FrameForm.COMBINED
    intents = comb.on_open(0.0)
    assert [i.key.name for i in intents if isinstance(i, Subscribe)] == [
        "btcusdt@aggTrade",
        "ethusdt@bookTicker",
    ]
    assert D.open_session("/ws").on_open(0.0) == []
    listen = D.open_session("/ws/pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1")
    opened = listen.on_open(0.0)
    assert len(opened) == 1 and isinstance(opened[0], Auth)
    assert opened[0].upstream_path.startswith("/ws/pqia91ma")  # type: ignore[union-attr]
    assert D.open_session("/ws/whatever").on_open(0.0) == []  # Binance stays silent too
    with pytest.raises(InvalidPath) as bad:
        D.open_session("/stream", "streams=btcusdt@trade/bogus@@x")
    assert bad.value.http_status == 400 and "bogus@@x" in str(bad.value)
    with pytest.raises(InvalidPath) as missing:
        D.open_session("/api/v3/depth")
    assert missing.value.http_status == 404


def test_subscribe_unsubscribe_list_ids() -> None:
    s = D.open_session("/ws")
    out = send(
        s, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 1}, 0.0
    )
    subs = out  # the answer waits for the exchange (test_subscribe_is_answered_...)
    assert [i.key.name for i in subs] == ["btcusdt@aggTrade", "btcusdt@depth"]  # type: ignore[attr-defined]
    assert all(isinstance(i, Subscribe) and i.client_id == 1 for i in subs)
    for sub in subs:
        s.render_subscribed(sub, 0)  # type: ignore[arg-type]
    again = send(s, {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 2}, 0.3)
    assert again == [Reply('{"result":null,"id":2}')]  # already subscribed: no new intent
    listed = send(s, {"method": "LIST_SUBSCRIPTIONS", "id": 3}, 0.5)
    assert reply_of(listed[0]) == {"result": ["btcusdt@aggTrade", "btcusdt@depth"], "id": 3}
    un = send(
        s, {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth", "xrpusdt@trade"], "id": 312}, 0.7
    )
    assert reply_of(un[0]) == {"result": None, "id": 312}
    assert un[1:] == [Unsubscribe(parse_stream("btcusdt@depth"))]  # type: ignore[arg-type]
    assert reply_of(send(s, {"method": "LIST_SUBSCRIPTIONS", "id": 4}, 0.9)[0])["result"] == [
        "btcusdt@aggTrade"
    ]


def test_subscribe_is_answered_when_every_stream_is_answered_upstream() -> None:
    """``{"result":null}`` once the last stream of the request is live (the hub calls
    render_subscribed when the exchange confirmed it, or at once for a live shared stream);
    the venue's error instead when one is refused, once, and nothing after it."""
    s = D.open_session("/ws")
    a, b = send(
        s, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 4}, 0
    )
    assert isinstance(a, Subscribe) and isinstance(b, Subscribe)
    assert s.render_subscribed(a, 0) is None  # ethusdt@trade is not answered yet
    assert s.holds(a.key) and s.holds(b.key)  # no data before the request's answer
    assert json.loads(s.render_subscribed(b, 0) or "") == {"result": None, "id": 4}
    assert not s.holds(a.key) and not s.holds(b.key)  # both flow from the answer on
    assert s.render_subscribed(b, 0) is None  # answered once
    assert s.withdrawn() == []
    # One refused stream: the request's error (with its id); Binance subscribes none of
    # its streams, so the other one is taken back too, confirmed or not.
    c, d = send(
        s, {"method": "SUBSCRIBE", "params": ["zzzusdt@trade", "bnbusdt@trade"], "id": 5}, 1
    )
    assert isinstance(c, Subscribe) and isinstance(d, Subscribe)
    assert s.render_subscribed(d, 0) is None and s.holds(d.key)  # live, held
    refused = json.loads(s.render_subscribe_error(c, 2, "Invalid request: unknown stream") or "")
    assert refused == {"error": {"code": 2, "msg": "Invalid request: unknown stream"}, "id": 5}
    assert c.key not in s.subs and d.key not in s.subs
    assert s.withdrawn() == [d.key] and s.withdrawn() == []  # named once
    assert not s.holds(d.key) and s.render_subscribed(d, 0) is None
    listed = send(s, {"method": "LIST_SUBSCRIPTIONS", "id": 9}, 1.5)
    assert reply_of(listed[0])["result"] == ["btcusdt@trade", "ethusdt@trade"]
    # A stream the session already held is not the refused request's: it stays.
    params = ["btcusdt@trade", "xrpusdt@trade", "yyyusdt@trade"]
    f, g = send(s, {"method": "SUBSCRIBE", "params": params, "id": 8}, 1.6)
    assert isinstance(f, Subscribe) and isinstance(g, Subscribe)
    assert s.render_subscribe_error(g, 2, "no") is not None and s.withdrawn() == [f.key]
    assert "btcusdt@trade" in [k.name for k in s.subs]
    # Unsubscribing the stream a request still waits for completes it; its confirmed
    # streams flow from then on.
    h, e = send(
        s, {"method": "SUBSCRIBE", "params": ["adausdt@trade", "solusdt@trade"], "id": 6}, 2
    )
    assert isinstance(h, Subscribe) and isinstance(e, Subscribe)
    assert s.render_subscribed(h, 0) is None and s.holds(h.key)
    un = send(s, {"method": "UNSUBSCRIBE", "params": ["solusdt@trade"], "id": 7}, 3)
    assert [reply_of(i) for i in un[:2]] == [{"result": None, "id": 6}, {"result": None, "id": 7}]
    assert un[2:] == [Unsubscribe(e.key)]  # type: ignore[attr-defined]
    assert not s.holds(h.key)
    # Streams from a /stream?streams= URL belong to no request: an error still names nothing.
    u = D.open_session("/stream", "streams=btcusdt@trade")
    (initial,) = u.on_open(0.0)
    assert isinstance(initial, Subscribe) and u.render_subscribed(initial, 0) is None


def test_request_errors_have_binance_shape() -> None:
    s = D.open_session("/ws")
    bad_stream = reply_of(send(s, {"method": "SUBSCRIBE", "params": ["btc@nope"], "id": 7}, 0)[0])
    assert bad_stream["id"] == 7 and bad_stream["error"]["code"] == 2  # type: ignore[index]
    bad_json = s.on_client_message("{not json", 1.0)
    assert reply_of(bad_json[0])["error"]["code"] == 3  # type: ignore[index]
    unknown = reply_of(send(s, {"method": "DANCE", "id": 8}, 2.0)[0])
    assert unknown["error"]["code"] == 2 and unknown["id"] == 8  # type: ignore[index]
    bad_id = reply_of(send(s, {"method": "LIST_SUBSCRIPTIONS", "id": -1}, 3.0)[0])
    assert bad_id["error"]["code"] == 2  # type: ignore[index]
    bad_params = reply_of(send(s, {"method": "SUBSCRIBE", "params": "x", "id": 9}, 4.0)[0])
    assert bad_params["error"]["code"] == 1  # type: ignore[index]
    assert all(isinstance(i, Error) for i in bad_json)


def test_set_and_get_combined_property_switches_form() -> None:
    s = D.open_session("/ws")
    assert reply_of(send(s, {"method": "GET_PROPERTY", "params": ["combined"], "id": 1}, 0)[0]) == {
        "result": False,
        "id": 1,
    }
    send(s, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 2}, 0.1)
    assert s.form is FrameForm.COMBINED


def test_more_than_five_messages_per_second_closes() -> None:
    s = D.open_session("/ws")
    msg = {"method": "LIST_SUBSCRIPTIONS", "id": 1}
    for i in range(5):
        assert isinstance(send(s, msg, 10.0 + i * 0.1)[0], Reply)
    assert send(s, msg, 10.5) == [Close(1008, "Too many messages")]
    # a slower client is fine forever
    slow = D.open_session("/ws")
    for i in range(50):
        assert isinstance(send(slow, msg, i * 0.25)[0], Reply)


def test_combined_wrapper_strip_is_a_slice() -> None:
    up = BinanceUpstream()
    frame = combined("bnbbtc@trade", TRADE)
    ev = up.on_upstream_frame(frame)
    assert isinstance(ev, ChannelData) and ev.channel == "bnbbtc@trade"
    assert D.rewrite(ev, 0, FrameForm.PLAIN) == TRADE.encode()
    assert D.rewrite(ev, 0, FrameForm.COMBINED) == frame.encode()
    plain, comb = D.open_session("/ws"), D.open_session("/stream")
    assert ev.kind in plain.fast_kinds
    assert plain.render(ev, 0, 0.0) == TRADE.encode()
    assert comb.render(ev, 0, 0.0) == frame.encode()
    nums = '{"e":"x","n":29999,"f":0.00001,"g":1e-8}'
    ev2 = up.on_upstream_frame(combined("btcusdt@avgPrice", nums))
    assert isinstance(ev2, ChannelData) and D.rewrite(ev2, 0, FrameForm.PLAIN) == nums.encode()
    # unusual member order still yields the exact data text
    odd = '{"data":' + nums + ',"stream":"btcusdt@avgPrice"}'
    ev3 = up.on_upstream_frame(odd)
    assert isinstance(ev3, ChannelData) and ev3.channel == "btcusdt@avgPrice"
    assert json.loads(D.rewrite(ev3, 0, FrameForm.PLAIN)) == json.loads(nums)


def test_upstream_requests_and_replies_are_matched_by_id() -> None:
    up = D.open_upstream()
    a, b = parse_stream("btcusdt@trade"), parse_stream("ethusdt@trade")
    assert a is not None and b is not None
    frame = json.loads(up.subscribe_batch_frame([a, b], 11))
    assert frame == {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 11}
    res = up.on_upstream_frame('{"result":null,"id":11}')
    assert isinstance(res, Result) and res.req_id == 11
    assert res.subscribed == (
        Subscribed(a, "btcusdt@trade", 11),
        Subscribed(b, "ethusdt@trade", 11),
    )
    up.unsubscribe_frame(a, "btcusdt@trade", 12)
    un = up.on_upstream_frame('{"result":null,"id":12}')
    assert isinstance(un, Result) and un.unsubscribed == (Unsubscribed("btcusdt@trade", 12),)
    up.subscribe_frame(b, 13)
    err = up.on_upstream_frame('{"error":{"code":2,"msg":"Invalid request"},"id":13}')
    assert err == SubscribeFailed(2, "Invalid request", ErrorAction.FAIL_SUBSCRIPTION, b, 13)
    assert up.ping_frame(1) is None and up.hello() == []


def test_server_shutdown_in_both_forms() -> None:
    up = BinanceUpstream()
    assert isinstance(up.on_upstream_frame('{"e":"serverShutdown","E":1}'), ServerShutdown)
    assert isinstance(
        up.on_upstream_frame(combined("!serverShutdown", '{"e":"serverShutdown","E":1}')),
        ServerShutdown,
    )


def test_depth_contiguity_detects_gaps() -> None:
    key = parse_stream("bnbbtc@depth@100ms")
    assert key is not None
    state = D.new_state(key)
    up = BinanceUpstream()

    def depth(first: int, last: int) -> ChannelData:
        data = (
            f'{{"e":"depthUpdate","E":1,"s":"BNBBTC","U":{first},"u":{last},'
            '"b":[["0.0024","10"]],"a":[["0.0026","100"]]}'
        )
        ev = up.on_upstream_frame(combined("bnbbtc@depth@100ms", data))
        assert isinstance(ev, ChannelData)
        return ev

    assert state.apply(depth(157, 160)) is Integrity.OK
    assert state.apply(depth(161, 165)) is Integrity.OK
    assert state.apply(depth(170, 171)) is Integrity.GAP
    assert state.apply(depth(172, 172)) is Integrity.OK
    assert state.statistics().gaps == 1
    assert state.snapshot_event() is None  # depth late joiners fetch the REST snapshot
    assert D.dedup_id(depth(173, 180)) == 180


def test_last_value_streams_serve_late_joiners_trades_do_not() -> None:
    up = BinanceUpstream()
    bt_key = parse_stream("bnbusdt@bookTicker")
    assert bt_key is not None
    bt = D.new_state(bt_key)
    data = '{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000"}'
    ev = up.on_upstream_frame(combined("bnbusdt@bookTicker", data))
    assert isinstance(ev, ChannelData)
    bt.apply(ev)
    late = bt.snapshot_event()  # what a late joiner gets, rendered as the fan-out does
    assert late is not None
    assert D.rewrite(late, 0, FrameForm.PLAIN) == data.encode()
    assert D.rewrite(late, 0, FrameForm.COMBINED) == combined("bnbusdt@bookTicker", data).encode()
    kline_key = parse_stream("bnbusdt@kline_1m")
    assert kline_key is not None and D.new_state(kline_key).keeps_last
    tr_key = parse_stream("bnbbtc@trade")
    assert tr_key is not None
    tr = D.new_state(tr_key)
    tev = up.on_upstream_frame(combined("bnbbtc@trade", TRADE))
    assert isinstance(tev, ChannelData)
    tr.apply(tev)
    assert tr.snapshot_event() is None


def test_dedup_ids_and_cadence() -> None:
    up = BinanceUpstream()
    t = up.on_upstream_frame(combined("bnbbtc@trade", TRADE))
    a = up.on_upstream_frame(combined("bnbbtc@aggTrade", AGG))
    k = up.on_upstream_frame(combined("bnbbtc@kline_1m", '{"e":"kline","k":{"t":1}}'))
    assert isinstance(t, ChannelData) and isinstance(a, ChannelData) and isinstance(k, ChannelData)
    assert D.dedup_id(t) == 12345 and D.dedup_id(a) == 5933014 and D.dedup_id(k) is None
    names = ("x1@trade", "x1@depth", "x1@depth@100ms", "x1@depth5@100ms", "x1@depth10")
    names += ("x1@kline_1s", "x1@kline_1h", "x1@ticker")
    keys = {n: parse_stream(n) for n in names}
    cad = {n: D.cadence(k) for n, k in keys.items() if k is not None}
    assert cad == {
        "x1@trade": None,
        "x1@depth": 600.0,  # diff depth: pushed on change only
        "x1@depth@100ms": 600.0,
        "x1@depth5@100ms": 0.1,  # partial depth: every interval
        "x1@depth10": 1.0,
        "x1@kline_1s": 1.0,
        "x1@kline_1h": 2.0,
        "x1@ticker": 1.0,
    }


def test_subscribe_error_render_drops_the_stream() -> None:
    s = D.open_session("/ws")
    (sub,) = send(s, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 5}, 0)
    assert isinstance(sub, Subscribe)
    assert json.loads(s.render_subscribe_error(sub, 2, "Invalid request") or "") == {
        "error": {"code": 2, "msg": "Invalid request"},
        "id": 5,
    }
    assert "streams=0" in repr(s)
    assert s.render_subscribed(sub, 1) is None and s.render_unsubscribed(1) is None
    assert DataKind.DATA in s.fast_kinds


def test_session_statistics_and_subscriptions() -> None:
    s = D.open_session("/ws/btcusdt@trade")
    s.on_open(0.0)
    send(s, {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}, 0.0)
    s.on_client_message("nope", 0.1)
    assert [k.name for k in s.subscriptions()] == ["btcusdt@trade", "ethusdt@trade"]
    stats = s.statistics()
    assert (stats.messages, stats.errors, stats.subscriptions) == (2, 1, 2)


KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"


def test_private_paths_are_relays_from_the_first_byte() -> None:
    api = D.open_session("/ws-api/v3")
    assert api.private and api.on_open(0.0) == [Auth("", "/ws-api/v3")]
    user = D.open_session(f"/ws/{KEY}")
    assert user.private and user.on_open(0.0) == [Auth("", f"/ws/{KEY}")]
    assert not D.open_session("/ws").private
    with pytest.raises(InvalidPath) as bad:
        D.open_session(f"/user/{KEY}")
    assert KEY not in str(bad.value) and "***" in str(bad.value)


def test_subscribing_to_a_listen_key_moves_the_session_to_a_relay() -> None:
    """binance-connector's user_data(): SUBSCRIBE with the listen key on a shared /ws."""
    s = D.open_session("/ws")
    s.on_client_message('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}', 0.0)
    out = s.on_client_message(json.dumps({"method": "SUBSCRIBE", "params": [KEY], "id": 2}), 5.0)
    assert len(out) == 1 and isinstance(out[0], Auth)
    # One request upstream, with the client's id: its streams and the listen key.
    assert json.loads(out[0].frame) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@trade", KEY],
        "id": 2,
    }
    assert out[0].upstream_path == "/ws"
    comb = D.open_session("/stream", "streams=btcusdt@trade")
    comb.on_open(0.0)
    moved = comb.on_client_message(
        json.dumps({"method": "SUBSCRIBE", "params": [KEY], "id": 3}), 1.0
    )
    assert isinstance(moved[0], Auth) and moved[0].upstream_path == "/stream"
    # UNSUBSCRIBE of something that is not a stream stays an error, as on Binance.
    err = D.open_session("/ws").on_client_message(
        json.dumps({"method": "UNSUBSCRIBE", "params": [KEY], "id": 4}), 0.0
    )
    assert isinstance(err[0], Error)
