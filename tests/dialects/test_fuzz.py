"""Property tests: garbage from clients or exchanges never raises out of a codec."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wsgate.dialects.base import ChannelData, Close, Error, Unrecognized
from wsgate.dialects.binance import BinanceDialect
from wsgate.dialects.bitfinex import BitfinexDialect, BitfinexUpstream

BFX = BitfinexDialect()
BNC = BinanceDialect()

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
# Objects without a recognised verb: a codec may only answer with an error or a close.
verbless = st.dictionaries(
    st.text(max_size=6).filter(lambda k: k not in ("event", "method")), json_values, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_garbage_client_text_yields_only_error_or_close(garbage: str | bytes) -> None:
    try:
        json.loads(garbage)
        return  # valid JSON is covered by the structured tests below
    except (ValueError, TypeError):
        pass
    for dialect in (BFX, BNC):
        session = dialect.open_session("/ws" if dialect is BNC else "/")
        intents = session.on_client_message(garbage, 1.0)
        assert intents and all(isinstance(i, Error | Close) for i in intents)


@settings(max_examples=300, deadline=None)
@given(verbless, st.floats(min_value=0, max_value=1e6))
def test_verbless_objects_yield_only_error_or_close(obj: dict[str, Any], now: float) -> None:
    text = json.dumps(obj)
    for dialect in (BFX, BNC):
        session = dialect.open_session("/ws" if dialect is BNC else "/")
        intents = session.on_client_message(text, now)
        assert intents and all(isinstance(i, Error | Close) for i in intents)


@settings(max_examples=300, deadline=None)
@given(
    json_values,
    st.sampled_from(
        [
            "subscribe",
            "unsubscribe",
            "conf",
            "ping",
            "SUBSCRIBE",
            "UNSUBSCRIBE",
            "SET_PROPERTY",
            "GET_PROPERTY",
        ]
    ),
)
def test_random_fields_on_known_verbs_never_raise(value: Any, verb: str) -> None:
    for dialect in (BFX, BNC):
        session = dialect.open_session("/ws" if dialect is BNC else "/")
        for msg in (
            {"event": verb, "channel": value, "symbol": value, "chanId": value, "flags": value},
            {"method": verb, "params": value, "id": value},
            {"event": verb, "channel": "book", "symbol": "tBTCUSD", "prec": value, "len": value},
        ):
            assert isinstance(session.on_client_message(json.dumps(msg), 0.0), list)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_garbage_upstream_frames_never_raise(text: str) -> None:
    for up in (BitfinexUpstream(131072 | 32768 | 65536), BNC.open_upstream()):
        ev = up.on_upstream_frame(text)
        assert ev is not None
        if isinstance(ev, ChannelData):
            assert 0 <= ev.start <= ev.end <= len(ev.text)
    assert isinstance(BitfinexUpstream().on_upstream_frame("[x" + text), Unrecognized)
