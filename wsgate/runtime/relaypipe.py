"""The relay's per-read step: a read made only of whole data frames, written verbatim.

A relayed session's hot path is one ``data_received`` per frame: scan the read's frame
headers, check the peer is writable, write the read to the peer's transport, count.
Written in Python that is ~15 calls per frame, which on a cold interpreter (1k frames/s)
cost ~20-30 µs of latency over HAProxy (docs/BENCHMARKS.md, "Relay"). The C extension
``wsgate._relayfast`` does the same step with no Python frame; :class:`PyPipe` and
:func:`scan_frames` are its specification (tests/runtime/test_relayfast.py checks the C
against them on arbitrary byte streams).

The step alone still left a Python ``data_received`` frame and the bookkeeping after the
write on every read. :data:`PipedProtocol` removes both: a relayed connection's
transport gets it as its protocol (``transport.set_protocol``) once the relay starts, so
the transport calls C for a read, the pipe writes it, and nothing Python runs; a read
the pipe declines and every other callback go to the connection's Python protocol. The
pipe's counters (``frames``, ``bytes``, ``writes``) are the bookkeeping: the owners
fold them into their statistics when those are read (:class:`PyPipedProtocol` is the
specification).

:data:`Pipe` is the C type when it is built and not disabled (``WSGATE_PURE_PYTHON=1``),
else None: callers then keep their existing Python path (the frame handlers in
:mod:`wsgate.runtime.upstream.wsclient` and :mod:`wsgate.runtime.downstream.wsserver`).
Either way a read the pipe does not take -- a control frame, a partial or invalid
frame, a shut gate -- is written by nothing here and goes to that Python path.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "Pipe",
    "PipeFactory",
    "PipeLike",
    "PipedProtocol",
    "PipedProtocolLike",
    "PyPipe",
    "PyPipedProtocol",
    "piped_protocol",
    "scan_frames",
]


class PipeLike(Protocol):
    max_message: int | None  # settable: a reload lowers the frame limit of open sessions

    @property
    def frames(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def writes(self) -> int: ...
    def __call__(self, data: builtins.bytes, /) -> int: ...


# (transport, protocol, open_state, buffer_limit, max_message, masked, holds) -> pipe
PipeFactory = Callable[
    [Any, Any, object, int, int | None, bool, tuple[tuple[object, str], ...]], PipeLike
]


def scan_frames(data: bytes, masked: bool, max_message: int | None) -> int:
    """Whole valid data frames ``data`` is made of, exactly; else 0.

    ``masked`` (a bot's frames): mask bit required, opcodes 0/1/2 with any FIN (a
    fragmented message passes through fragmented). Unmasked (an exchange's frames): FIN
    text/binary only, mask bit refused. Reserved bits, an over-``max_message`` frame or a
    partial frame: 0 -- the frame parsers decide those, with websockets' close codes.
    """
    n = len(data)
    pos = 0
    count = 0
    while pos < n:
        if n - pos < 2:
            return 0
        b0 = data[pos]
        b1 = data[pos + 1]
        if masked:
            if not b1 & 0x80 or b0 & 0x70 or b0 & 0x0F > 2:
                return 0
        elif (b0 != 0x81 and b0 != 0x82) or b1 & 0x80:
            return 0
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if n - pos < 4:
                return 0
            length = (data[pos + 2] << 8) | data[pos + 3]
            head = 4
        elif length == 127:
            if n - pos < 10:
                return 0
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            head = 10
        if masked:
            head += 4
        if max_message is not None and length > max_message:
            return 0
        if pos + head + length > n:
            return 0
        pos += head + length
        count += 1
    return count


class PyPipe:
    """What the C ``Pipe`` does, in Python: the reference for the differential test.

    ``pipe(data)`` writes ``data`` to ``transport`` and returns its frame count when it is
    made only of whole valid frames (:func:`scan_frames`), ``protocol._state`` (what
    websockets' ``state`` property returns) is ``open_state``, every ``(object,
    attribute)`` in ``holds`` is falsy (a queue in front, a slow-consumer close, a
    greeting still to filter) and the transport's write buffer is within
    ``buffer_limit``; otherwise it writes nothing and returns 0.
    """

    def __init__(
        self,
        transport: Any,
        protocol: Any,
        open_state: object,
        buffer_limit: int,
        max_message: int | None,
        masked: bool,
        holds: tuple[tuple[object, str], ...] = (),
    ) -> None:
        if max_message is not None and max_message < 0:
            raise ValueError("max_message must be >= 0 or None")
        self._write = transport.write
        self._buffered = transport.get_write_buffer_size
        self._protocol = protocol
        self._open = open_state
        self._limit = buffer_limit
        self.max_message = max_message
        self._masked = masked
        self._holds = holds
        self.frames = 0
        self.bytes = 0
        self.writes = 0

    def __call__(self, data: bytes, /) -> int:
        count = scan_frames(data, self._masked, self.max_message)
        # ``_state``: websockets' ``state`` property is a Python call per read.
        if not count or self._protocol._state is not self._open:
            return 0
        for obj, name in self._holds:
            if getattr(obj, name):
                return 0
        if self._buffered() > self._limit:
            return 0
        self._write(data)
        self.frames += count
        self.bytes += len(data)
        self.writes += 1
        return count


class PipedProtocolLike(Protocol):
    armed: bool
    pipe: Any  # the pipe; None detaches it for good

    @property
    def protocol(self) -> Any: ...
    def data_received(self, data: builtins.bytes, /) -> None: ...


# (pipe, protocol, on_error) -> the transport's protocol for a relay
PipedProtocolFactory = Callable[[Any, Any, Callable[[BaseException], None]], PipedProtocolLike]


class PyPipedProtocol:
    """What the C ``PipedProtocol`` does, in Python: the reference for its tests.

    Installed with ``transport.set_protocol()`` once a relay starts, it is what the
    transport calls. ``data_received`` runs ``pipe`` on the read while ``armed`` (the
    Python ``protocol`` holds nothing the read could overtake: it disarms it while it
    does); a read the pipe does not take goes to ``protocol.data_received``, and so does
    every other callback. A pipe that raises (its write) reports to ``on_error`` and the
    read counts as taken, as a failed frame handler's does.
    """

    def __init__(
        self, pipe: PipeLike, protocol: Any, on_error: Callable[[BaseException], None]
    ) -> None:
        self.pipe: PipeLike | None = pipe
        self._protocol = protocol
        self._on_error = on_error
        self.armed = False

    @property
    def protocol(self) -> Any:
        return self._protocol

    def data_received(self, data: bytes, /) -> None:
        pipe = self.pipe
        if self.armed and pipe is not None and type(data) is bytes:
            try:
                if pipe(data):
                    return
            except Exception as exc:
                self._on_error(exc)
                return
        self._protocol.data_received(data)

    def connection_made(self, transport: Any, /) -> None:
        self._protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None, /) -> None:
        self._protocol.connection_lost(exc)

    def eof_received(self) -> bool | None:
        result: bool | None = self._protocol.eof_received()
        return result

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


def piped_protocol(
    pipe: PipeLike, protocol: Any, on_error: Callable[[BaseException], None]
) -> PipedProtocolLike:
    """The relay protocol for ``pipe``: C for a C pipe, else its Python specification."""
    if PipedProtocol is not None and Pipe is not None and isinstance(pipe, Pipe):  # type: ignore[arg-type]
        return PipedProtocol(pipe, protocol, on_error)
    return PyPipedProtocol(pipe, protocol, on_error)


def _load() -> tuple[PipeFactory, PipedProtocolFactory] | None:
    if os.environ.get("WSGATE_PURE_PYTHON"):
        return None
    try:
        from wsgate._relayfast import Pipe as CPipe
        from wsgate._relayfast import PipedProtocol as CPipedProtocol
    except ImportError:  # not built (no compiler at install time): the Python path serves
        return None
    return CPipe, CPipedProtocol


_built = _load()
Pipe: PipeFactory | None = _built[0] if _built else None
"""The C pipe type, or None (not built, or ``WSGATE_PURE_PYTHON`` set)."""
PipedProtocol: PipedProtocolFactory | None = _built[1] if _built else None
"""The C relay protocol type (None exactly when :data:`Pipe` is)."""
