"""Property tests: any valid JSON formatting of a real frame is routed and sliced exactly.

Frames shaped like the exchanges' own are generated, then re-written the way another
server might write them: whitespace (spaces, tabs, newlines) at every place JSON allows it,
members in any order, strings with escapes (``\\uXXXX``, ``\\/``, escaped quotes), tricky
strings such as ``"stream"`` inside a value. The located routing key must be the real one,
and the forwarded bytes must parse to the same JSON value, number tokens included (book
checksums depend on the exchange's exact number text), without surrounding whitespace.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.core.types import DialectName
from wsgate.dialects.base import ChannelData, DataKind, FrameForm, Integrity, ServerShutdown, SubKey
from wsgate.dialects.binance import BinanceDialect, BinanceState, BinanceUpstream, parse_stream
from wsgate.dialects.binance_usdm import BinanceUsdmDialect
from wsgate.dialects.bitfinex import (
    OB_CHECKSUM,
    SEQ_ALL,
    TIMESTAMP,
    BitfinexDialect,
    BitfinexSession,
    BitfinexUpstream,
    is_info_event,
)
from wsgate.dialects.bitfinex_state import BookState, Num, load_raw
from wsgate.dialects.jsonspan import (
    WHITESPACE,
    elements,
    int_field,
    int_span,
    member_span,
    object_spans,
    value_end,
)

BFX = BitfinexDialect()
BNC = BinanceDialect()
USDM = BinanceUsdmDialect()

# ------------------------------------------------------------------ value trees and a random writer

numbers = st.from_regex(
    r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,8})?([eE][-+]?[0-9]{1,2})?", fullmatch=True
)
ints = st.integers(0, 10**12).map(lambda n: Num(str(n)))
# Strings a server might put in a value: what the locators must not be fooled by.
tricky = st.sampled_from(
    [
        '"stream":"btcusdt@trade"',
        '","data":{',
        '{"stream":"x","data":[]}',
        '"t":1,',
        '"U":5',
        "[1,2]",
        '"hb"',
        'say "hi"',
        "back\\slash",
        "tab\tnew\nline",
        "é/ü",
        "",
    ]
)
ws = st.sampled_from(["", "", " ", "  ", "\n", "\t", "\r\n", "\n    "])


def _string(draw: st.DrawFn, s: str) -> str:
    style = draw(st.sampled_from(["plain", "ascii", "unicode", "slash"]))
    if style == "plain":
        return json.dumps(s, ensure_ascii=False)
    if style == "ascii":
        return json.dumps(s)
    if style == "slash":
        return json.dumps(s, ensure_ascii=False).replace("/", "\\/")
    out = ['"']
    for ch in s:  # escape a random subset of characters as \uXXXX
        if ch in '"\\' or ord(ch) < 0x20 or draw(st.booleans()):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def write(draw: st.DrawFn, value: Any, *, shuffle: bool = True) -> str:
    """``value`` as JSON text in a randomly chosen valid formatting; Num tokens verbatim."""
    if isinstance(value, Num):
        return str.__str__(value)
    if isinstance(value, str):
        return _string(draw, value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        if not value:
            return "[" + draw(ws) + "]"
        inner = ("," + draw(ws)).join(draw(ws) + write(draw, v) + draw(ws) for v in value)
        return "[" + inner + "]"
    assert isinstance(value, dict)
    items = list(value.items())
    if shuffle:
        items = draw(st.permutations(items))
    if not items:
        return "{" + draw(ws) + "}"
    parts = [
        draw(ws) + _string(draw, k) + draw(ws) + ":" + draw(ws) + write(draw, v) + draw(ws)
        for k, v in items
    ]
    return "{" + ",".join(parts) + "}"


@st.composite
def formatted(draw: st.DrawFn, value: Any) -> str:
    return draw(ws) + write(draw, value) + draw(ws)


def compact(value: Any) -> str:
    if isinstance(value, Num):
        return str.__str__(value)
    if isinstance(value, list):
        return "[" + ",".join(compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + compact(v) for k, v in value.items()) + "}"
    return json.dumps(value)


def strip_ok(b: bytes | str) -> None:
    text = b.decode() if isinstance(b, bytes) else b
    assert text and text[0] not in WHITESPACE and text[-1] not in WHITESPACE, repr(text[:40])


# ------------------------------------------------------------------ real frames


num_strings = st.from_regex(r"[1-9][0-9]{0,5}\.[0-9]{2,8}", fullmatch=True)


def _num_str(draw: st.DrawFn) -> str:
    return draw(num_strings)


@st.composite
def binance_events(draw: st.DrawFn) -> tuple[str, Any]:
    """(stream name, payload) as Binance writes them (prices and quantities are strings)."""
    sym = draw(st.sampled_from(["btcusdt", "ethusdt", "bnbbtc"]))
    kind = draw(st.sampled_from(["trade", "aggTrade", "depth", "bookTicker", "arr"]))
    E, T = draw(ints), draw(ints)
    extra: dict[str, Any] = {}
    if draw(st.booleans()):  # a string field with content that looks like wrapper syntax
        extra["x"] = draw(tricky)
    if draw(st.booleans()):  # a nested object (before the routing key when members shuffle)
        extra["n"] = {"t": draw(ints), "u": [draw(ints)], "s": draw(tricky)}
    if kind == "trade":
        ev = {"e": "trade", "E": E, "s": sym.upper(), "t": draw(ints), "p": _num_str(draw)}
        ev |= {"q": _num_str(draw), "T": T, "m": draw(st.booleans()), "M": True, **extra}
        return f"{sym}@trade", ev
    if kind == "aggTrade":
        ev = {"e": "aggTrade", "E": E, "s": sym.upper(), "a": draw(ints), "p": _num_str(draw)}
        ev |= {"q": _num_str(draw), "f": draw(ints), "l": draw(ints), "T": T, **extra}
        return f"{sym}@aggTrade", ev
    if kind == "depth":
        first = draw(st.integers(1, 10**9))
        levels = st.lists(st.tuples(num_strings, num_strings).map(list), max_size=4)
        ev = {"e": "depthUpdate", "E": E, "s": sym.upper(), "U": Num(str(first))}
        ev |= {"u": Num(str(first + draw(st.integers(0, 50)))), "b": draw(levels)}
        ev |= {"a": draw(levels), **extra}
        return f"{sym}@depth@100ms", ev
    if kind == "bookTicker":
        ev = {"u": draw(ints), "s": sym.upper(), "b": _num_str(draw), "B": _num_str(draw)}
        return f"{sym}@bookTicker", ev | extra
    arr = [{"e": "24hrMiniTicker", "E": E, "s": sym.upper(), "c": _num_str(draw)}]
    return "!miniTicker@arr", arr


@st.composite
def binance_frames(draw: st.DrawFn) -> tuple[str, str, Any]:
    stream, payload = draw(binance_events())
    wrapper = {"stream": stream, "data": payload}
    text = draw(formatted(wrapper))
    return text, stream, payload


def _expected_int(payload: Any, key: str) -> int | None:
    if not isinstance(payload, dict) or key not in payload:
        return None
    return int(payload[key])


@settings(max_examples=400, deadline=None)
@given(binance_frames())
def test_binance_any_formatting_routes_and_slices_exactly(frame: tuple[str, str, Any]) -> None:
    text, stream, payload = frame
    up = BinanceUpstream()
    ev = up.on_upstream_frame(text)
    assert type(ev) is ChannelData, ev
    assert ev.channel == stream
    plain = BNC.rewrite(ev, 0, FrameForm.PLAIN)
    combined = BNC.rewrite(ev, 0, FrameForm.COMBINED)
    assert load_raw(plain) == payload  # numbers as the exchange wrote them
    assert load_raw(combined) == {"stream": stream, "data": payload}
    strip_ok(plain)
    strip_ok(combined)
    # Per-session rendering and late-joiner state slice the same way.
    session = BNC.open_session("/ws")
    assert session.render(ev, 0, 0.0) == plain
    key = parse_stream(stream)
    assert key is not None
    ident = BNC.dedup_id(ev)
    token = {"trade": "t", "aggTrade": "a", "depth": "u"}.get(key.channel)
    assert ident == (_expected_int(payload, token) if token else None)
    state = BNC.new_state(key)
    state.apply(ev)
    if isinstance(state, BinanceState) and state.diff_depth:
        assert state.last_update_id == _expected_int(payload, "u")


@settings(max_examples=150, deadline=None)
@given(binance_events(), st.data())
def test_binance_depth_chain_survives_formatting(ev: tuple[str, Any], data: st.DataObject) -> None:
    """U/u contiguity is read from the payload, not from a string that looks like it."""
    stream, payload = ev
    if not stream.endswith("@depth@100ms"):
        return
    key = parse_stream(stream)
    assert key is not None
    state = BinanceState(key)
    up = BinanceUpstream()
    u = int(payload["u"])
    nxt = dict(payload, U=Num(str(u + 1)), u=Num(str(u + 3)))
    for p in (payload, nxt):
        text = data.draw(formatted({"stream": stream, "data": p}))
        chan = up.on_upstream_frame(text)
        assert type(chan) is ChannelData
        assert state.apply(chan) is Integrity.OK
    assert state.last_update_id == u + 3


@settings(max_examples=200, deadline=None)
@given(binance_frames())
def test_binance_usdm_any_formatting_routes_and_slices_exactly(
    frame: tuple[str, str, Any],
) -> None:
    """USD-M futures use the same combined wrapper (and the same rules)."""
    text, stream, payload = frame
    ev = USDM.open_upstream().on_upstream_frame(text)
    assert type(ev) is ChannelData, ev
    assert ev.channel == stream
    plain = USDM.rewrite(ev, 0, FrameForm.PLAIN)
    combined = USDM.rewrite(ev, 0, FrameForm.COMBINED)
    assert load_raw(plain) == payload
    assert load_raw(combined) == {"stream": stream, "data": payload}
    strip_ok(plain)
    strip_ok(combined)
    if isinstance(payload, dict) and "u" in payload:
        assert int_field(ev.text, "u", ev.start, ev.end) == int(payload["u"])


def test_binance_spaced_wrapper_from_the_issue() -> None:
    text = (
        '{"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", '
        '"t": 12, "p": "0.001", "q": "100", "T": 1, "m": true, "M": true}}'
    )
    ev = BinanceUpstream().on_upstream_frame(text)
    assert type(ev) is ChannelData and ev.channel == "btcusdt@trade"
    plain = BNC.rewrite(ev, 0, FrameForm.PLAIN)
    assert plain.startswith(b'{"e": "trade"') and plain.endswith(b"true}")
    assert BNC.dedup_id(ev) == 12


def test_binance_data_first_fast_path_and_shutdown_in_any_form() -> None:
    ev = BinanceUpstream().on_upstream_frame('{"data":{"e":"trade","t":7},"stream":"ab@trade"}')
    assert type(ev) is ChannelData and ev.channel == "ab@trade"
    assert BNC.rewrite(ev, 0, FrameForm.PLAIN) == b'{"e":"trade","t":7}'
    assert BNC.dedup_id(ev) == 7
    for text in (
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}',
        '{ "data": {"e": "serverShutdown"}, "stream": "!serverShutdown" }',
        '{"e" : "serverShutdown", "E": 1}',
    ):
        assert isinstance(BinanceUpstream().on_upstream_frame(text), ServerShutdown), text


def test_binance_replies_in_any_form() -> None:
    up = BinanceUpstream()
    key = parse_stream("btcusdt@trade")
    assert key is not None
    up.subscribe_frame(key, 4)
    res = up.on_upstream_frame('{\n  "id": 4,\n  "result": null\n}\n')
    assert getattr(res, "subscribed", None) and res.subscribed[0].channel == "btcusdt@trade"  # type: ignore[union-attr]


# ------------------------------------------------------------------ Bitfinex


@st.composite
def bitfinex_payloads(draw: st.DrawFn) -> tuple[list[Any], DataKind]:
    """Payload elements after the chanId, as Bitfinex writes them (numbers, not strings)."""
    num = st.builds(Num, numbers)
    kind = draw(st.sampled_from(["hb", "cs", "te", "tu", "book", "bsnap", "ticker", "tsnap"]))
    if kind == "hb":
        return ["hb"], DataKind.HEARTBEAT
    if kind == "cs":
        return ["cs", Num(str(draw(st.integers(-(2**31), 2**31 - 1))))], DataKind.CHECKSUM
    trade = st.builds(lambda i, m, a, p: [i, m, a, p], ints, ints, num, num)
    if kind in ("te", "tu"):
        return [kind, draw(trade)], DataKind.DATA
    level = st.builds(lambda p, c, a: [p, c, a], num, num, num)
    if kind == "book":
        return [draw(level)], DataKind.DATA
    if kind == "bsnap":
        return [draw(st.lists(level, max_size=5))], DataKind.DATA
    if kind == "tsnap":
        return [draw(st.lists(trade, max_size=5))], DataKind.DATA
    return [draw(st.lists(num, min_size=10, max_size=10))], DataKind.DATA


@settings(max_examples=400, deadline=None)
@given(
    bitfinex_payloads(),
    st.integers(1, 99999),
    st.sampled_from([0, OB_CHECKSUM, OB_CHECKSUM | TIMESTAMP, OB_CHECKSUM | SEQ_ALL | TIMESTAMP]),
    st.data(),
)
def test_bitfinex_any_formatting_routes_and_slices_exactly(
    payload: tuple[list[Any], DataKind], chan: int, flags: int, data: st.DataObject
) -> None:
    elements_, kind = payload
    trailing: list[Any] = []
    if flags & SEQ_ALL:
        trailing.append(Num(str(data.draw(st.integers(1, 10**6)))))
    if flags & TIMESTAMP:
        trailing.append(Num(str(data.draw(st.integers(10**12, 2 * 10**12)))))
    frame = [Num(str(chan)), *elements_, *trailing]
    text = data.draw(formatted(frame))
    ev = BitfinexUpstream(flags).on_upstream_frame(text)
    assert type(ev) is ChannelData, (ev, text)
    assert ev.channel == chan and ev.kind is kind
    if flags & TIMESTAMP:
        assert ev.ts == str(trailing[-1])
    shared = BFX.rewrite(ev, 7, FrameForm.PLAIN)
    strip_ok(shared)
    assert load_raw(shared) == [Num("7"), *elements_]
    session = BitfinexSession()
    session.on_client_message(
        json.dumps({"event": "conf", "flags": SEQ_ALL | TIMESTAMP | OB_CHECKSUM}), 0.0
    )
    rendered = session.render(ev, 7, 1.5)
    assert rendered is not None
    strip_ok(rendered)
    out = load_raw(rendered)
    assert out[:-2] == [Num("7"), *elements_] and out[-2] == Num("1")
    if kind is DataKind.DATA and elements_[0] in ("te", "tu"):
        assert BFX.dedup_id(ev) == int(elements_[1][0]) * 2 + (elements_[0] == "tu")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(numbers, st.integers(1, 5), numbers), min_size=1, max_size=30), st.data())
def test_bitfinex_book_checksums_verify_in_any_formatting(
    levels: list[tuple[str, int, str]], data: st.DataObject
) -> None:
    key = SubKey(DialectName.BITFINEX, "book", "tBTCUSD", (("prec", "P0"),), "book:tBTCUSD")
    entries = [[Num(p), Num(str(c)), Num(a)] for p, c, a in levels if float(a) != 0]
    compact_state, formatted_state = BookState(key), BookState(key)
    up = BitfinexUpstream(OB_CHECKSUM)
    snap = [Num("5"), entries]
    compact_state.apply(up.on_upstream_frame(compact(snap)))  # type: ignore[arg-type]
    ev = up.on_upstream_frame(data.draw(formatted(snap)))
    assert type(ev) is ChannelData
    formatted_state.apply(ev)
    cs = compact_state.checksum()
    cs_ev = up.on_upstream_frame(data.draw(formatted([Num("5"), "cs", Num(str(cs))])))
    assert type(cs_ev) is ChannelData and cs_ev.kind is DataKind.CHECKSUM
    assert formatted_state.apply(cs_ev) is Integrity.OK
    f_snap, c_snap = formatted_state.snapshot_event(), compact_state.snapshot_event()
    assert f_snap is not None and c_snap is not None
    bfx = BitfinexDialect()
    assert bfx.rewrite(f_snap, 9, FrameForm.PLAIN) == bfx.rewrite(c_snap, 9, FrameForm.PLAIN)


def test_bitfinex_pretty_frame_and_escaped_tag() -> None:
    up = BitfinexUpstream(OB_CHECKSUM)
    ev = up.on_upstream_frame('[\n  17,\n  "hb"\n]\n')
    assert type(ev) is ChannelData and ev.kind is DataKind.HEARTBEAT
    assert BFX.rewrite(ev, 3, FrameForm.PLAIN) == b'[3,"hb"]'
    ev = up.on_upstream_frame('[17,"\\u0068b"]')
    assert type(ev) is ChannelData and ev.kind is DataKind.HEARTBEAT
    ev = up.on_upstream_frame('[17, "te", [5, 1700000000000, 0.1, 29999]]')
    assert type(ev) is ChannelData and BFX.dedup_id(ev) == 10
    shared = BFX.rewrite(ev, 3, FrameForm.PLAIN)
    assert shared.startswith(b'[3,"te",') and shared.endswith(b"29999]]")
    assert load_raw(shared) == [Num("3"), "te", [Num("5"), Num("1700000000000"), "0.1", "29999"]]
    info = up.on_upstream_frame('\n{ "event": "info", "version": 2 }')
    assert getattr(info, "version", None) == 2


# ------------------------------------------------------------------ the locator helpers themselves

NAMES = ["t", "u", "a", "stream", "data", "x"]
values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.builds(Num, numbers) | tricky,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["t", "u", "a", "stream", "data", "x"]), children, max_size=4
        )
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(NAMES), values), st.data())
def test_members_and_spans_match_the_parse(obj: dict[str, Any], data: st.DataObject) -> None:
    text = data.draw(formatted(obj))
    spans = object_spans(text)
    assert spans is not None
    seen = {name: load_raw(text[a:b]) for name, (a, b) in spans.items()}
    assert seen == obj
    for name in obj:
        span = member_span(text, name)
        assert span is not None and load_raw(text[span[0] : span[1]]) == obj[name]
    start = len(text) - len(text.lstrip(WHITESPACE))
    end = value_end(text, start)
    assert text[end:].strip(WHITESPACE) == ""
    for token in ('"t":', '"u":', '"a":'):
        found = int_span(text, start, end, token)
        value = obj.get(token[1:-2])
        is_int = isinstance(value, Num) and str(value).lstrip("-").isdigit()
        if is_int and not (len(str(value)) > 1 and str(value).lstrip("-").startswith("0")):
            assert found is not None and text[found[0] : found[1]] == value
        elif not is_int:
            assert found is None


@settings(max_examples=200, deadline=None)
@given(st.lists(values, max_size=6), st.data())
def test_elements_match_the_parse(items: list[Any], data: st.DataObject) -> None:
    text = data.draw(formatted(items))
    assert [load_raw(text[a:b]) for a, b in elements(text)] == items


def test_the_relay_recognises_a_greeting_in_any_formatting() -> None:
    for text in (
        '{"event":"info","version":2}',
        '{ "event": "info", "version": 2 }',
        '{\n  "version": 2,\n  "event": "info"\n}\n',
        '{"event":"\\u0069nfo"}',
    ):
        assert is_info_event(text), text
    for text in ('[0,"hb"]', '{"event":"auth","status":"OK"}', '{"msg":"info"}', "info"):
        assert not is_info_event(text), text
