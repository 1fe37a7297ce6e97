"""framing.FrameReader against websockets' own parser (differential, hypothesis).

The reference is websockets' sans-I/O :class:`~websockets.protocol.Protocol` in the client
role, fed the same bytes: its frames are reassembled into messages the way its asyncio
layer does (UTF-8 checked when a text message completes). Both must produce the same
messages, the same control frames, and fail with the same close code -- for any split of
the byte stream, control frames between fragments, masked frames, every length encoding
(7-bit, 16-bit, 64-bit, minimal or not) and invalid frames.
"""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.protocol import Protocol, Side, State

from wsgate.runtime.framing import (
    Control,
    Failure,
    FrameReader,
    RawFrame,
    decode_frame,
    encode_text,
    whole_data_frames,
)

MAX = 70_000  # the size limit both sides get (some generated messages exceed it)


@dataclass(frozen=True)
class F:
    """One frame to put on the wire (possibly invalid)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = False
    length_form: int = 0  # 0 minimal, 16 or 64: the extended length even when not needed

    def wire(self) -> bytes:
        n = len(self.payload)
        b0 = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        mask = 0x80 if self.masked else 0
        form = self.length_form
        if form == 64 or n > 0xFFFF:
            head = struct.pack("!BBQ", b0, mask | 127, n)
        elif form == 16 or n > 125:
            head = struct.pack("!BBH", b0, mask | 126, n)
        else:
            head = bytes((b0, mask | n))
        if not self.masked:
            return head + self.payload
        key = b"\x01\x02\x03\x04"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(self.payload))


def reference(chunks: list[bytes], max_size: int | None) -> list[Any]:
    """What websockets makes of the stream, in FrameReader's vocabulary."""
    p = Protocol(Side.CLIENT, state=State.OPEN, max_size=max_size)
    out: list[Any] = []
    frag: list[bytes] | None = None
    text = False
    for chunk in chunks:
        p.receive_data(chunk)
        for fr in p.events_received():
            op = int(fr.opcode)
            if op >= 8:
                out.append(("control", op, bytes(fr.data)))
                if op == 8:
                    return out
                continue
            if op in (1, 2):
                frag, text = [bytes(fr.data)], op == 1
            else:
                assert frag is not None
                frag.append(bytes(fr.data))
            if fr.fin:
                payload = b"".join(frag)
                frag = None
                if text:
                    try:
                        out.append(payload.decode())
                    except UnicodeDecodeError:
                        out.append(("fail", 1007))
                        return out
                else:
                    out.append(payload)
        if p.close_sent is not None and p.state is not State.OPEN:
            out.append(("fail", int(p.close_sent.code)))
            return out
    return out


def ours(chunks: list[bytes], max_size: int | None) -> list[Any]:
    r = FrameReader(max_size)
    out: list[Any] = []
    for chunk in chunks:
        for ev in r.feed(chunk):
            if isinstance(ev, Control):
                length = ev.frame[1] & 0x7F
                start = 2 if length < 126 else 4 if length == 126 else 10
                out.append(("control", ev.opcode, ev.frame[start:]))
            elif isinstance(ev, Failure):
                out.append(("fail", ev.code))
            else:
                assert not isinstance(ev, RawFrame)
                out.append(ev)
        if r.stopped:
            return out
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -------------------------------------------------------------------------- strategies
sizes = st.one_of(
    st.integers(0, 130),
    st.sampled_from([125, 126, 127, 65_535, 65_536, MAX + 1]),
)
text_payloads = st.text(max_size=60).map(str.encode)
payload = st.one_of(
    text_payloads,
    sizes.map(lambda n: os.urandom(n)),
    st.binary(max_size=40),
)


@st.composite
def frame(draw: st.DrawFn, *, valid: bool) -> F:
    if valid:
        opcode = draw(st.sampled_from([1, 2, 9, 10]))
    else:
        opcode = draw(st.sampled_from([0, 1, 2, 3, 7, 8, 9, 10, 11, 15]))
    if opcode >= 8 and valid:
        body = draw(st.binary(max_size=125))
    elif opcode == 8:
        body = draw(st.sampled_from([b"", b"\x03\xe8", b"\x03\xe8bye"]))
    elif opcode == 1 and valid:
        body = draw(text_payloads)
    else:
        body = draw(payload)
    return F(
        opcode,
        body,
        fin=True if valid else draw(st.booleans()),
        rsv=0 if valid else draw(st.sampled_from([0, 0, 0, 1, 4])),
        masked=False if valid else draw(st.booleans()),
        length_form=draw(st.sampled_from([0, 0, 16, 64])),
    )


@st.composite
def message_frames(draw: st.DrawFn) -> list[F]:
    """One data message, maybe fragmented, with control frames between its fragments."""
    opcode = draw(st.sampled_from([1, 2]))
    body = draw(text_payloads if opcode == 1 else payload)
    n = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), min_size=n - 1, max_size=n - 1)))
    parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out: list[F] = []
    for i, part in enumerate(parts):
        out.append(F(opcode if i == 0 else 0, part, fin=i == len(parts) - 1))
        if i < len(parts) - 1 and draw(st.booleans()):
            out.append(draw(frame(valid=True).filter(lambda f: f.opcode >= 8)))
    return out


@st.composite
def stream(draw: st.DrawFn) -> bytes:
    frames: list[F] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["message", "message", "control", "invalid"]))
        if kind == "message":
            frames += draw(message_frames())
        elif kind == "control":
            frames.append(draw(frame(valid=True).filter(lambda f: f.opcode >= 8)))
        else:
            frames.append(draw(frame(valid=False)))
    return b"".join(f.wire() for f in frames)


# -------------------------------------------------------------------------- properties
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=stream(), cuts=st.lists(st.integers(0, 1 << 20), max_size=8))
@example(data=F(1, b"\xff").wire(), cuts=[])  # invalid UTF-8
@example(data=F(1, b"", fin=False).wire() + F(8, b"").wire(), cuts=[])  # close mid-message
@example(data=F(1, b"a", fin=False).wire() + F(8, b"\x03\xe8\xff").wire(), cuts=[2])
@example(data=F(1, b"ab", fin=False).wire() + F(9, b"p").wire() + F(0, b"c").wire(), cuts=[3])
@example(data=F(3, b"x" * 200).wire(), cuts=[])  # invalid opcode before too-big
@example(data=F(2, b"x" * (MAX + 1)).wire(), cuts=[1, 2, 5])  # too big, 64-bit length
def test_same_as_websockets_for_any_split(data: bytes, cuts: list[int]) -> None:
    chunks = split(data, cuts)
    assert ours(chunks, MAX) == reference(chunks, MAX)


@settings(max_examples=100, deadline=None)
@given(data=stream())
def test_unbounded_reader_agrees_too(data: bytes) -> None:
    assert ours([data], None) == reference([data], None)


def test_every_length_encoding_and_the_encoder_round_trip() -> None:
    for n in (0, 1, 125, 126, 127, 65_535, 65_536, 70_000):
        body = ("é" * n)[:n].encode()[:n]
        while True:  # cut on a character boundary
            try:
                text = body.decode()
                break
            except UnicodeDecodeError:
                body = body[:-1]
        frame_bytes = encode_text(text)
        r = FrameReader(None)
        assert r.feed(frame_bytes[:1]) == []
        assert r.feed(frame_bytes[1:]) == [text]
        assert whole_data_frames(frame_bytes * 2, None) == 2
        assert decode_frame(frame_bytes) == text
    for form in (16, 64):
        assert FrameReader(None).feed(F(2, b"abc", length_form=form).wire()) == [b"abc"]


def test_raw_reader_hands_whole_frames_as_received() -> None:
    a, b = encode_text("one"), encode_text("two")
    r = FrameReader(100, raw=True)
    assert r.feed(a + b[:2]) == [RawFrame(a)]
    assert r.feed(b[2:]) == [RawFrame(b)]
    assert whole_data_frames(a + b[:-1], 100) == 0  # partial: the reader's job
    assert whole_data_frames(a + F(9, b"").wire(), 100) == 0  # a control frame
    assert whole_data_frames(F(1, b"x", masked=True).wire(), 100) == 0
    assert isinstance(decode_frame(F(1, b"\xff").wire()), Failure)


def test_after_a_close_frame_the_rest_is_kept_for_the_protocol() -> None:
    close = F(8, b"\x03\xe8").wire()
    r = FrameReader(None)
    events = r.feed(encode_text("a") + close + encode_text("late"))
    assert events[0] == "a" and isinstance(events[1], Control) and events[1].opcode == 8
    assert r.stopped and r.rest() == encode_text("late")
    assert r.feed(b"more") == [] and r.rest() == b"more"
