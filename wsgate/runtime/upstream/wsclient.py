"""A lean client-side WebSocket data path: websockets for the handshake, our parser for data.

websockets' asyncio client costs several microseconds per message on the way in: the
sans-I/O parser is a generator stepping through ``Frame.parse``, every frame builds
enum members and a ``Frame``, and every message crosses an assembler queue and wakes a
task awaiting ``recv()``. An upstream exchange feed is tens of thousands of small
frames per second, so that machinery dominated the daemon's CPU.

:class:`LeanClientConnection` is a drop-in ``create_connection`` factory for
``websockets.asyncio.client.connect``. websockets still does everything that is not
the per-frame data path: proxies, TLS, redirects, the opening handshake and its
errors (``InvalidStatus`` for a 429), sending (client frames are masked, RFC 6455
§5.3), pings and their RTT, the close handshake and the resulting ``ConnectionClosed``.
Once the server answered ``101``, :meth:`LeanClientConnection.data_received` hands the
bytes to the pure :class:`~wsgate.runtime.framing.FrameReader` (unmasked frames; 7/16/64-bit
lengths; fragmentation; UTF-8 validation; ``max_size``) and calls the handler synchronously
with the messages it returns — no queue, no future, no task switch per message. This
module only moves bytes and events; docs/ARCHITECTURE.md lists the websockets internals
it still touches. Control frames are handed to websockets'
own protocol byte for byte, so pings are answered with masked pongs, pongs resolve
``ping()`` waiters and a close frame runs the normal close handshake. A protocol
violation fails the connection the way websockets would (same close codes).

Fairness: one ``data_received`` call may hold hundreds of frames, each of which may
fan out to a thousand sessions. After :data:`SLICE_SECONDS` of work the reader pauses
the transport and continues on the next loop turn, so session flushes and other
connections are not starved and the event loop never stalls for seconds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.protocol import State

from wsgate.runtime.framing import (
    Control,
    Event,
    Failure,
    FrameReader,
    RawFrame,
    decode_frame,
    whole_data_frames,
)
from wsgate.runtime.relaypipe import PipedProtocolLike, PipeLike, piped_protocol

__all__ = [
    "SLICE_SECONDS",
    "BatchHooks",
    "FrameHandler",
    "LeanClientConnection",
    "LeanReaderStats",
    "MessageHandler",
]

log = logging.getLogger("wsgate.wsclient")

MessageHandler = Callable[[str | bytes], None]
# ``count`` whole unfragmented data frames, headers included, exactly as received (one
# frame from the parser, or a whole read that holds nothing else); True when taken.
FrameHandler = Callable[[bytes, int], bool]


class BatchHooks(Protocol):
    """Called around each batch of messages delivered from one read (or slice)."""

    def begin(self) -> None: ...
    def end(self) -> None: ...


SLICE_SECONDS = 0.05  # parse+fan-out work per data_received before yielding to the loop
MAX_HEAD = 64 * 1024  # an HTTP response head longer than this is websockets' problem
UNCLAIMED_LIMIT = 1 << 20  # bytes buffered before a handler is set, before pausing

_HANDSHAKE, _LEAN, _PASSTHROUGH = 0, 1, 2
_MODE_NAMES = {_HANDSHAKE: "handshake", _LEAN: "lean", _PASSTHROUGH: "passthrough"}


@dataclass(frozen=True)
class LeanReaderStats:
    mode: str  # handshake | lean | passthrough (websockets handles every byte)
    messages: int
    control_frames: int
    yields: int  # times the reader paused itself to let the loop run
    handler_errors: int
    buffered: int  # bytes received and not yet parsed


class LeanClientConnection(ClientConnection):
    """websockets ``ClientConnection`` whose incoming data frames bypass websockets.

    Set :meth:`set_handler` once the owner is ready: messages parsed before that are
    kept (reading pauses past :data:`UNCLAIMED_LIMIT`) and delivered, in order, from
    inside ``set_handler``. ``recv()`` and ``async for`` never yield anything in lean
    mode; wait for :meth:`wait_closed` and read ``protocol.close_exc`` instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mode = _HANDSHAKE
        self._head = bytearray()
        # The frames themselves are read by the pure framing.FrameReader; this class moves
        # bytes in and events out (handler, websockets' protocol for control frames).
        self._max_message = self.protocol.max_message_size
        self._reader = FrameReader(self._max_message)
        self._backlog: deque[Event] = deque()  # parsed, not yet delivered (a slice ended)
        self._unclaimed: list[bytes] = []  # bytes read before set_handler
        self._unclaimed_size = 0
        self._handler: MessageHandler | None = None
        self._frame_handler: FrameHandler | None = None
        self._pipe: PipeLike | None = None  # the C relay step (relaypipe), when built
        self._piped: PipedProtocolLike | None = None  # the transport's protocol, then
        self._batch: BatchHooks | None = None
        self._yielding = False  # a continuation is scheduled; the transport is paused
        self._paused_unclaimed = False
        self.slice_seconds = SLICE_SECONDS
        self.messages = 0
        self.control_frames = 0
        self.yields = 0
        self.handler_errors = 0

    # ---------------------------------------------------------------- owner API
    @property
    def lean(self) -> bool:
        """True while data frames are parsed here (after a successful handshake)."""
        return self._mode == _LEAN

    def set_handler(
        self,
        handler: MessageHandler,
        batch: BatchHooks | None = None,
        frames: FrameHandler | None = None,
        pipe: PipeLike | None = None,
    ) -> None:
        """Deliver every message to ``handler`` from now on, starting with any backlog.

        ``batch.begin()`` and ``batch.end()`` bracket each batch of messages parsed from
        one read (or one slice of it): the owner's chance to write what the batch
        produced in this same loop turn, coalesced, instead of one loop iteration later.

        ``frames`` (relays) is offered every whole unfragmented text or binary frame as
        the bytes on the wire, before any decoding: server frames are unmasked in both
        directions, so a relay writes them to its client as they are, like a TCP proxy.
        A read that holds only such frames is offered whole, first thing in
        ``data_received`` (one scan of the headers, one write). Text is then not
        UTF-8-checked here (the client checks it, as it would reading the exchange
        directly). When it returns False the frames take the normal path.

        ``pipe`` (a relay, with the C extension built) does that same step with no
        Python at all: the transport gets a :func:`~wsgate.runtime.relaypipe.piped_protocol`
        as its protocol, which hands the read to ``pipe`` while this connection holds
        nothing the read could overtake (a backlog, a partial frame, a paused slice) and
        to :meth:`data_received` otherwise. The pipe counts what it writes; the owner
        reads its counters (:meth:`statistics` includes them), nothing is counted per read.
        """
        self._handler = handler
        self._frame_handler = frames
        self._reader.raw = frames is not None
        if frames is not None and pipe is not None and self._piped is None:
            self._pipe = pipe
            self._piped = piped_protocol(pipe, self, self._pipe_failed)
            self.transport.set_protocol(self._piped)  # type: ignore[arg-type]
        self._batch = batch
        if self._paused_unclaimed:
            self._paused_unclaimed = False
            self.transport.resume_reading()
        unclaimed, self._unclaimed, self._unclaimed_size = self._unclaimed, [], 0
        if self._mode == _LEAN and unclaimed:
            self._reader_data(b"".join(unclaimed))
        self._rearm()

    def _rearm(self) -> None:
        """Reads may go to the pipe exactly while nothing here could be overtaken."""
        piped = self._piped
        if piped is not None:
            piped.armed = (
                self._mode == _LEAN
                and not self._backlog
                and not self._yielding
                and self._reader.idle
                and self._handler is not None
            )

    def _pipe_failed(self, exc: BaseException) -> None:
        self.handler_errors += 1  # as a failed frame handler: the read counts as taken
        log.error("upstream frame pipe failed", exc_info=exc)

    @property
    def piped_messages(self) -> int:
        """Frames the relay's pipe wrote on (not in :attr:`messages`: counted lazily)."""
        pipe = self._pipe
        return pipe.frames if pipe is not None else 0

    def statistics(self) -> LeanReaderStats:
        return LeanReaderStats(
            mode=_MODE_NAMES[self._mode],
            messages=self.messages + self.piped_messages,
            control_frames=self.control_frames,
            yields=self.yields,
            handler_errors=self.handler_errors,
            buffered=self._reader.buffered + self._unclaimed_size,
        )

    # ---------------------------------------------------------------- asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode == _LEAN:
            # The relay's hot path, inline (one Python call less per read): a read made
            # only of whole unfragmented data frames goes to the frame handler as it is --
            # nothing decoded or copied, the handler writes ``data`` to the bot. Anything
            # else in the read -- a control frame, a fragment, a partial frame, a masked
            # frame, a reserved bit, an oversized frame -- takes the reader, which handles
            # (or fails) it exactly as before. (With the C relay protocol installed, only
            # what its pipe declined arrives here.)
            frames = self._frame_handler
            if (
                frames is not None
                and not self._backlog
                and not self._yielding
                and self._reader.idle
            ):
                # One small frame per read is the usual case at order-entry rates: its
                # header alone says so (FIN text/binary, no mask bit, 7-bit length).
                n = len(data)
                length = data[1] if n >= 2 else 0xFF  # a mask bit or a longer length: > 125
                if length + 2 == n and length < 126 and (data[0] == 0x81 or data[0] == 0x82):
                    limit = self._max_message
                    count = 1 if limit is None or length <= limit else 0
                else:
                    count = whole_data_frames(data, self._max_message)
                if count:
                    try:
                        taken = frames(data, count)
                    except Exception:
                        self.handler_errors += 1
                        log.exception("upstream frame handler failed")
                        taken = True
                    if taken:
                        self.messages += count
                        return
            self._reader_data(data)
            if self._piped is not None:
                self._rearm()
            return
        if mode == _PASSTHROUGH:
            super().data_received(data)
            return
        self._handshake_data(data)

    def eof_received(self) -> None:
        if self._mode == _HANDSHAKE and self._head:
            head, self._head = bytes(self._head), bytearray()
            self._mode = _PASSTHROUGH
            super().data_received(head)
        super().eof_received()

    # ---------------------------------------------------------------- handshake
    def _handshake_data(self, data: bytes) -> None:
        head = self._head
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:
                self._passthrough_head()
            return
        if not head.startswith(b"HTTP/1.1 101 "):
            self._passthrough_head()  # an HTTP error with a body, a redirect: websockets' job
            return
        end += 4
        rest = bytes(head[end:])
        del head[end:]
        super().data_received(bytes(head))
        self._head = bytearray()
        if self.protocol.state is not State.OPEN:
            self._mode = _PASSTHROUGH  # websockets rejected the response
            if rest:
                super().data_received(rest)
            return
        self._mode = _LEAN
        if rest:
            self.data_received(rest)

    def _passthrough_head(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        self._mode = _PASSTHROUGH
        super().data_received(head)

    # ---------------------------------------------------------------- frames
    def _reader_data(self, data: bytes) -> None:
        """Bytes for the reader; events are delivered unless a slice is in progress."""
        if self._handler is None:  # nobody to deliver to yet: keep the bytes, bounded
            self._unclaimed.append(data)
            self._unclaimed_size += len(data)
            if self._unclaimed_size > UNCLAIMED_LIMIT and not self._paused_unclaimed:
                self._paused_unclaimed = True
                self.transport.pause_reading()
            return
        events = self._reader.feed(data)
        if events:
            self._backlog.extend(events)
            if not self._yielding:
                self._deliver()

    def _deliver(self) -> None:
        """Hand the backlog's events on, in order, for at most one time slice."""
        handler = self._handler
        assert handler is not None
        backlog = self._backlog
        batch = self._batch
        if batch is not None:
            batch.begin()
        try:
            self._deliver_slice(handler, backlog)
        finally:
            if batch is not None:
                batch.end()

    def _deliver_slice(self, handler: MessageHandler, backlog: deque[Event]) -> None:
        clock = time.monotonic
        deadline = clock() + self.slice_seconds
        frames = self._frame_handler
        pop = backlog.popleft
        while backlog:
            ev = pop()
            kind = type(ev)
            if kind is str or kind is bytes:
                msg = cast("str | bytes", ev)
            elif kind is RawFrame:
                frame = cast(RawFrame, ev).frame
                taken = False
                if frames is not None:
                    try:
                        taken = frames(frame, 1)
                    except Exception:
                        self.handler_errors += 1
                        log.exception("upstream frame handler failed")
                        taken = True
                if taken:
                    self.messages += 1
                    if self._mode != _LEAN:
                        return
                    if backlog and clock() >= deadline:
                        self._yield()
                        return
                    continue
                decoded = decode_frame(frame)
                if isinstance(decoded, Failure):
                    self._failed(decoded)
                    return
                msg = decoded
            elif kind is Control:
                # websockets answers pings (masked pong), times our pings, runs the close
                # handshake; a whole frame keeps its parser at a frame boundary.
                self.control_frames += 1
                ClientConnection.data_received(self, cast(Control, ev).frame)
                if self.protocol.state is not State.OPEN:
                    self._mode = _PASSTHROUGH  # close received or failed: websockets discards
                    backlog.clear()
                    rest = self._reader.rest()
                    if rest:
                        ClientConnection.data_received(self, rest)
                    return
                continue
            else:
                self._failed(cast(Failure, ev))
                return
            self.messages += 1
            try:
                handler(msg)
            except Exception:
                self.handler_errors += 1
                log.exception("upstream message handler failed")
            if self._mode != _LEAN:  # the handler closed or failed us
                return
            if backlog and clock() >= deadline:
                self._yield()
                return

    def _yield(self) -> None:
        self.yields += 1
        self._yielding = True
        self.transport.pause_reading()
        self.loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._yielding = False
        if self._mode != _LEAN:
            return
        if self._backlog:
            self._deliver()
        if not self._yielding and not self.transport.is_closing():
            self.transport.resume_reading()
        if self._piped is not None:
            self._rearm()

    def _failed(self, f: Failure) -> None:
        exc: Exception | None = f.exc
        if f.too_big is not None:
            length, limit, current = f.too_big
            big = PayloadTooBig(length, limit)
            big.set_current_size(current or None)
            exc = big
            self._fail(f.code, str(big), exc)
            return
        self._fail(f.code, f.reason, exc)

    def _fail(self, code: int, reason: str, exc: Exception | None = None) -> None:
        """Fail the connection as websockets' parser would (RFC 6455 §7.1.7)."""
        log.warning("upstream protocol error, failing with %d: %s", code, reason)
        self._mode = _PASSTHROUGH
        self._backlog.clear()
        self._reader.rest()
        self.protocol.fail(code, reason)
        self.protocol.parser_exc = exc if exc is not None else WsProtocolError(reason)
        try:
            self.send_data()
        except Exception as err:  # the transport may be gone already
            self.set_connection_exc(err)
        if self.close_deadline is None and self.close_timeout is not None:
            self.close_deadline = self.loop.time() + self.close_timeout
        # A client waits for the server to close TCP; do not wait for ever.
        self.loop.call_later(self.close_timeout or 10.0, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self.connection_lost_waiter.done():
            self.transport.abort()

    def __repr__(self) -> str:
        return (
            f"<LeanClientConnection {_MODE_NAMES[self._mode]} "
            f"messages={self.messages + self.piped_messages} "
            f"buffered={self._reader.buffered}>"
        )
