"""A session relayed 1:1 to its own upstream connection.

Used by ``raw`` routes and by authenticated sessions: frames go both ways untouched,
nothing is ever replayed after a reconnect (an order must never be sent twice), and
when the upstream is lost the session is closed with 1013 so the bot reconnects and
re-authenticates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from wsgate.dialects.bitfinex import is_info_event
from wsgate.errors import UpstreamError
from wsgate.runtime.downstream.session import Session
from wsgate.runtime.downstream.wsserver import ClientFrames, LeanServerConnection
from wsgate.runtime.framing import encode_binary
from wsgate.runtime.relaypipe import PipeLike
from wsgate.runtime.upstream.connection import UpstreamConnection

__all__ = ["Relay", "run_relay"]

log = logging.getLogger("wsgate.relay")

CLOSE_TRY_AGAIN = 1013


class Relay:
    """The upstream sink of one relayed session."""

    def __init__(self, session: Session, *, skip_greeting: bool = False) -> None:
        self.session = session
        # A session that already got the gateway's greeting must not see the exchange's.
        self.skip_greeting = skip_greeting
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._spoke = False
        self.orders_pipe: PipeLike | None = None  # the C step taking the bot's frames

    @property
    def client_spoke(self) -> bool:
        """The bot sent a frame (the pipe's count is read here, not kept per frame)."""
        if self._spoke:
            return True
        pipe = self.orders_pipe
        return pipe is not None and pipe.frames > 0

    @client_spoke.setter
    def client_spoke(self, spoke: bool) -> None:
        self._spoke = spoke

    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        self.opened.set()

    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None:
        if self.skip_greeting:
            self.skip_greeting = False
            if isinstance(data, str) and is_info_event(data):  # any JSON formatting
                return
        if isinstance(data, str):
            self.session.push_text(data)
        else:
            self.session.push(encode_binary(data))

    def on_upstream_raw(self, conn: UpstreamConnection, frames: bytes) -> bool:
        """Whole data frames as received: written to the client as they are, at once."""
        if self.skip_greeting:
            return False  # the first frame needs a look (on_upstream_frame)
        return self.session.write_frame(frames)

    def upstream_pipe(self, max_message: int | None) -> PipeLike | None:
        """The C relay step for the exchange's frames (None: not built); held while the
        greeting still needs its look. The session reads its counters."""
        return self.session.frame_pipe(max_message, ((self, "skip_greeting"),))

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        self.close_reason = reason
        self.closed.set()


async def run_relay(
    ws: ServerConnection,
    session: Session,
    make_upstream: Callable[[Relay], UpstreamConnection],
    open_timeout: float,
    first_frame: str | None = None,
) -> None:
    """Serve one relayed session until either side goes away.

    ``first_frame`` is a client frame already read by someone else (the auth request
    that turned a shared Bitfinex session into a private one); it goes upstream first.
    """
    relay = Relay(session, skip_greeting=first_frame is not None)
    conn = make_upstream(relay)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(conn.run())
        opened = tg.create_task(relay.opened.wait())
        lost = tg.create_task(relay.closed.wait())
        await asyncio.wait({opened, lost}, timeout=open_timeout, return_when="FIRST_COMPLETED")
        if not relay.opened.is_set():
            opened.cancel()
            lost.cancel()
            conn.stop()
            await ws.close(CLOSE_TRY_AGAIN, "upstream unavailable")
            return
        opened.cancel()
        if first_frame is not None:
            try:
                await conn.send(first_frame)
            except (UpstreamError, ConnectionError, ConnectionClosed):
                await ws.close(CLOSE_TRY_AGAIN, "upstream connection lost")
                lost.cancel()
                conn.stop()
                return
        pump = tg.create_task(_client_to_upstream(ws, conn, relay))
        done, _ = await asyncio.wait({pump, lost}, return_when="FIRST_COMPLETED")
        if lost in done and session.open:
            log.info("session %d: upstream lost (%s); closing 1013", session.id, relay.close_reason)
            await ws.close(CLOSE_TRY_AGAIN, "upstream connection lost")
        pump.cancel()
        lost.cancel()
        conn.stop()


def _forwarder(conn: UpstreamConnection, relay: Relay) -> ClientFrames:
    session = relay.session

    def forward(frames: bytes, count: int) -> bool:
        # The write first, the bookkeeping after: the order's latency ends at the write.
        if conn.send_frames_nowait(frames, count):
            session.messages_in += count
            relay.client_spoke = True
            return True
        session.messages_in += count
        relay.client_spoke = True
        # Not open, or the exchange stopped reading: end the session (1013) rather than
        # hold the bot's orders.
        if not relay.closed.is_set():
            relay.close_reason = "upstream not writable"
            relay.closed.set()
        return False

    return forward


async def _client_to_upstream(ws: ServerConnection, conn: UpstreamConnection, relay: Relay) -> None:
    """The bot's frames to the exchange, in order.

    Verbatim inside ``data_received`` (:class:`LeanServerConnection`) as soon as
    websockets holds nothing; until then -- orders sent while the upstream was still
    connecting -- the queued messages go one by one through ``recv()``, first.
    """
    lean = ws if isinstance(ws, LeanServerConnection) else None
    forward = _forwarder(conn, relay)
    session = relay.session

    pipe = conn.frame_pipe(ws.protocol.max_message_size) if lean is not None else None
    with contextlib.suppress(ConnectionClosed):
        while True:
            if pipe is not None:
                pipe.max_message = ws.protocol.max_message_size  # a reload may have lowered it
            if lean is not None and lean.start_relay(forward, pipe):
                if pipe is not None:
                    # Counted by the pipe alone: the session, the relay and the upstream's
                    # metrics read its counters when they are asked.
                    relay.orders_pipe = pipe
                    session.count_orders(pipe)
                await lean.wait_closed()  # orders now leave inside data_received
                return
            msg = await ws.recv()
            relay.session.messages_in += 1
            relay.client_spoke = True
            try:
                await conn.send(msg)
            except (UpstreamError, ConnectionError, ConnectionClosed):
                return  # the upstream side noticed too; the relay closes the session 1013
