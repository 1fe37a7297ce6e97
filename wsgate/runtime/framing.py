"""WebSocket frames without I/O: server frames encoded once for many transports, and a
pure reader of the frames a server sends us (:class:`FrameReader`).

Server frames are unmasked (RFC 6455 §5.1) and the bot-facing server negotiates no
extensions, so a frame's bytes are the same for every session: the fan-out path
encodes each upstream message once and hands the same ``bytes`` to every transport.
Encoding runs once per upstream frame (and once per relayed frame), so it is written
for speed: short headers come from a table, no helper call, no tuple per frame.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "Control",
    "Event",
    "Failure",
    "FrameReader",
    "RawFrame",
    "decode_frame",
    "encode_binary",
    "encode_text",
    "whole_data_frames",
]

_OP_TEXT = 0x81  # FIN + text
_OP_BINARY = 0x82  # FIN + binary
_SHORT_TEXT = [bytes((_OP_TEXT, n)) for n in range(126)]
_SHORT_BINARY = [bytes((_OP_BINARY, n)) for n in range(126)]
_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def encode_text(payload: str | bytes) -> bytes:
    """Encode a text frame; ``bytes`` input must already be valid UTF-8."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data)
    if n < 126:
        return _SHORT_TEXT[n] + data
    if n < 65536:
        return _HEAD16(_OP_TEXT, 126, n) + data
    return _HEAD64(_OP_TEXT, 127, n) + data


def encode_binary(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return _SHORT_BINARY[n] + payload
    if n < 65536:
        return _HEAD16(_OP_BINARY, 126, n) + payload
    return _HEAD64(_OP_BINARY, 127, n) + payload


# ------------------------------------------------------------------------------------------
# The reading side: a pure, incremental reader of server frames (client role, sans-I/O).


class Control(NamedTuple):
    """A whole control frame as received (header and payload), for the protocol object."""

    frame: bytes

    @property
    def opcode(self) -> int:
        return self.frame[0] & 0x0F


class RawFrame(NamedTuple):
    """A whole unfragmented text/binary frame as received (``raw`` readers: relays)."""

    frame: bytes


class Failure(NamedTuple):
    """A protocol violation: the connection must fail with ``code`` (RFC 6455 §7.1.7)."""

    code: int
    reason: str
    exc: Exception | None = None  # the UnicodeDecodeError of an invalid text message
    too_big: tuple[int, int, int] | None = None  # frame length, limit, message so far


Event = str | bytes | Control | RawFrame | Failure
"""What :meth:`FrameReader.feed` returns: a text message (``str``), a binary message
(``bytes``), a control frame, a raw data frame, or a failure (always the last event)."""

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
_CLOSE = 8


class FrameReader:
    """Server frames in, messages and events out: no socket, no clock, no await.

    ``feed(bytes)`` accepts any split of the byte stream and returns the events that the
    bytes completed. Data frames are reassembled into messages (fragmentation), text is
    UTF-8-checked, ``max_message`` bounds a message; masked frames, reserved bits, bad
    opcodes and continuation errors fail as websockets fails them (same close codes).
    Control frames come out whole, for the caller's protocol object to answer. After a
    close frame or a failure the reader stops; :meth:`rest` returns the unparsed bytes.

    ``raw=True`` (relays): whole unfragmented data frames come out as :class:`RawFrame`,
    undecoded; :func:`decode_frame` decodes one when the caller wants the message after
    all.
    """

    __slots__ = (
        "_frag",
        "_frag_size",
        "_frag_text",
        "_have",
        "_parts",
        "max_message",
        "need",
        "raw",
        "stopped",
    )

    def __init__(self, max_message: int | None = None, *, raw: bool = False) -> None:
        self.max_message = max_message
        self.raw = raw
        self._parts: list[bytes] = []  # bytes received and not parsed yet
        self._have = 0
        self._frag: list[bytes] | None = None  # payloads of a fragmented message
        self._frag_text = False
        self._frag_size = 0
        self.need = 0  # bytes the buffer must hold before parsing can progress
        self.stopped = False  # a close frame or a failure was returned

    @property
    def buffered(self) -> int:
        return self._have

    @property
    def idle(self) -> bool:
        """Between messages: nothing buffered, no fragmented message open."""
        return not self._have and self._frag is None

    def rest(self) -> bytes:
        """The bytes not parsed (after a close frame or a failure: the protocol's)."""
        parts = self._parts
        rest = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._have = 0
        return rest

    def feed(self, data: bytes) -> list[Event]:
        """Take ``data``; return the events it completed (none until a frame is whole).

        Bytes are only joined and parsed once the frame being read can be complete, so
        a large frame arriving in many reads costs one copy, not one per read.
        """
        parts = self._parts
        parts.append(data)
        self._have += len(data)
        if self.stopped or self._have < self.need:
            return []
        buf = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        events: list[Event] = []
        pos = self._parse(buf, events)
        if pos < len(buf):
            rest = buf[pos:] if pos else buf
            parts.append(rest)
            self._have = len(rest)
        else:
            self._have = 0
        return events

    def _parse(self, data: bytes, out: list[Event]) -> int:
        n = len(data)
        pos = 0
        max_message = self.max_message
        raw = self.raw
        self.need = 0
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            # Checks in websockets' order (Frame.parse, then Frame.check), so a frame with
            # several faults fails with the same close code.
            if 2 < opcode < 8 or opcode > 10:
                return self._fail(out, pos, PROTOCOL_ERROR, f"invalid opcode: {opcode}")
            if b1 & 0x80:
                return self._fail(out, pos, PROTOCOL_ERROR, "incorrect masking")
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
            if max_message is not None and length > max_message - self._frag_size:
                size = length + self._frag_size
                reason = f"over size limit ({size} > {max_message} bytes)"
                out.append(
                    Failure(MESSAGE_TOO_BIG, reason, None, (length, max_message, self._frag_size))
                )
                self.stopped = True
                return pos
            end = start + length
            if end > n:
                self.need = end - pos
                break
            if b0 & 0x70:
                return self._fail(out, pos, PROTOCOL_ERROR, "reserved bits must be 0")
            if opcode >= 8:
                if not b0 & 0x80:
                    return self._fail(out, pos, PROTOCOL_ERROR, "fragmented control frame")
                if length > 125:
                    return self._fail(out, pos, PROTOCOL_ERROR, "control frame too long")
                if opcode == _CLOSE and self._frag is not None:
                    # A close in the middle of a fragmented message: websockets fails the
                    # connection (1002, or 1007 for a reason that is not UTF-8), so do we.
                    try:
                        data[start + 2 : end].decode()
                    except UnicodeDecodeError as exc:
                        return self._fail(out, pos, INVALID_DATA, _utf8_reason(exc), exc)
                    return self._fail(out, pos, PROTOCOL_ERROR, "incomplete fragmented message")
                out.append(Control(data[pos:end]))
                pos = end
                if opcode == _CLOSE:
                    self.stopped = True
                    return pos
                continue
            if opcode == 1 or opcode == 2:
                if self._frag is not None:
                    return self._fail(out, pos, PROTOCOL_ERROR, "expected a continuation frame")
                if b0 & 0x80:
                    if raw:
                        out.append(RawFrame(data if pos == 0 and end == n else data[pos:end]))
                    elif opcode == 1:
                        try:
                            out.append(data[start:end].decode())
                        except UnicodeDecodeError as exc:
                            return self._fail(out, pos, INVALID_DATA, _utf8_reason(exc), exc)
                    else:
                        out.append(data[start:end])
                else:
                    self._frag = [data[start:end]]
                    self._frag_text = opcode == 1
                    self._frag_size = length
                pos = end
            elif opcode == 0:
                frag = self._frag
                if frag is None:
                    return self._fail(out, pos, PROTOCOL_ERROR, "unexpected continuation frame")
                frag.append(data[start:end])
                self._frag_size += length
                pos = end
                if not b0 & 0x80:
                    continue
                payload = b"".join(frag)
                self._frag, self._frag_size = None, 0
                if self._frag_text:
                    try:
                        out.append(payload.decode())
                    except UnicodeDecodeError as exc:
                        return self._fail(out, pos, INVALID_DATA, _utf8_reason(exc), exc)
                else:
                    out.append(payload)
        return pos

    def _fail(
        self,
        out: list[Event],
        pos: int,
        code: int,
        reason: str,
        exc: Exception | None = None,
    ) -> int:
        out.append(Failure(code, reason, exc))
        self.stopped = True
        return pos

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "reading"
        frag = self._frag is not None
        return f"<FrameReader {state} buffered={self._have} fragmented={frag}>"


def decode_frame(frame: bytes) -> str | bytes | Failure:
    """The message of one whole unfragmented data frame (a :class:`RawFrame`'s bytes)."""
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    payload = frame[start:]
    if frame[0] & 0x0F == 2:
        return payload
    try:
        return payload.decode()
    except UnicodeDecodeError as exc:
        return Failure(INVALID_DATA, _utf8_reason(exc), exc)


def whole_data_frames(data: bytes, max_message: int | None) -> int:
    """How many whole unfragmented server data frames ``data`` is made of, exactly; else 0.

    The relay's fast path offers such a read to its client as it is. Anything else -- a
    control frame, a fragment, a partial frame, a masked frame, a reserved bit, an
    oversized frame -- is 0 and the read takes :class:`FrameReader`.
    """
    n = len(data)
    pos = 0
    count = 0
    while pos < n:
        if n - pos < 2:
            return 0
        b0 = data[pos]
        if b0 != 0x81 and b0 != 0x82:  # FIN + text/binary, no reserved bits
            return 0
        length = data[pos + 1]  # a mask bit makes it > 127: refused below
        if length < 126:
            pos += 2
        elif length == 126:
            if n - pos < 4:
                return 0
            length = (data[pos + 2] << 8) | data[pos + 3]
            pos += 4
        elif length == 127:
            if n - pos < 10:
                return 0
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            pos += 10
        else:
            return 0
        if max_message is not None and length > max_message:
            return 0
        pos += length
        count += 1
    return count if pos == n else 0


def _utf8_reason(exc: UnicodeDecodeError) -> str:
    return f"{exc.reason} at position {exc.start}"
