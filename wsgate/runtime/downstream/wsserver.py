"""The bot-facing connection, with a verbatim path for relayed sessions (order entry).

websockets delivers a bot's message through its parser, an assembler queue and a task
woken by ``recv()``, and a relay then re-frames and masks it again to send it upstream:
two loop iterations and several microseconds per order. A client's frames are masked
and a client's frames are what the exchange expects from wsgate, so a relay can write
them upstream exactly as the bot sent them, like a TCP proxy does.

:class:`LeanServerConnection` (the gateway's ``create_connection``; it also reads REST
request bodies, see :mod:`wsgate.runtime.downstream.httpbody`) does that once a relay calls
:meth:`~LeanServerConnection.start_relay`: from then on ``data_received`` scans frame
headers itself and hands every run of data frames (text, binary, continuation: a
fragmented message stays fragmented) to the relay's handler in the same call, in order.
Control frames still go to websockets, at a frame boundary, so pings are answered,
pongs time the gateway's own pings and a close runs the close handshake. A frame
websockets would refuse (unmasked, reserved bits, oversized) is handed to websockets,
which fails the connection with the same close code as before. Text is not UTF-8
checked on the way (the exchange checks it, as it would from the bot directly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from websockets.protocol import State

from wsgate.runtime.downstream.httpbody import BodyServerConnection
from wsgate.runtime.relaypipe import PipedProtocolLike, PipeLike, piped_protocol

__all__ = ["ClientFrames", "LeanServerConnection"]

log = logging.getLogger("wsgate.wsserver")

# ``count`` whole client frames (masked, as received); False when they cannot go out.
ClientFrames = Callable[[bytes, int], bool]


class LeanServerConnection(BodyServerConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._relay: ClientFrames | None = None
        self._pipe: PipeLike | None = None  # the C relay step (relaypipe), when built
        self._piped: PipedProtocolLike | None = None  # the transport's protocol, then
        self._rest = b""  # an incomplete frame carried to the next read
        limit = self.protocol.max_message_size  # a bigger frame takes the scan (1009)
        self._one_frame_limit = limit if limit is not None else 0xFFFF
        self._relayed_frames = 0

    @property
    def relayed_frames(self) -> int:
        """The bot's data frames relayed: by the Python path and by the pipe (lazily)."""
        pipe = self._pipe
        return self._relayed_frames + (pipe.frames if pipe is not None else 0)

    def set_frame_limit(self, limit: int | None) -> None:
        """The largest message this bot may send from now on, on every path: websockets'
        parser, the one-frame shortcut and the C pipe (a reload lowers it on open sessions)."""
        self.protocol.max_message_size = limit
        self._one_frame_limit = limit if limit is not None else 0xFFFF
        if self._pipe is not None:
            self._pipe.max_message = limit

    @property
    def relaying(self) -> bool:
        return self._relay is not None

    def start_relay(
        self,
        frames: ClientFrames,
        pipe: PipeLike | None = None,
    ) -> bool:
        """Forward the client's data frames to ``frames`` from now on.

        Refused (False; keep using ``recv()``) unless websockets holds nothing: no
        message queued for ``recv()`` and no partial frame in its parser, so nothing
        received earlier can be overtaken.
        """
        if self.protocol.state is not State.OPEN:
            return False
        if len(self.recv_messages.frames) or self.protocol.reader.buffer:
            return False
        self._relay = frames
        if pipe is not None and self._piped is None:
            # ``pipe`` (the C extension) writes a read made only of whole data frames
            # itself, with the gates of ``frames``' writer, called by the transport
            # directly: the relay protocol installed here hands it every read while
            # nothing partial is held (``_rest``), and this class the rest. The pipe's
            # counters are the bookkeeping (read lazily: :attr:`relayed_frames`).
            self._pipe = pipe
            self._piped = piped_protocol(pipe, self, self._pipe_failed)
            self.transport.set_protocol(self._piped)  # type: ignore[arg-type]
            self._piped.armed = True
        return True

    def _pipe_failed(self, exc: BaseException) -> None:
        log.error("relay frame pipe failed", exc_info=exc)  # the read counts as taken

    def data_received(self, data: bytes) -> None:
        relay = self._relay
        if relay is None:
            super().data_received(data)
            return
        if not self._rest and len(data) >= 6:
            # The usual order: a read that is exactly one whole masked text or binary
            # frame (FIN, no reserved bits, 7- or 16-bit length) goes out without the scan.
            b0 = data[0]
            b1 = data[1]
            if (b0 == 0x81 or b0 == 0x82) and 0x80 <= b1 <= 0xFE:
                if b1 == 0xFE:
                    length = (data[2] << 8) | data[3]
                    end = 8 + length
                else:
                    length = b1 & 0x7F
                    end = 6 + length
                if end == len(data) and length <= self._one_frame_limit:
                    self._relayed_frames += 1
                    try:
                        relay(data, 1)
                    except Exception:
                        log.exception("relay frame handler failed")
                    return
        if self._rest:
            data = self._rest + data
            self._rest = b""
        pos = self._forward(data)
        if pos < len(data) and self._relay is not None:
            self._rest = data[pos:]
        piped = self._piped
        if piped is not None:
            piped.armed = self._relay is not None and not self._rest

    def _forward(self, data: bytes) -> int:
        """Forward whole frames from ``data``; return where an incomplete frame starts."""
        n = len(data)
        pos = 0
        run = 0  # start of the pending run of data frames
        count = 0
        limit = self.protocol.max_message_size
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                start = pos + 6
            elif length == 126:
                if n - pos < 8:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 8
            else:
                if n - pos < 14:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 14
            opcode = b0 & 0x0F
            if (
                not b1 & 0x80
                or b0 & 0x70
                or (opcode < 8 and limit is not None and length > limit)
                or opcode not in (0, 1, 2, 8, 9, 10)
            ):
                # websockets refuses this frame and fails the connection (1002/1009).
                self._flush_run(data, run, pos, count)
                self._leave(data[pos:])
                return n
            end = start + length
            if end > n:
                break
            if opcode >= 8:
                self._flush_run(data, run, pos, count)
                count = 0
                super().data_received(data[pos:end])
                pos = run = end
                if self.protocol.state is not State.OPEN:
                    self._leave(data[pos:])  # a close frame: websockets takes it from here
                    return n
                continue
            pos = end
            count += 1
        self._flush_run(data, run, pos, count)
        return pos

    def _flush_run(self, data: bytes, start: int, end: int, count: int) -> None:
        if not count or self._relay is None:
            return
        self._relayed_frames += count
        chunk = data if start == 0 and end == len(data) else data[start:end]
        try:
            self._relay(chunk, count)
        except Exception:
            log.exception("relay frame handler failed")

    def _leave(self, rest: bytes) -> None:
        self._relay = None
        if self._piped is not None:
            self._piped.armed = False
            self._piped.pipe = None  # for good: websockets takes every byte from here
        if rest:
            super().data_received(rest)
