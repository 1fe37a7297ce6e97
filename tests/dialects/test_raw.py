"""Raw dialect: an opaque 1:1 relay with a dedicated upstream per session."""

from __future__ import annotations

from wsgate.core.types import DialectName
from wsgate.dialects.base import (
    ChannelData,
    Dialect,
    FrameForm,
    Integrity,
    Relay,
    SessionCodec,
    SubKey,
)
from wsgate.dialects.raw import RawDialect

D = RawDialect()


def test_raw_relays_everything_untouched() -> None:
    assert isinstance(D, Dialect) and D.shared is False
    s = D.open_session("/anything", "a=1")
    assert isinstance(s, SessionCodec)
    assert s.on_open(0.0) == [] and s.greeting() == []
    for frame in ("{not json", '{"op":"subscribe"}', "29999.0"):
        assert s.on_client_message(frame, 0.0) == [Relay(frame)]
    assert "messages=3" in repr(s)


def test_raw_upstream_frames_pass_byte_for_byte() -> None:
    up = D.open_upstream()
    frame = "[17,[29999,1,0.00001,1e-8]]"
    ev = up.on_upstream_frame(frame)
    assert isinstance(ev, ChannelData)
    assert D.rewrite(ev, 99, FrameForm.PLAIN) == frame.encode()
    assert D.open_session("/").render(ev, 99, 0.0) == frame.encode()
    assert up.ping_frame(1) is None
    state = D.new_state(SubKey(DialectName.RAW, "raw", ""))
    assert state.apply(ev) is Integrity.OK and state.snapshot_event() is None
    assert D.cadence(state.key) is None and D.dedup_id(ev) is None


def test_registry_returns_each_dialect_by_name() -> None:
    from wsgate.dialects.registry import dialect_for

    for name in DialectName:
        d = dialect_for(name)
        assert isinstance(d, Dialect) and d.name is name
    assert dialect_for("binance").url_suffix == "/stream"
