"""Bitfinex v2 codec: client intents, rendering with per-session flags, upstream frames."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    Auth,
    AuthReply,
    ChannelData,
    ChannelState,
    Conf,
    ConfAck,
    DataKind,
    Dialect,
    Error,
    ErrorAction,
    FrameForm,
    Info,
    InfoAction,
    Pong,
    Relay,
    Reply,
    SessionCodec,
    Subscribe,
    Subscribed,
    SubscribeFailed,
    Unrecognized,
    Unsubscribe,
    Unsubscribed,
    UpstreamCodec,
)
from wsgate.dialects.bitfinex import (
    OB_CHECKSUM,
    SEQ_ALL,
    TIMESTAMP,
    BitfinexDialect,
    BitfinexSession,
    BitfinexUpstream,
)
from wsgate.errors import InvalidPath, ProtocolError

D = BitfinexDialect()
NOW = 1_700_000_000.123


def session() -> BitfinexSession:
    return D.open_session("/ws/2")


def only(intents: Sequence[object]) -> object:
    assert len(intents) == 1, intents
    return intents[0]


def subscribe(s: BitfinexSession, **fields: object) -> Subscribe:
    intent = only(s.on_client_message(json.dumps({"event": "subscribe", **fields}), NOW))
    assert isinstance(intent, Subscribe)
    return intent


def error_of(intents: Sequence[object]) -> dict[str, object]:
    intent = only(intents)
    assert isinstance(intent, Error)
    body = json.loads(intent.frame)
    assert body["event"] == "error" and body["code"] == intent.code
    return body  # type: ignore[no-any-return]


def test_protocol_conformance() -> None:
    assert isinstance(D, Dialect)
    assert isinstance(session(), SessionCodec)
    assert isinstance(D.open_upstream(), UpstreamCodec)
    assert isinstance(
        D.new_state(subscribe(session(), channel="ticker", symbol="tBTCUSD").key), ChannelState
    )


def test_paths() -> None:
    for ok in ("", "/", "/ws/2", "/ws/2/"):
        assert isinstance(D.open_session(ok), BitfinexSession)
    with pytest.raises(InvalidPath) as info:
        D.open_session("/ws/1")
    assert info.value.http_status == 404
    assert isinstance(info.value, ProtocolError)


def test_greeting_is_info_v2_with_platform_status() -> None:
    s = session()
    info = json.loads(s.greeting()[0])
    assert info["event"] == "info" and info["version"] == 2 and info["platform"] == {"status": 1}
    assert json.loads(s.greeting(platform_status=0)[0])["platform"]["status"] == 0
    opened = s.on_open(NOW)
    assert opened == [Reply(s.greeting()[0])]


def test_subscribe_normalises_pair_and_book_defaults() -> None:
    s = session()
    t = subscribe(s, channel="ticker", pair="BTCUSD")
    assert t.key.symbol == "tBTCUSD" and t.key.name == "ticker:tBTCUSD"
    assert subscribe(session(), channel="ticker", symbol="tBTCUSD").key == t.key
    assert subscribe(session(), channel="ticker", symbol="BTCUSD").key == t.key
    b = subscribe(s, channel="book", symbol="tETHUSD")
    assert b.key.name == "book:tETHUSD:P0:F0:25"
    explicit = subscribe(session(), channel="book", symbol="tETHUSD", prec="P0", freq="F0", len=25)
    assert explicit.key == b.key
    assert subscribe(session(), channel="book", symbol="tETHUSD", len="100").key != b.key
    r0 = subscribe(session(), channel="book", symbol="tETHUSD", prec="R0")
    assert r0.key.param("prec") == "R0" and r0.key != b.key
    c = subscribe(s, channel="candles", key="trade:1m:tBTCUSD")
    assert c.key.name == "candles:trade:1m:tBTCUSD"
    st = subscribe(s, channel="status", key="deriv:tBTCF0:USTF0")
    assert st.key.channel == "status"
    f = subscribe(s, channel="trades", symbol="fUSD")
    assert f.key.symbol == "fUSD"


def test_subscribed_echo_includes_sub_id_and_gateway_chan_id() -> None:
    s = session()
    sub = subscribe(s, channel="book", symbol="tBTCUSD", prec="P1", subId="my-1")
    assert sub.client_id == "my-1"
    ack = json.loads(s.render_subscribed(sub, 7) or "")
    assert ack == {
        "event": "subscribed",
        "channel": "book",
        "chanId": 7,
        "symbol": "tBTCUSD",
        "prec": "P1",
        "freq": "F0",
        "len": "25",
        "pair": "BTCUSD",
        "subId": "my-1",
    }
    assert list(ack)[:3] == ["event", "channel", "chanId"]
    t = subscribe(s, channel="ticker", symbol="fUSD")
    assert json.loads(s.render_subscribed(t, 8) or "")["currency"] == "USD"
    c = subscribe(s, channel="candles", key="trade:5m:tETHUSD")
    assert json.loads(s.render_subscribed(c, 9) or "")["key"] == "trade:5m:tETHUSD"


def test_subscribe_errors_use_exchange_codes() -> None:
    s = session()
    assert (
        error_of(s.on_client_message('{"event":"subscribe","channel":"nope"}', NOW))["code"]
        == 10302
    )
    bad_symbol = error_of(
        s.on_client_message('{"event":"subscribe","channel":"ticker","symbol":"t$$"}', NOW)
    )
    assert bad_symbol["code"] == 10300 and bad_symbol["symbol"] == "t$$"
    assert (
        error_of(
            s.on_client_message(
                '{"event":"subscribe","channel":"book","symbol":"tBTCUSD","len":7}', NOW
            )
        )["code"]
        == 10300
    )
    assert (
        error_of(
            s.on_client_message(
                '{"event":"subscribe","channel":"candles","key":"trade:2m:tBTCUSD"}', NOW
            )
        )["code"]
        == 10300
    )
    sub = subscribe(s, channel="trades", symbol="tBTCUSD")
    dup = error_of(
        s.on_client_message('{"event":"subscribe","channel":"trades","pair":"BTCUSD"}', NOW)
    )
    assert dup["code"] == 10301
    s.render_subscribed(sub, 3)
    assert (
        error_of(
            s.on_client_message('{"event":"subscribe","channel":"trades","symbol":"tBTCUSD"}', NOW)
        )["code"]
        == 10301
    )
    failed = json.loads(
        s.render_subscribe_error(
            subscribe(s, channel="ticker", symbol="tXXXYYY"), 10300, "symbol: invalid"
        )
        or ""
    )
    assert failed == {
        "event": "error",
        "msg": "symbol: invalid",
        "code": 10300,
        "channel": "ticker",
        "symbol": "tXXXYYY",
        "pair": "XXXYYY",
    }
    # After a failure the session may try again.
    assert isinstance(
        only(
            s.on_client_message('{"event":"subscribe","channel":"ticker","symbol":"tXXXYYY"}', NOW)
        ),
        Subscribe,
    )


def test_unsubscribe_by_gateway_chan_id() -> None:
    s = session()
    sub = subscribe(s, channel="ticker", symbol="tBTCUSD")
    s.render_subscribed(sub, 42)
    intent = only(s.on_client_message('{"event":"unsubscribe","chanId":42}', NOW))
    assert intent == Unsubscribe(sub.key, 42)
    assert json.loads(s.render_unsubscribed(42) or "") == {
        "event": "unsubscribed",
        "status": "OK",
        "chanId": 42,
    }
    assert (
        error_of(s.on_client_message('{"event":"unsubscribe","chanId":42}', NOW))["code"] == 10401
    )


def test_unsubscribe_accepts_a_chan_id_string_as_ccxt_sends_it() -> None:
    s = session()
    sub = subscribe(s, channel="ticker", symbol="tBTCUSD")
    s.render_subscribed(sub, 42)
    assert only(s.on_client_message('{"event":"unsubscribe","chanId":"42"}', NOW)) == Unsubscribe(
        sub.key, 42
    )
    bad = error_of(s.on_client_message('{"event":"unsubscribe","chanId":"4x"}', NOW))
    assert bad["code"] == 10401 and bad["chanId"] == "4x"


def test_ping_pong_with_cid_and_ts_from_now() -> None:
    reply = only(session().on_client_message('{"event":"ping","cid":1234}', NOW))
    assert isinstance(reply, Reply)
    assert json.loads(reply.frame) == {"event": "pong", "ts": 1_700_000_000_123, "cid": 1234}


def test_conf_flags_per_session() -> None:
    s = session()
    intents = s.on_client_message(
        json.dumps({"event": "conf", "flags": SEQ_ALL | OB_CHECKSUM}), NOW
    )
    assert intents[0] == Conf(SEQ_ALL | OB_CHECKSUM)
    assert isinstance(intents[1], Reply)
    assert json.loads(intents[1].frame) == {"event": "conf", "status": "OK", "flags": 196608}
    assert s.flags == 196608 and s.fast_kinds == frozenset()
    assert error_of(s.on_client_message('{"event":"conf","flags":8}', NOW))["code"] == 10000
    assert error_of(s.on_client_message('{"event":"conf","flags":"x"}', NOW))["code"] == 10000
    other = session()
    assert other.flags == 0 and DataKind.CHECKSUM not in other.fast_kinds
    other.on_client_message(json.dumps({"event": "conf", "flags": OB_CHECKSUM}), NOW)
    assert DataKind.CHECKSUM in other.fast_kinds and DataKind.DATA in other.fast_kinds


def test_auth_then_relay_on_channel_zero() -> None:
    s = session()
    order = '[0,"on",null,{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"0.1","price":"1"}]'
    assert error_of(s.on_client_message(order, NOW))["code"] == 10100
    auth = '{"event":"auth","apiKey":"k","authSig":"s","authNonce":1,"authPayload":"AUTH1"}'
    assert only(s.on_client_message(auth, NOW)) == Auth(auth)
    assert only(s.on_client_message(order, NOW)) == Relay(order)


def test_invalid_json_and_unknown_event_answer_with_error_events() -> None:
    s = session()
    assert error_of(s.on_client_message("{nope", NOW))["code"] == 10000
    assert error_of(s.on_client_message(b"\xff\xfe", NOW))["code"] == 10000
    assert error_of(s.on_client_message('{"event":"dance"}', NOW))["code"] == 10000
    assert error_of(s.on_client_message("42", NOW))["code"] == 10000


# ----------------------------------------------------------------------- rendering / upstream


def test_chan_id_rewrite_preserves_numbers_byte_for_byte() -> None:
    up = BitfinexUpstream(OB_CHECKSUM)
    frame = "[17,[29999,1,0.00001]]"
    ev = up.on_upstream_frame(frame)
    assert isinstance(ev, ChannelData) and ev.channel == 17 and ev.kind is DataKind.DATA
    assert D.rewrite(ev, 5, FrameForm.PLAIN) == b"[5,[29999,1,0.00001]]"
    tiny = up.on_upstream_frame("[17,[30000.5,2,-1e-8]]")
    assert isinstance(tiny, ChannelData)
    assert D.rewrite(tiny, 123456, FrameForm.PLAIN) == b"[123456,[30000.5,2,-1e-8]]"
    te = up.on_upstream_frame('[9,"te",[401597395,1574694478808,0.005,7245.3]]')
    assert isinstance(te, ChannelData)
    assert D.rewrite(te, 1, FrameForm.PLAIN) == b'[1,"te",[401597395,1574694478808,0.005,7245.3]]'


def test_upstream_timestamp_and_sequence_are_stripped_from_the_shared_frame() -> None:
    up = BitfinexUpstream(OB_CHECKSUM | TIMESTAMP | SEQ_ALL)
    ev = up.on_upstream_frame("[17,[29999,1,0.5],88,1700000000999]")
    assert isinstance(ev, ChannelData)
    assert ev.ts == "1700000000999"
    assert D.rewrite(ev, 2, FrameForm.PLAIN) == b"[2,[29999,1,0.5]]"
    hb = up.on_upstream_frame('[17,"hb",89,1700000001000]')
    assert isinstance(hb, ChannelData) and hb.kind is DataKind.HEARTBEAT
    assert D.rewrite(hb, 2, FrameForm.PLAIN) == b'[2,"hb"]'
    cs = up.on_upstream_frame('[17,"cs",-12345,90,1700000001001]')
    assert isinstance(cs, ChannelData) and cs.kind is DataKind.CHECKSUM
    assert D.rewrite(cs, 2, FrameForm.PLAIN) == b'[2,"cs",-12345]'
    only_ts = BitfinexUpstream(TIMESTAMP).on_upstream_frame("[3,[1,2,3],1700000000000]")
    assert isinstance(only_ts, ChannelData) and only_ts.ts == "1700000000000"
    assert D.rewrite(only_ts, 4, FrameForm.PLAIN) == b"[4,[1,2,3]]"


def test_sequence_numbers_are_per_session_and_checksums_only_when_asked() -> None:
    up = BitfinexUpstream(OB_CHECKSUM)
    plain, seq_a, seq_b = session(), session(), session()
    seq_a.on_client_message(json.dumps({"event": "conf", "flags": SEQ_ALL | OB_CHECKSUM}), NOW)
    seq_b.on_client_message(json.dumps({"event": "conf", "flags": SEQ_ALL | TIMESTAMP}), NOW)
    data = up.on_upstream_frame("[17,[29999,1,0.5]]")
    hb = up.on_upstream_frame('[17,"hb"]')
    cs = up.on_upstream_frame('[17,"cs",-1234]')
    assert isinstance(data, ChannelData) and isinstance(hb, ChannelData)
    assert isinstance(cs, ChannelData)
    # plain session: fast path for data/hb, checksum skipped
    assert data.kind in plain.fast_kinds and hb.kind in plain.fast_kinds
    assert cs.kind not in plain.fast_kinds and plain.render(cs, 5, NOW) is None
    assert plain.render(data, 5, NOW) == D.rewrite(data, 5, FrameForm.PLAIN)
    # seq sessions count independently
    assert seq_a.render(data, 5, NOW) == b"[5,[29999,1,0.5],1]"
    assert seq_a.render(hb, 5, NOW) == b'[5,"hb",2]'
    assert seq_a.render(cs, 5, NOW) == b'[5,"cs",-1234,3]'
    assert seq_b.render(data, 5, NOW) == b"[5,[29999,1,0.5],1,1700000000123]"
    assert seq_b.render(cs, 5, NOW) is None
    assert seq_b.render(hb, 5, NOW) == b'[5,"hb",2,1700000000123]'
    assert seq_a.render(data, 6, NOW) == b"[6,[29999,1,0.5],4]"
    # an upstream timestamp wins over the local clock
    up_ts = BitfinexUpstream(OB_CHECKSUM | TIMESTAMP).on_upstream_frame(
        "[17,[1,1,1],1600000000000]"
    )
    assert isinstance(up_ts, ChannelData)
    assert seq_b.render(up_ts, 5, NOW) == b"[5,[1,1,1],3,1600000000000]"


def test_upstream_hello_subscribe_unsubscribe_ping_frames() -> None:
    up = D.open_upstream(D.upstream_flags_for([0, TIMESTAMP | SEQ_ALL]))
    assert json.loads(up.hello()[0]) == {"event": "conf", "flags": OB_CHECKSUM | TIMESTAMP}
    key = subscribe(session(), channel="book", pair="BTCUSD", prec="R0").key
    assert json.loads(up.subscribe_frame(key, 77)) == {
        "event": "subscribe",
        "channel": "book",
        "symbol": "tBTCUSD",
        "prec": "R0",
        "freq": "F0",
        "len": "25",
        "subId": "77",
    }
    ckey = subscribe(session(), channel="candles", key="trade:1m:tBTCUSD").key
    assert json.loads(up.subscribe_frame(ckey, 1))["key"] == "trade:1m:tBTCUSD"
    assert json.loads(up.unsubscribe_frame(key, 301, 2)) == {"event": "unsubscribe", "chanId": 301}
    assert json.loads(up.ping_frame(9) or "") == {"event": "ping", "cid": 9}
    assert D.upstream_flags_for([]) == OB_CHECKSUM


def test_upstream_event_classification() -> None:
    up = BitfinexUpstream()
    key = subscribe(session(), channel="book", symbol="tBTCUSD").key
    info = up.on_upstream_frame(
        '{"event":"info","version":2,"serverId":"x","platform":{"status":0}}'
    )
    assert info == Info(InfoAction.CONNECTED, None, "", 2, 0)
    for code, action in (
        (20051, InfoAction.RECONNECT),
        (20060, InfoAction.MAINTENANCE_START),
        (20061, InfoAction.MAINTENANCE_END),
        (20999, InfoAction.OTHER),
    ):
        ev = up.on_upstream_frame(json.dumps({"event": "info", "code": code, "msg": "m"}))
        assert isinstance(ev, Info) and ev.action is action and ev.code == code
    sub = up.on_upstream_frame(
        '{"event":"subscribed","channel":"book","chanId":301,"symbol":"tBTCUSD","prec":"P0",'
        '"freq":"F0","len":"25","subId":"77","pair":"BTCUSD"}'
    )
    assert sub == Subscribed(key, 301, 77)
    assert up.on_upstream_frame('{"event":"unsubscribed","status":"OK","chanId":301}') == (
        Unsubscribed(301)
    )
    full = up.on_upstream_frame(
        '{"event":"error","msg":"subscribe: limit","code":10305,"channel":"book",'
        '"symbol":"tBTCUSD","subId":"78"}'
    )
    assert full == SubscribeFailed(10305, "subscribe: limit", ErrorAction.PLACE_ELSEWHERE, key, 78)
    dup = up.on_upstream_frame(
        '{"event":"error","msg":"subscribe: dup","code":10301,"channel":"book","symbol":"tBTCUSD"}'
    )
    assert isinstance(dup, SubscribeFailed) and dup.action is ErrorAction.ALREADY_SUBSCRIBED
    unknown = up.on_upstream_frame(
        '{"event":"error","msg":"symbol: invalid","code":10300,"channel":"ticker",'
        '"symbol":"tZZZQQQ"}'
    )
    assert isinstance(unknown, SubscribeFailed)
    assert unknown.action is ErrorAction.FAIL_SUBSCRIPTION and unknown.key is not None
    assert up.on_upstream_frame('{"event":"pong","ts":1511545528111,"cid":1234}') == Pong(
        1234, 1511545528111
    )
    assert up.on_upstream_frame('{"event":"conf","status":"OK","flags":131072}') == ConfAck(
        131072, True
    )
    auth = '{"event":"auth","status":"FAILED","msg":"nonce: small","code":10100}'
    assert up.on_upstream_frame(auth) == AuthReply(auth, False)
    assert isinstance(up.on_upstream_frame("[oops"), Unrecognized)
    assert isinstance(up.on_upstream_frame("{oops"), Unrecognized)
    assert isinstance(up.on_upstream_frame('{"event":"weird"}'), Unrecognized)


def test_cadence_and_dedup_ids() -> None:
    key = subscribe(session(), channel="trades", symbol="tBTCUSD").key
    assert D.cadence(key) == 15.0
    up = BitfinexUpstream()
    te = up.on_upstream_frame('[9,"te",[401597395,1574694478808,0.005,7245.3]]')
    tu = up.on_upstream_frame('[9,"tu",[401597395,1574694478808,0.005,7245.3]]')
    snap = up.on_upstream_frame("[9,[[401597395,1574694478808,0.005,7245.3]]]")
    hb = up.on_upstream_frame('[9,"hb"]')
    assert isinstance(te, ChannelData) and isinstance(tu, ChannelData)
    assert isinstance(snap, ChannelData) and isinstance(hb, ChannelData)
    assert D.dedup_id(te) == 2 * 401597395
    assert D.dedup_id(tu) == 2 * 401597395 + 1
    assert D.dedup_id(snap) is None and D.dedup_id(hb) is None


def test_repr_is_informative() -> None:
    s = session()
    sub = subscribe(s, channel="ticker", symbol="tBTCUSD")
    s.render_subscribed(sub, 1)
    assert "active=1" in repr(s)
    assert "flags=131072" in repr(BitfinexUpstream())
    assert str(sub.key) == "bitfinex:ticker:tBTCUSD" and sub.key.dialect is DialectName.BITFINEX


def test_session_statistics_and_subscriptions() -> None:
    s = session()
    a = subscribe(s, channel="ticker", symbol="tBTCUSD")
    b = subscribe(s, channel="trades", symbol="tBTCUSD")
    s.render_subscribed(a, 1)
    s.on_client_message("garbage", NOW)
    s.on_client_message(json.dumps({"event": "conf", "flags": SEQ_ALL}), NOW)
    assert set(s.subscriptions()) == {a.key, b.key}
    stats = s.statistics()
    assert (stats.messages, stats.errors, stats.subscriptions, stats.flags) == (4, 1, 2, SEQ_ALL)
