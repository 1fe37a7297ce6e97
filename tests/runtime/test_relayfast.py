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
        self.state = state


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
    assert relaypipe._load() is _relayfast.Pipe
    monkeypatch.setenv("WSGATE_PURE_PYTHON", "1")
    assert relaypipe._load() is None
