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
Once the server answered ``101``, :meth:`LeanClientConnection.data_received` parses
server frames itself (unmasked; 7/16/64-bit lengths; fragmentation; UTF-8 validation
of text via ``bytes.decode``; ``max_size``) and calls the handler synchronously — no
queue, no future, no task switch per message. Control frames are handed to websockets'
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.frames import CloseCode
from websockets.protocol import State

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
        self._parts: list[bytes] = []
        self._have = 0  # bytes in _parts
        self._need = 0  # bytes _parts must hold before parsing can progress
        self._frag: list[bytes] | None = None  # payloads of a fragmented message
        self._frag_text = False
        self._frag_size = 0
        self._handler: MessageHandler | None = None
        self._frame_handler: FrameHandler | None = None
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
        """
        self._handler = handler
        self._frame_handler = frames
        self._batch = batch
        if self._paused_unclaimed:
            self._paused_unclaimed = False
            self.transport.resume_reading()
        if self._mode == _LEAN and self._parts and not self._yielding:
            self._drain()

    def statistics(self) -> LeanReaderStats:
        return LeanReaderStats(
            mode=_MODE_NAMES[self._mode],
            messages=self.messages,
            control_frames=self.control_frames,
            yields=self.yields,
            handler_errors=self.handler_errors,
            buffered=self._have,
        )

    # ---------------------------------------------------------------- asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode == _LEAN:
            if (
                self._frame_handler is not None
                and not self._parts
                and self._frag is None
                and not self._yielding
                and self._whole(data)
            ):
                return
            self._parts.append(data)
            self._have += len(data)
            if self._have >= self._need and not self._yielding:
                self._drain()
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
    def _drain(self) -> None:
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._have = 0
        if self._handler is None:
            parts.append(data)
            self._have = len(data)
            if self._have > UNCLAIMED_LIMIT and not self._paused_unclaimed:
                self._paused_unclaimed = True
                self.transport.pause_reading()
            return
        batch = self._batch
        if batch is None:
            pos = self._parse(data)
        else:
            batch.begin()
            try:
                pos = self._parse(data)
            finally:
                batch.end()
        if pos < len(data) and self._mode == _LEAN:
            rest = data[pos:] if pos else data
            parts.append(rest)
            self._have = len(rest)

    def _whole(self, data: bytes) -> bool:
        """Offer a read made only of whole unfragmented data frames to the frame handler.

        The relay's hot path: nothing is decoded or copied, the handler writes ``data``
        as it is. Anything else in the read -- a control frame, a fragment, a partial
        frame, a masked frame, a reserved bit, an oversized frame -- returns False and
        the read takes the parser, which handles (or fails) it exactly as before.
        """
        n = len(data)
        pos = 0
        count = 0
        limit = self.protocol.max_message_size
        while pos < n:
            if n - pos < 2:
                return False
            b0 = data[pos]
            if b0 != 0x81 and b0 != 0x82:  # FIN + text/binary, no reserved bits
                return False
            length = data[pos + 1]  # a mask bit makes it > 127: refused below
            if length < 126:
                pos += 2
            elif length == 126:
                if n - pos < 4:
                    return False
                length = (data[pos + 2] << 8) | data[pos + 3]
                pos += 4
            elif length == 127:
                if n - pos < 10:
                    return False
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                pos += 10
            else:
                return False
            if limit is not None and length > limit:
                return False
            pos += length
            count += 1
        if pos != n or self._frame_handler is None:
            return False
        try:
            taken = self._frame_handler(data, count)
        except Exception:
            self.handler_errors += 1
            log.exception("upstream frame handler failed")
            taken = True
        if taken:
            self.messages += count
        return taken

    def _parse(self, data: bytes) -> int:
        """Parse and deliver whole frames from ``data``; return where parsing stopped."""
        n = len(data)
        pos = 0
        handler = self._handler
        assert handler is not None
        frames = self._frame_handler
        clock = time.monotonic
        deadline = clock() + self.slice_seconds
        max_message = self.protocol.max_message_size
        self._need = 0
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:
                self._fail(CloseCode.PROTOCOL_ERROR, "incorrect masking")
                return n
            opcode = b0 & 0x0F
            if opcode < 8 and max_message is not None and length > max_message - self._frag_size:
                self._too_big(length, max_message)
                return n
            end = start + length
            if end > n:
                self._need = end - pos
                break
            if b0 & 0x70:
                self._fail(CloseCode.PROTOCOL_ERROR, "reserved bits must be 0")
                return n
            if opcode >= 8:
                # websockets answers pings (masked pong), times our pings, runs the close
                # handshake; a whole frame keeps its parser at a frame boundary.
                self.control_frames += 1
                ClientConnection.data_received(self, data[pos:end])
                pos = end
                if self.protocol.state is not State.OPEN:
                    self._mode = _PASSTHROUGH  # close received or failed: websockets discards
                    if pos < n:
                        ClientConnection.data_received(self, data[pos:])
                    return n
                continue
            frame_at, pos = pos, end
            if opcode == 1 or opcode == 2:
                if self._frag is not None:
                    self._fail(CloseCode.PROTOCOL_ERROR, "expected a continuation frame")
                    return n
                if b0 & 0x80 and frames is not None:
                    try:
                        taken = frames(
                            data if frame_at == 0 and end == n else data[frame_at:end], 1
                        )
                    except Exception:
                        self.handler_errors += 1
                        log.exception("upstream frame handler failed")
                        taken = True
                    if taken:
                        self.messages += 1
                        if self._mode != _LEAN:
                            return n
                        if pos < n and clock() >= deadline:
                            self._yield()
                            break
                        continue
                if b0 & 0x80:
                    if opcode == 1:
                        try:
                            msg: str | bytes = data[start:end].decode()
                        except UnicodeDecodeError as exc:
                            self._fail(CloseCode.INVALID_DATA, _utf8_reason(exc), exc)
                            return n
                    else:
                        msg = data[start:end]
                else:
                    self._frag = [data[start:end]]
                    self._frag_text = opcode == 1
                    self._frag_size = length
                    continue
            elif opcode == 0:
                frag = self._frag
                if frag is None:
                    self._fail(CloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
                    return n
                frag.append(data[start:end])
                self._frag_size += length
                if not b0 & 0x80:
                    continue
                payload = b"".join(frag)
                self._frag, self._frag_size = None, 0
                if self._frag_text:
                    try:
                        msg = payload.decode()
                    except UnicodeDecodeError as exc:
                        self._fail(CloseCode.INVALID_DATA, _utf8_reason(exc), exc)
                        return n
                else:
                    msg = payload
            else:
                self._fail(CloseCode.PROTOCOL_ERROR, f"invalid opcode: {opcode}")
                return n
            self.messages += 1
            try:
                handler(msg)
            except Exception:
                self.handler_errors += 1
                log.exception("upstream message handler failed")
            if self._mode != _LEAN:  # the handler closed or failed us
                return n
            if pos < n and clock() >= deadline:
                self._yield()
                break
        return pos

    def _yield(self) -> None:
        self.yields += 1
        self._yielding = True
        self.transport.pause_reading()
        self.loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._yielding = False
        if self._mode != _LEAN:
            return
        if self._have >= self._need and self._parts:
            self._drain()
        if not self._yielding and not self.transport.is_closing():
            self.transport.resume_reading()

    def _too_big(self, length: int, limit: int) -> None:
        exc = PayloadTooBig(length, limit)
        exc.set_current_size(self._frag_size or None)
        self._fail(CloseCode.MESSAGE_TOO_BIG, str(exc), exc)

    def _fail(self, code: int, reason: str, exc: Exception | None = None) -> None:
        """Fail the connection as websockets' parser would (RFC 6455 §7.1.7)."""
        log.warning("upstream protocol error, failing with %d: %s", code, reason)
        self._mode = _PASSTHROUGH
        self._parts.clear()
        self._have = 0
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
            f"<LeanClientConnection {_MODE_NAMES[self._mode]} messages={self.messages} "
            f"buffered={self._have}>"
        )


def _utf8_reason(exc: UnicodeDecodeError) -> str:
    return f"{exc.reason} at position {exc.start}"
