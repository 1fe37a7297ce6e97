"""OKX v5 codec: requests and acks per bot, the arg locator, the seqId chain, coalescing."""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dialects.jsonfmt import formatted, json_values
from wsgate.dialects.base import (
    Auth,
    ChannelData,
    DataKind,
    Error,
    ErrorAction,
    Info,
    InfoAction,
    Integrity,
    Pong,
    Reply,
    Subscribe,
    Subscribed,
    SubscribeFailed,
    Unsubscribe,
)
from wsgate.dialects.okx import OkxDialect, OkxState, OkxUpstream, arg_key

D = OkxDialect()


def key(channel: str, inst: str = "BTC-USDT") -> Any:
    k = arg_key({"channel": channel, "instId": inst})
    assert k is not None
    return k


def test_subscribe_acks_per_arg_with_the_bots_id_and_errors_in_okx_form() -> None:
    s = D.open_session("/ws/v5/public")
    out = s.on_client_message(
        '{"id":"7","op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},'
        '{"channel":"trades","instId":"ETH-USDT"}]}',
        0.0,
    )
    subs = [i for i in out if isinstance(i, Subscribe)]
    assert [i.key.name for i in subs] == ["books:BTC-USDT", "trades:ETH-USDT"]
    ack = json.loads(s.render_subscribed(subs[0], 0) or "")
    assert ack == {
        "id": "7",
        "event": "subscribe",
        "arg": {"channel": "books", "instId": "BTC-USDT"},
        "connId": s.conn_id,
    }
    assert s.on_client_message("ping", 0.1) == [Reply("pong")]
    bad = s.on_client_message('{"op":"subscribe","args":[{"channel":"nope","instId":"X-Y"}]}', 0.2)
    assert isinstance(bad[0], Error) and json.loads(bad[0].frame)["code"] == "60018"
    un = s.on_client_message(
        '{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}', 0.3
    )
    assert json.loads(un[0].frame)["event"] == "unsubscribe"  # type: ignore[union-attr]
    assert isinstance(un[1], Unsubscribe)
    assert json.loads(s.on_client_message("{", 0.4)[0].frame)["code"] == "60012"  # type: ignore[union-attr]


def test_the_480_ops_an_hour_limit_per_session() -> None:
    s = D.open_session("/ws/v5/public")
    msg = '{"op":"unsubscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}'
    for i in range(480):
        assert not isinstance(s.on_client_message(msg, float(i))[0], Error)
    assert json.loads(s.on_client_message(msg, 500.0)[0].frame)["code"] == "60014"  # type: ignore[union-attr]
    assert not isinstance(s.on_client_message(msg, 3601.0)[0], Error)  # the hour moved on


def test_private_paths_are_relays() -> None:
    assert D.open_session("/ws/v5/private").on_open(0) == [Auth("", "/ws/v5/private")]


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    channel=st.sampled_from(["books", "trades", "tickers"]),
    inst=st.sampled_from(["BTC-USDT", "ETH-USDT-SWAP"]),
    items=st.lists(st.dictionaries(st.text(max_size=4), json_values, max_size=4), max_size=3),
)
def test_locator_over_any_valid_formatting(
    data: st.DataObject, channel: str, inst: str, items: list[dict[str, Any]]
) -> None:
    body: dict[str, Any] = {"arg": {"channel": channel, "instId": inst}, "data": items}
    if data.draw(st.booleans()):
        body["action"] = "update"
    frame = data.draw(formatted(body))
    ev = OkxUpstream().on_upstream_frame(frame)
    assert isinstance(ev, ChannelData), ev
    assert ev.channel == f"{channel}:{inst}"
    sliced = ev.text[ev.start : ev.end]
    assert sliced in frame and json.loads(sliced) == body  # as written, whitespace around cut


def test_upstream_events() -> None:
    up = OkxUpstream()
    assert up.subscribe_frame(key("books"), 5) == (
        '{"id":"5","op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}'
    )
    ack = up.on_upstream_frame(
        '{"id":"5","event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a"}'
    )
    assert ack == Subscribed(key("books"), "books:BTC-USDT", 5)
    up.subscribe_frame(key("trades", "NOPE-X"), 6)
    err = up.on_upstream_frame('{"id":"6","event":"error","code":"60018","msg":"no","connId":"a"}')
    assert isinstance(err, SubscribeFailed) and err.key == key("trades", "NOPE-X")
    up.ping_frame(9)
    assert up.on_upstream_frame("pong") == Pong(9, None)
    notice = up.on_upstream_frame('{"event":"notice","code":"64008","msg":"upgrade","connId":"a"}')
    assert isinstance(notice, Info) and notice.action is InfoAction.RECONNECT
    assert notice.code is None  # not forwarded: the bots' sessions do not move


def test_coalescing_folds_queued_requests_of_one_op() -> None:
    up = OkxUpstream()
    first = up.subscribe_frame(key("books"), 1)
    queue = deque(
        [
            up.subscribe_frame(key("trades"), 2),
            up.subscribe_frame(key("tickers"), 3),
            up.unsubscribe_frame(key("books5"), "books5:BTC-USDT", 4),
        ]
    )
    merged = json.loads(up.coalesce(first, queue))
    assert merged["op"] == "subscribe" and [a["channel"] for a in merged["args"]] == [
        "books",
        "trades",
        "tickers",
    ]
    assert len(queue) == 1  # the unsubscribe is another op: it goes on its own
    assert up.coalesce("ping", deque()) == "ping"


def test_an_error_for_a_merged_request_refuses_the_named_arg_and_resends_the_others() -> None:
    up = OkxUpstream()
    bad = key("trades", "FOO-USDT")
    first = up.subscribe_frame(key("trades"), 1)
    queue = deque([up.subscribe_frame(bad, 2), up.subscribe_frame(key("books"), 3)])
    up.coalesce(first, queue)
    msg = (
        "Wrong URL or channel:trades,instId:FOO-USDT doesn't exist. Please use the correct"
        " URL, channel and parameters referring to API document."
    )
    err = json.dumps({"id": "1", "event": "error", "code": "60018", "msg": msg, "connId": "x"})
    ev = up.on_upstream_frame(err)
    assert isinstance(ev, SubscribeFailed)
    assert ev.action is ErrorAction.FAIL_SUBSCRIPTION and ev.key == bad
    assert set(ev.retry) == {key("trades"), key("books")}
    # a request of one arg: that arg is refused, nothing to resend
    up.subscribe_frame(bad, 4)
    ev = up.on_upstream_frame(err.replace('"1"', '"4"'))
    assert isinstance(ev, SubscribeFailed) and ev.key == bad and ev.retry == ()


def _book(action: str, seq: int, prev: int, bids: list[list[str]] | None = None) -> ChannelData:
    push = {"asks": [], "bids": bids or [], "ts": "1", "checksum": 0, "seqId": seq}
    push["prevSeqId"] = prev
    arg = {"channel": "books", "instId": "BTC-USDT"}
    text = json.dumps({"arg": arg, "action": action, "data": [push]})
    return ChannelData("books:BTC-USDT", DataKind.DATA, text, 0, len(text))


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    seqs=st.lists(st.integers(1, 10**12), min_size=3, max_size=30, unique=True).map(sorted),
)
def test_seq_chain_gap_exactly_where_a_push_is_missing(
    data: st.DataObject, seqs: list[int]
) -> None:
    state = OkxState(key("books"))
    assert state.apply(_book("snapshot", seqs[0], -1, [["100", "1", "0", "1"]])) is Integrity.OK
    pushes = list(itertools.pairwise(seqs))  # (prev, seq)
    missing = data.draw(st.integers(0, len(pushes) - 1))
    for i, (prev, seq) in enumerate(pushes):
        if i == missing:
            continue
        verdict = state.apply(_book("update", seq, prev))
        if i < missing:
            assert verdict is Integrity.OK
        else:
            assert verdict is Integrity.MISMATCH  # resubscribe: a fresh snapshot for everyone
            return


def test_late_joiner_snapshot_is_the_book_at_the_last_seq() -> None:
    state = OkxState(key("books"))
    state.apply(_book("snapshot", 10, -1, [["100", "1", "0", "1"], ["99", "2", "0", "1"]]))
    state.apply(_book("update", 11, 10, [["100", "0", "0", "0"], ["98", "3", "0", "2"]]))
    snap = state.snapshot_event()
    assert snap is not None
    msg = json.loads(snap.text)
    assert msg["action"] == "snapshot" and msg["arg"] == {"channel": "books", "instId": "BTC-USDT"}
    push = msg["data"][0]
    assert (push["seqId"], push["prevSeqId"], push["checksum"]) == (11, -1, 0)
    assert push["bids"] == [["99", "2", "0", "1"], ["98", "3", "0", "2"]]
    state.reset()
    assert state.snapshot_event() is None


def test_dedup_ids() -> None:
    trade = (
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"tradeId":"130639474","px":"1"}]}'
    )
    ev = OkxUpstream().on_upstream_frame(trade)
    assert isinstance(ev, ChannelData) and D.dedup_id(ev) == 130639474
    assert D.dedup_id(_book("update", 77, 76)) == 77


def test_a_hand_over_snapshot_continues_the_bots_seq_chain_instead_of_resetting_it() -> None:
    """The bots' book is at seqId 11. A newer snapshot (15) becomes one update chained on 11
    that turns their book into it; an older one (9) is dropped and the updates up to 11
    are duplicates, the next one chains on."""
    bids = [["100", "1", "0", "1"], ["99", "2", "0", "1"]]
    state = OkxState(key("books"))
    state.apply(_book("snapshot", 10, -1, bids))
    state.apply(_book("update", 11, 10, [["98", "3", "0", "2"]]))
    (upd,) = state.rebase(
        _book("snapshot", 15, -1, [["100", "4", "0", "1"], ["98", "3", "0", "2"]])
    )
    push = json.loads(upd.text)["data"][0]
    assert json.loads(upd.text)["action"] == "update"
    assert (push["prevSeqId"], push["seqId"]) == (11, 15)
    assert push["bids"] == [["99", "0", "0", "0"], ["100", "4", "0", "1"]]  # 98 unchanged
    assert state.apply(_book("update", 16, 15)) is Integrity.OK  # the chain goes on

    older = OkxState(key("books"))
    older.apply(_book("snapshot", 10, -1, bids))
    older.apply(_book("update", 11, 10))
    assert older.rebase(_book("snapshot", 9, -1, bids)) == []
    assert older.apply(_book("update", 10, 9)) is Integrity.DUPLICATE
    assert older.apply(_book("update", 11, 10)) is Integrity.DUPLICATE
    assert older.apply(_book("update", 12, 11)) is Integrity.OK
    assert older.apply(_book("update", 12, 12)) is Integrity.OK  # OKX's "no change" push
    # Not a book with a seqId yet, or not a snapshot: applied as usual.
    assert OkxState(key("books")).rebase(_book("snapshot", 9, -1, bids)) is None
    assert older.rebase(_book("update", 13, 12)) is None
