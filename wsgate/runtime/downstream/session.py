"""One downstream bot session: a bounded, coalescing writer over a websockets connection.

The fan-out path never awaits a session. :meth:`Session.push` appends pre-encoded
frames to a per-session list and marks the session dirty; one callback per event-loop
turn flushes every dirty session (not one ``call_soon`` per session: at K = 1000 the
handles alone cost more than the pushes), so N frames queued in one turn cost one
system call per session. A session whose transport
buffer exceeds ``send_buffer_bytes`` is closed (slow consumer): it can never slow the
upstream reader or any other session, and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from wsgate.runtime.framing import encode_text
from wsgate.runtime.relaypipe import Pipe, PipeLike
from wsgate.runtime.system.faults import Faults

if TYPE_CHECKING:
    from wsgate.runtime.downstream.clients import ClientState

__all__ = ["Flusher", "Session", "SessionStats"]

log = logging.getLogger("wsgate.session")
_ids = itertools.count(1)
SLOW_GRACE = 2.0  # seconds a slow consumer gets to read its close frame before the abort


class Flusher:
    """The sessions with queued frames, flushed in one event-loop callback.

    One per daemon (injected into the gateway's sessions and the upstream connections,
    whose lean readers use it as their :class:`~wsgate.runtime.upstream.wsclient.BatchHooks`).
    Inside a batch (:meth:`begin` .. :meth:`end`, an upstream read) nothing is
    scheduled: :meth:`end` writes what the batch queued in the same loop turn, so a
    relayed frame costs no extra loop iteration.
    """

    __slots__ = ("dirty", "faults", "handle", "holding", "hooks")

    def __init__(self, faults: Faults | None = None) -> None:
        self.dirty: list[Session] = []
        # Run once at the next flush, after the sessions' writes (the cluster data
        # plane's publish: what this turn fanned out, one message per key).
        self.hooks: list[Callable[[], None]] = []
        self.handle: asyncio.Handle | None = None
        self.holding = 0
        self.faults = faults or Faults()

    def add(self, session: Session) -> None:
        self.dirty.append(session)
        if self.handle is None and not self.holding:
            self.handle = asyncio.get_running_loop().call_soon(self.flush)

    def call(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at this batch's end, or in the next loop turn outside a batch."""
        self.hooks.append(hook)
        if self.handle is None and not self.holding:
            self.handle = asyncio.get_running_loop().call_soon(self.flush)

    def begin(self) -> None:
        self.holding += 1

    def end(self) -> None:
        self.holding -= 1
        if not self.holding and (self.dirty or self.hooks):
            self.flush()

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        dirty, self.dirty = self.dirty, []
        for session in dirty:
            try:
                session._flush()
            except Exception as exc:  # one broken session must not strand the others' frames
                self.faults.record("session.flush", exc, f"session {session.id}")
                session.abort_broken()
        if self.hooks:  # after the sessions' writes: they go first
            hooks, self.hooks = self.hooks, []
            for hook in hooks:
                try:
                    hook()
                except Exception as exc:
                    self.faults.record("session.flush", exc, "flush hook")

    def __repr__(self) -> str:
        return f"<Flusher dirty={len(self.dirty)} holding={self.holding}>"


_MAX_ERROR_KINDS = 16


def _none() -> int:
    return 0


@dataclass(frozen=True)
class SessionStats:
    id: int
    route: str
    peer: str
    age: float
    frames_out: int
    bytes_out: int
    messages_in: int
    buffered: int
    closed: bool
    close_code: int | None
    # Errors this session caused (unknown symbol, bad request, its own rate limit): they
    # are its own, never the upstream connection's.
    errors: int = 0
    errors_by_kind: tuple[tuple[str, int], ...] = ()
    client: str | None = None  # the [[gateway.clients]] name it connected as
    subscriptions: int = 0  # held on a shared route (waiting ones included)


class _Folded:
    """A relay pipe and the counts of it a session has added to its own counters."""

    __slots__ = ("bytes", "frames", "pipe", "writes")

    def __init__(self, pipe: PipeLike) -> None:
        self.pipe = pipe
        self.frames, self.bytes, self.writes = pipe.frames, pipe.bytes, pipe.writes


class Session:
    def __init__(
        self,
        ws: ServerConnection,
        route: str,
        *,
        send_buffer_bytes: int,
        flusher: Flusher,
        slow_close_code: int = 1013,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.route = route
        self.send_buffer_bytes = send_buffer_bytes
        self.slow_close_code = slow_close_code
        self.created = time.monotonic()
        self._frames_out = 0
        self._bytes_out = 0
        self._messages_in = 0
        self.errors = 0
        self.errors_by_kind: dict[str, int] = {}
        self.slow_closed = False
        self.refusing = False  # no more frames: closed as slow, or its flush failed
        self.close_code: int | None = None
        self.on_slow: Callable[[Session], None] | None = None
        self.client: ClientState | None = None  # set by the gateway at the handshake
        # Subscriptions it holds on a shared route; the hub serving it replaces this.
        self.subscription_count: Callable[[], int] = _none
        # Relay pipes (C) counting for this session: what each counted by the last fold.
        self._piped_out: list[_Folded] = []  # writing to the bot: frames_out, bytes_out
        self._piped_in: list[_Folded] = []  # taking the bot's frames: messages_in
        self._pending: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._flusher = flusher
        self._close_request: tuple[int, str] | None = None
        self._close_requested = asyncio.Event()
        self._transport: Any = ws.transport
        self._protocol = ws.protocol  # websockets' state, read on every relayed frame
        addr = ws.remote_address
        self.peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)

    # The counters include what relay pipes counted (in C, no Python per frame): a read
    # folds that in first.
    @property
    def frames_out(self) -> int:
        self.fold_piped()
        return self._frames_out

    @frames_out.setter
    def frames_out(self, value: int) -> None:
        self._frames_out = value

    @property
    def bytes_out(self) -> int:
        self.fold_piped()
        return self._bytes_out

    @bytes_out.setter
    def bytes_out(self, value: int) -> None:
        self._bytes_out = value

    @property
    def messages_in(self) -> int:
        self.fold_piped()
        return self._messages_in

    @messages_in.setter
    def messages_in(self, value: int) -> None:
        self._messages_in = value

    @property
    def open(self) -> bool:
        return self.ws.protocol.state is State.OPEN and not self.refusing

    def push(self, frame: bytes) -> bool:
        """Queue one pre-encoded frame; returns False when the session is gone or too slow."""
        if self.refusing:
            return False
        self._pending.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self._flusher.add(self)
        return True

    def write_frame(self, frame: bytes) -> bool:
        """Write one encoded frame now, in this loop turn (a relay's hot path).

        False when it cannot go out at once in order -- frames already queued, the
        connection not open, the transport over its bound -- and the caller takes the
        queued path, which applies the slow-consumer policy.
        """
        if self._pending or self.slow_closed or self._protocol.state is not State.OPEN:
            return False
        # No is_closing() check: while websockets' state is OPEN the transport is not
        # lost, and a write to a transport that is closing is still flushed before the
        # close (an abort drops it, as it would drop anything queued).
        transport = self._transport
        if transport.get_write_buffer_size() > self.send_buffer_bytes:
            return False
        transport.write(frame)
        self._frames_out += 1
        self._bytes_out += len(frame)
        return True

    def frame_pipe(
        self, max_message: int | None, holds: tuple[tuple[object, str], ...] = ()
    ) -> PipeLike | None:
        """The C relay step writing an exchange's frames to this session as they are.

        None without the C extension. The pipe applies :meth:`write_frame`'s gates --
        nothing queued, not closed as slow, websockets' state OPEN, the send buffer within
        bounds -- plus the caller's ``holds``. Its counters are this session's
        ``frames_out`` (one per write, as :meth:`write_frame` counts) and ``bytes_out``,
        folded in when they are read (:meth:`fold_piped`).
        """
        if Pipe is None:
            return None
        gates = ((self, "_pending"), (self, "slow_closed"), *holds)
        limit = self.send_buffer_bytes
        pipe = Pipe(self._transport, self._protocol, State.OPEN, limit, max_message, False, gates)
        self._piped_out.append(_Folded(pipe))
        return pipe

    def count_orders(self, pipe: PipeLike) -> None:
        """``pipe`` takes this bot's frames upstream: its frames are ``messages_in``."""
        self._piped_in.append(_Folded(pipe))

    def fold_piped(self) -> None:
        """Add what the relay pipes counted since the last fold to the plain counters
        (the pipes count in C so that no Python runs per relayed frame)."""
        for f in self._piped_out:
            writes, nbytes = f.pipe.writes, f.pipe.bytes
            self._frames_out += writes - f.writes
            self._bytes_out += nbytes - f.bytes
            f.writes, f.bytes = writes, nbytes
        for f in self._piped_in:
            frames = f.pipe.frames
            self._messages_in += frames - f.frames
            f.frames = frames

    def push_text(self, text: str | bytes) -> bool:
        return self.push(encode_text(text))

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        if not pending or self.ws.protocol.state is not State.OPEN:
            return
        transport = self._transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.send_buffer_bytes:
            self._close_slow()
            return
        if len(pending) == 1:
            frame = pending[0]
            transport.write(frame)
            self._frames_out += 1
            self._bytes_out += len(frame)
            return
        transport.writelines(pending)
        self._frames_out += len(pending)
        self._bytes_out += sum(map(len, pending))

    def _close_slow(self) -> None:
        self.slow_closed = self.refusing = True
        self.close_code = self.slow_close_code
        log.warning(
            "session %d (%s, route %s) closed as a slow consumer: over %d buffered bytes",
            self.id,
            self.peer,
            self.route,
            self.send_buffer_bytes,
        )
        if self.on_slow is not None:
            self.on_slow(self)
        # A graceful close() would wait for the full buffer to drain, i.e. for ever. Queue
        # the close frame behind the data (a bot that catches up still reads the code)
        # and abort the TCP connection if it has not caught up within the grace period.
        try:
            self.ws.protocol.send_close(self.slow_close_code, "slow consumer: send buffer full")
            self.ws.send_data()
        except Exception:  # the protocol may already be closing; the abort below suffices
            log.debug("session %d: close frame not queued", self.id, exc_info=True)
        self._loop.call_later(SLOW_GRACE, self._transport.abort)

    async def close(self, code: int, reason: str) -> None:
        """Close after whatever is queued (an error reply must precede its close frame)."""
        self._flush()
        self.close_code = code
        await self._close(code, reason)

    def abort_broken(self) -> None:
        """Its flush failed: queue nothing more, drop what is queued, close with 1011.

        Retrying would fail the same way while the queue grew without bound.
        """
        self.refusing = True
        self._pending = []
        self._scheduled = False
        self.close_code = 1011
        if self._close_request is None:
            self._close_request = (1011, "internal error")
            self._close_requested.set()

    def close_nowait(self, code: int, reason: str) -> None:
        """Ask for a close from synchronous code; :meth:`serve`'s closer performs it."""
        self._flush()
        self.close_code = code
        if self._close_request is None:
            self._close_request = (code, reason)
            self._close_requested.set()

    async def serve(self, handler: Awaitable[None]) -> None:
        """Run the session's handler beside its closer; both belong to this session.

        The closer executes :meth:`close_nowait` requests (from the fan-out, a reload),
        so no close is a fire-and-forget task. A close in progress when the handler
        ends is finished (bounded by the connection's close timeout), not cancelled.
        """
        async with asyncio.TaskGroup() as tg:
            closer = tg.create_task(self._closer(), name=f"session-{self.id}-closer")
            try:
                await handler
            finally:
                if self._close_request is None:
                    closer.cancel()

    async def _closer(self) -> None:
        await self._close_requested.wait()
        assert self._close_request is not None
        await self._close(*self._close_request)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code, reason)
        except Exception:  # the peer may already be gone; closing is best effort
            log.debug("session %d close failed", self.id, exc_info=True)

    def statistics(self) -> SessionStats:
        buffered = self._transport.get_write_buffer_size() if self._transport else 0
        return SessionStats(
            id=self.id,
            route=self.route,
            peer=self.peer,
            age=time.monotonic() - self.created,
            frames_out=self.frames_out,
            bytes_out=self.bytes_out,
            messages_in=self.messages_in,
            buffered=buffered,
            closed=not self.open,
            close_code=self.close_code,
            errors=self.errors,
            errors_by_kind=tuple(sorted(self.errors_by_kind.items())),
            client=self.client.name if self.client is not None else None,
            subscriptions=self.subscription_count(),
        )

    def on_error(self, kind: str) -> None:
        """Count an error this session caused; a bounded set of kinds (the rest is "other")."""
        self.errors += 1
        if kind not in self.errors_by_kind and len(self.errors_by_kind) >= _MAX_ERROR_KINDS:
            kind = "other"
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.route} {self.peer} out={self.frames_out}>"
