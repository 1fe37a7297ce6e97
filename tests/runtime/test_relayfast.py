"""The C relay step (wsgate._relayfast) against its Python specification (relaypipe).

Differential, hypothesis: for arbitrary byte streams -- valid and invalid frames of every
opcode, masked or not, reserved bits, 7/16/64-bit lengths (minimal or not), garbage --
split anywhere, the C ``Pipe`` and :class:`~wsgate.runtime.relaypipe.PyPipe` return the
same counts, write the same bytes and keep the same counters, with gates (websockets'
state, holds, the transport's buffer) open or shut. ``scan`` also matches the reader's
own fast check (:func:`~wsgate.runtime.framing.whole_data_frames`) for server frames.
Then refcounts and memory stay flat over 100k calls, errors included.

The extension is built by every install (``pip install -e .``, ``make test``); if it is
missing this module fails rather than skips, so a broken build cannot go unnoticed.
"""

from __future__ import annotations

import gc
import itertools
import struct
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

try:
    from wsgate import _relayfast
except ImportError as exc:  # fail, not skip: CI must never lose these checks silently
    raise ImportError(
        "wsgate._relayfast is not built: reinstall (`make .venv/.installed`, or "
        "`pip install -e .` with a C compiler and the Python headers)"
    ) from exc
from wsgate.runtime import relaypipe
from wsgate.runtime.framing import whole_data_frames
from wsgate.runtime.relaypipe import PyPipe, scan_frames

OPEN, CLOSING = object(), object()
LIMITS = (None, 0, 1, 5, 125, 126, 200, 65_536)


class Transport:
    """A transport's write side: what was written, and a buffer size to report."""

    def __init__(self, buffered: int = 0, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionResetError("gone")
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Proto:
    def __init__(self, state: object) -> None:
        self._state = state  # as websockets' Protocol keeps it (``state`` is a property)


class Holder:
    def __init__(self, pending: list[bytes], slow: bool) -> None:
        self.pending = pending
        self.slow = slow


def _frame(
    opcode: int, fin: bool, rsv: int, masked: bool, payload: bytes, width: int, mask: bytes
) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if masked else 0
    if width == 7 and n < 126:
        head = bytes((b0, mbit | n))
    elif width <= 16 and n < 65536:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    return head + (mask if masked else b"") + payload


frames = st.builds(
    _frame,
    opcode=st.sampled_from([0, 1, 2, 1, 2, 3, 8, 9, 10, 15]),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 1, 4, 7]),
    masked=st.booleans(),
    payload=st.binary(max_size=300),
    width=st.sampled_from([7, 7, 16, 64]),
    mask=st.binary(min_size=4, max_size=4),
)
chunks = st.one_of(frames, st.binary(min_size=1, max_size=12))  # garbage between frames


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def _pair(masked: bool, limit: int | None, **gates: Any) -> tuple[Any, Any, list[Transport]]:
    made = []
    pipes = []
    for cls in (_relayfast.Pipe, PyPipe):
        t = Transport(gates.get("buffered", 0))
        holder = Holder(list(gates.get("pending", [])), gates.get("slow", False))
        holds = ((holder, "pending"), (holder, "slow"))
        proto = Proto(gates.get("state", OPEN))
        pipes.append(cls(t, proto, OPEN, 1000, limit, masked, holds))
        made.append(t)
    return pipes[0], pipes[1], made


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(chunks, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=6),
    masked=st.booleans(),
    limit=st.sampled_from(LIMITS),
)
@example(stream=[b"\x81\x05hello"], cuts=[], masked=False, limit=None)
@example(stream=[b"\x81\x85abcd\x01\x02\x03\x04\x05"], cuts=[], masked=True, limit=5)
def test_c_and_python_pipes_agree_on_any_stream_and_split(
    stream: list[bytes], cuts: list[int], masked: bool, limit: int | None
) -> None:
    data = b"".join(stream)
    c_pipe, py_pipe, (c_out, py_out) = _pair(masked, limit)
    for read in [data, *_splits(data, cuts)] if data else [b""]:
        assert _relayfast.scan(read, masked, limit) == scan_frames(read, masked, limit)
        assert c_pipe(read) == py_pipe(read)
    assert c_out.writes == py_out.writes
    assert (c_pipe.frames, c_pipe.bytes) == (py_pipe.frames, py_pipe.bytes)
    assert c_pipe.writes == py_pipe.writes == len(c_out.writes)
    assert c_pipe.bytes == sum(map(len, c_out.writes))
    if not masked:  # the reader's own check for server frames says the same
        assert _relayfast.scan(data, False, limit) == whole_data_frames(data, limit)


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(frames, min_size=1, max_size=4),
    masked=st.booleans(),
    state=st.sampled_from([OPEN, CLOSING]),
    pending=st.lists(st.just(b"x"), max_size=1),
    slow=st.booleans(),
    buffered=st.sampled_from([0, 1000, 1001]),
)
def test_gates_shut_the_c_pipe_like_the_python_one(
    stream: list[bytes],
    masked: bool,
    state: object,
    pending: list[bytes],
    slow: bool,
    buffered: int,
) -> None:
    data = b"".join(stream)
    gates = {"state": state, "pending": pending, "slow": slow, "buffered": buffered}
    c_pipe, py_pipe, (c_out, py_out) = _pair(masked, None, **gates)
    got = c_pipe(data)
    assert got == py_pipe(data)
    assert c_out.writes == py_out.writes
    shut = state is not OPEN or pending or slow or buffered > 1000
    if shut:
        assert got == 0 and c_out.writes == []


def test_a_write_that_raises_propagates_and_counts_nothing() -> None:
    for cls in (_relayfast.Pipe, PyPipe):
        pipe = cls(Transport(fail=True), Proto(OPEN), OPEN, 10, None, False, ())
        with pytest.raises(ConnectionResetError):
            pipe(b"\x81\x01a")
        assert (pipe.frames, pipe.bytes) == (0, 0)


def test_bad_arguments_are_refused_clearly() -> None:
    t, p = Transport(), Proto(OPEN)
    with pytest.raises(TypeError, match="bytes"):
        _relayfast.Pipe(t, p, OPEN, 10, None, False)(bytearray(b"\x81\x00"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holds"):
        _relayfast.Pipe(t, p, OPEN, 10, None, False, ((t,),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_message"):
        _relayfast.Pipe(t, p, OPEN, 10, -1, False)
    with pytest.raises(AttributeError):
        _relayfast.Pipe(object(), p, OPEN, 10, None, False)


def test_a_lowered_max_message_refuses_frames_the_pipe_passed_before() -> None:
    big = _frame(2, True, 0, True, b"\x00" * 2000, 16, b"abcd")
    for cls in (_relayfast.Pipe, PyPipe):
        t = Transport()
        pipe = cls(t, Proto(OPEN), OPEN, 1 << 20, None, True, ())
        assert pipe.max_message is None and pipe(big) == 1
        pipe.max_message = 1000  # a reload lowered gateway.max_message_bytes
        assert pipe.max_message == 1000 and pipe(big) == 0
        assert t.writes == [big]
        pipe.max_message = None
        assert pipe(big) == 1
    c_pipe = _relayfast.Pipe(Transport(), Proto(OPEN), OPEN, 10, None, True)
    with pytest.raises(ValueError, match="max_message"):
        c_pipe.max_message = -1
    with pytest.raises(AttributeError):
        del c_pipe.max_message


def test_refcounts_and_memory_stay_flat_over_100k_calls() -> None:
    ok = Transport()
    failing = Transport(fail=True)
    proto = Proto(OPEN)
    holder = Holder([], False)
    holds = ((holder, "pending"), (holder, "slow"))
    taken = _relayfast.Pipe(ok, proto, OPEN, 1 << 30, None, False, holds)
    raising = _relayfast.Pipe(failing, proto, OPEN, 1 << 30, None, False, holds)
    shut = _relayfast.Pipe(ok, Proto(CLOSING), OPEN, 1 << 30, None, False, holds)
    frame = b"\x81\x05hello"
    partial = b"\x81\x05hel"
    watched = (frame, partial, proto, holder, holder.pending, OPEN, ok, failing, holds)

    def burst(n: int) -> None:
        for _ in range(n):
            taken(frame)
            taken(partial)
            shut(frame)
            try:
                raising(frame)
            except ConnectionResetError:
                pass
            _relayfast.scan(frame, False, None)
        ok.writes.clear()

    burst(1000)  # warm-up: caches, interned strings
    gc.collect()
    counts = [sys.getrefcount(o) for o in watched]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        burst(100_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in watched] == counts
    assert grown < 64 * 1024, grown
    assert taken.frames == 101_000 and taken.bytes == 101_000 * len(frame)


def test_wsgate_pure_python_disables_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSGATE_PURE_PYTHON", raising=False)
    assert relaypipe._load() == (_relayfast.Pipe, _relayfast.PipedProtocol)
    monkeypatch.setenv("WSGATE_PURE_PYTHON", "1")
    assert relaypipe._load() is None


class Target:
    """A Python protocol behind the relay protocol: records every callback it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def data_received(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def connection_made(self, transport: object) -> None:
        self.calls.append(("made", transport))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))

    def eof_received(self) -> bool:
        self.calls.append(("eof", None))
        return True

    def pause_writing(self) -> None:
        self.calls.append(("pause", None))

    def resume_writing(self) -> None:
        self.calls.append(("resume", None))


def _protocols(masked: bool, limit: int | None, **gates: Any) -> list[tuple[Any, Target, Any]]:
    c_pipe, py_pipe, _ = _pair(masked, limit, **gates)
    made = []
    for cls, pipe in ((_relayfast.PipedProtocol, c_pipe), (relaypipe.PyPipedProtocol, py_pipe)):
        target = Target()
        errors: list[BaseException] = []
        made.append((cls(pipe, target, errors.append), target, errors))
    return made


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(chunks, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=6),
    masked=st.booleans(),
    limit=st.sampled_from(LIMITS),
    armed=st.lists(st.booleans(), min_size=1, max_size=8),
    state=st.sampled_from([OPEN, OPEN, CLOSING]),
)
def test_c_and_python_relay_protocols_agree_on_any_stream(
    stream: list[bytes],
    cuts: list[int],
    masked: bool,
    limit: int | None,
    armed: list[bool],
    state: object,
) -> None:
    """Every read goes either through the pipe (written, counted) or to the Python
    protocol, never both, never neither, the same way in C and in Python."""
    data = b"".join(stream)
    pair = _protocols(masked, limit, state=state)
    reads = _splits(data, cuts) if data else [b""]
    for proto, target, errors in pair:
        for i, read in enumerate(reads):
            proto.armed = armed[i % len(armed)]
            assert proto.armed is armed[i % len(armed)]
            writes, before, calls = proto.pipe.writes, proto.pipe.bytes, len(target.calls)
            proto.data_received(read)
            took = proto.pipe.writes == writes + 1
            assert proto.pipe.bytes - before == (len(read) if took else 0)
            handed = target.calls[calls:] == [("data", read)]
            assert took != handed, (took, handed)  # one or the other, never both
            assert took or len(target.calls) == calls + 1
        assert errors == []
    (c, c_target, _), (py, py_target, _) = pair
    assert c_target.calls == py_target.calls
    assert (c.pipe.frames, c.pipe.bytes, c.pipe.writes) == (
        py.pipe.frames,
        py.pipe.bytes,
        py.pipe.writes,
    )


def test_the_relay_protocol_hands_every_other_callback_to_python() -> None:
    for cls, pipe in (
        (_relayfast.PipedProtocol, _relayfast.Pipe(Transport(), Proto(OPEN), OPEN, 9, None, 0)),
        (relaypipe.PyPipedProtocol, PyPipe(Transport(), Proto(OPEN), OPEN, 9, None, False)),
    ):
        target = Target()
        proto = cls(pipe, target, print)
        assert proto.protocol is target and proto.pipe is pipe and proto.armed is False
        transport, exc = object(), ConnectionResetError("gone")
        proto.connection_made(transport)
        assert proto.eof_received() is True
        proto.pause_writing()
        proto.resume_writing()
        proto.connection_lost(exc)
        proto.connection_lost(None)
        assert target.calls == [
            ("made", transport),
            ("eof", None),
            ("pause", None),
            ("resume", None),
            ("lost", exc),
            ("lost", None),
        ]
        proto.armed = True
        proto.data_received(b"\x81\x01a")  # taken by the pipe
        assert pipe.frames == 1 and len(target.calls) == 6
        proto.pipe = None  # detached for good: the relay ended
        proto.data_received(b"\x81\x01a")
        assert proto.pipe is None and target.calls[-1] == ("data", b"\x81\x01a")


def test_a_failing_write_is_reported_and_the_read_counts_as_taken() -> None:
    for cls, pipe_cls in (
        (_relayfast.PipedProtocol, _relayfast.Pipe),
        (relaypipe.PyPipedProtocol, PyPipe),
    ):
        pipe = pipe_cls(Transport(fail=True), Proto(OPEN), OPEN, 9, None, False, ())
        target = Target()
        errors: list[BaseException] = []
        proto = cls(pipe, target, errors.append)
        proto.armed = True
        assert proto.data_received(b"\x81\x01a") is None
        assert [type(e) for e in errors] == [ConnectionResetError] and target.calls == []
        assert errors[0].__traceback__ is not None


def test_the_c_relay_protocol_refuses_bad_arguments_clearly() -> None:
    pipe = _relayfast.Pipe(Transport(), Proto(OPEN), OPEN, 9, None, False)
    with pytest.raises(TypeError):
        _relayfast.PipedProtocol(
            PyPipe(Transport(), Proto(OPEN), OPEN, 9, None, False), Target(), print
        )  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_error"):
        _relayfast.PipedProtocol(pipe, Target(), 1)
    proto = _relayfast.PipedProtocol(pipe, Target(), print)
    with pytest.raises(TypeError, match="pipe"):
        proto.pipe = object()  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        del proto.armed
    # A C pipe gets the C protocol, a Python pipe its Python specification.
    assert type(relaypipe.piped_protocol(pipe, Target(), print)) is _relayfast.PipedProtocol
    py = PyPipe(Transport(), Proto(OPEN), OPEN, 9, None, False)
    assert type(relaypipe.piped_protocol(py, Target(), print)) is relaypipe.PyPipedProtocol


def test_relay_protocol_refcounts_and_memory_stay_flat_over_100k_reads() -> None:
    ok, failing = Transport(), Transport(fail=True)
    proto = Proto(OPEN)
    target = Target()
    errors: list[BaseException] = []
    taking = _relayfast.PipedProtocol(
        _relayfast.Pipe(ok, proto, OPEN, 1 << 30, None, False), target, errors.append
    )
    raising = _relayfast.PipedProtocol(
        _relayfast.Pipe(failing, proto, OPEN, 1 << 30, None, False), target, errors.append
    )
    taking.armed = raising.armed = True
    frame, partial = b"\x81\x05hello", b"\x81\x05hel"
    watched = (frame, partial, proto, target, ok, failing, taking, raising, taking.pipe)

    def burst(n: int) -> None:
        for _ in range(n):
            taking.data_received(frame)
            taking.data_received(partial)  # declined: to the Python protocol
            raising.data_received(frame)  # reported to on_error
            taking.eof_received()
        ok.writes.clear()
        target.calls.clear()
        errors.clear()

    burst(1000)
    gc.collect()
    counts = [sys.getrefcount(o) for o in watched]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        burst(100_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in watched] == counts
    assert grown < 64 * 1024, grown
    pipe = taking.pipe
    assert pipe is not None and pipe.frames == pipe.writes == 101_000


def test_a_cycle_through_the_relay_protocol_is_collected() -> None:
    """The Python protocol holds its relay protocol (as the connections do): a cycle."""

    def alive() -> int:
        return sum(type(o) is _relayfast.PipedProtocol for o in gc.get_objects())

    gc.collect()
    before = alive()
    for _ in range(10):
        target = Target()
        proto = _relayfast.PipedProtocol(
            _relayfast.Pipe(Transport(), Proto(OPEN), OPEN, 9, None, False), target, print
        )
        target.held = proto  # type: ignore[attr-defined]
    assert alive() >= before + 9
    del target, proto
    gc.collect()
    assert alive() == before
