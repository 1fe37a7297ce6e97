"""One upstream WebSocket connection, kept alive by a loop that executes core decisions.

The loop: wait for a connect slot from the host budget → CONNECTING → OPEN → read
frames, ping, watch for silence → CLOSING → ask :class:`~wsgate.core.backoff.Backoff`
what to do → BACKOFF → again. Every state change goes through :meth:`_move`, which
counts, logs and publishes it. A connection never gives up unless the exchange
rejected our credentials (FAILED) or an operator disabled it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.protocol import State

from wsgate.core.backoff import Backoff, CloseKind, classify_status
from wsgate.core.metrics import ConnectionMetrics
from wsgate.core.states import ConnectionStateMachine, ConnState, Transition
from wsgate.core.types import ConnectionType
from wsgate.errors import UpstreamError
from wsgate.redact import mask_text, mask_url
from wsgate.runtime.downstream.session import Flusher
from wsgate.runtime.relaypipe import Pipe, PipeLike
from wsgate.runtime.system.faults import Faults
from wsgate.runtime.upstream.budgets import HostBudgets
from wsgate.runtime.upstream.wsclient import LeanClientConnection

__all__ = [
    "HostBudgets",
    "UpstreamConnection",
    "UpstreamSettings",
    "UpstreamSink",
    "UpstreamStats",
    "make_ssl_context",
]

log = logging.getLogger("wsgate.upstream")
SEND_BUFFER_LIMIT = 4 * 1024 * 1024  # bytes queued towards an exchange that stopped reading


class UpstreamSink(Protocol):
    """What a connection reports to its owner (a route pool, a relay session, the hub)."""

    def on_upstream_open(self, conn: UpstreamConnection) -> None: ...
    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None: ...
    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None: ...


@dataclass(frozen=True)
class UpstreamSettings:
    route: str
    endpoint: str  # stable endpoint name
    url: str
    conn_type: ConnectionType = ConnectionType.MARKET_DATA
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    stale_after: float = 20.0
    open_timeout: float = 10.0
    max_size: int = 16 * 1024 * 1024  # exchange snapshots can be large
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    min_uptime: float = 5.0
    max_lifetime: float | None = None
    use_proxy: bool = False
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    reconnect: bool = True  # False for dedicated relays: one connection, then done
    history_points: int = 1000
    per_message_metrics: bool = True
    # Parse data frames in wsclient.LeanClientConnection (no per-message queue or task
    # switch); False keeps websockets' own reader as a fallback.
    fast_reader: bool = True

    @cached_property
    def display_url(self) -> str:
        """The URL as logs, events and status show it: credentials masked."""
        return mask_url(self.url)

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"


def make_ssl_context(
    verify: bool = True,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """Verification is on unless the operator turned it off for this route explicitly."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    if not verify:
        log.warning("TLS certificate verification is DISABLED for an upstream by configuration")
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class UpstreamStats:
    id: str
    route: str
    endpoint: str
    url: str
    type: str
    state: str
    state_reason: str
    state_age: float
    latency: float | None
    latency_app: float | None
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    msg_rate: float
    errors: int
    reconnects: int
    age: float | None  # seconds since the current socket opened
    last_message_age: float | None
    transitions: dict[str, int]
    next_retry_in: float | None
    operator_reconnects: int = 0  # asked for by an operator; not in ``reconnects``


class UpstreamConnection:
    def __init__(
        self,
        conn_id: str,
        settings: UpstreamSettings,
        sink: UpstreamSink,
        budgets: HostBudgets,
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[UpstreamConnection, Transition], None] | None = None,
        expects_data: Callable[[], bool] | None = None,
        faults: Faults | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self.id = conn_id
        self.faults = faults or Faults()
        # Holds session flushes while one read's frames are fanned out (lean reader).
        self.flusher = flusher
        self.settings = settings
        self.sink = sink
        self._budgets = budgets
        self._clock = clock
        self._on_transition = on_transition
        self.expects_data: Callable[[], bool] = expects_data or (lambda: True)
        # Called instead of closing at max_lifetime, so the owner can rotate make-before-break.
        self.on_lifetime: Callable[[], None] | None = None
        now = clock()
        self.sm = ConnectionStateMachine(conn_id, now)
        self.backoff = Backoff(
            rng,
            initial=settings.backoff_initial,
            maximum=settings.backoff_max,
            min_uptime=settings.min_uptime,
        )
        self.metrics = ConnectionMetrics(history_points=settings.history_points)
        self.ws: ClientConnection | None = None
        self.opened_at: float | None = None
        self.last_frame_at: float | None = None
        # A relay's C pipe writing this connection's frames on: what it counted by the
        # last look, so a look at the time of the last frame (staleness, status) sees them.
        self._in_pipe: PipeLike | None = None
        self._in_pipe_seen = 0
        self.created_at = now
        self._retry_at: float | None = None
        self._wake = asyncio.Event()  # interrupts backoff sleeps and admin waits
        self._stopping = False
        self._tg: asyncio.TaskGroup | None = None  # the open socket's tasks
        self._abort_requested = asyncio.Event()
        self._close_reason = ""
        self._close_kind = CloseKind.DROPPED
        self.failed_reason: str | None = None
        self._opened_before = False
        # Set while a close/reopen an operator started is under way (reconnect, enable):
        # that cycle is no fault, so it counts neither as a reconnect nor as downtime
        # worth a backoff.
        self.operator_cycle = False

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> ConnState:
        return self.sm.state

    def _move(self, new: ConnState, reason: str) -> None:
        if self.sm.state is new or not self.sm.can_move(new):
            return
        t = self.sm.move(new, self._clock(), reason)
        self.metrics.on_state(t.at, new.label, new.is_up)
        level = logging.WARNING if new in (ConnState.FAILED, ConnState.DEGRADED) else logging.INFO
        log.log(level, "%s %s -> %s (%s)", self.id, t.old.label, new.label, reason)
        if self._on_transition is not None:
            self._on_transition(self, t)

    def _disabled(self) -> bool:
        # A method, not an inline check: an operator may disable us during any await.
        return self.sm.state is ConnState.DISABLED

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Close for good (daemon shutdown, route removed, relay session ended)."""
        self._stopping = True
        self._wake.set()
        self._abort("stopped")

    def update_settings(self, new: UpstreamSettings) -> None:
        """A reload's route settings for this open connection: the stale limit, lifetime and
        backoff apply at once; ping timing, TLS and proxy at the next (re)connect (its URL
        and endpoint stay: moving those is a rotation)."""
        self.settings = dataclasses.replace(
            new, route=self.settings.route, endpoint=self.settings.endpoint, url=self.settings.url
        )
        self.backoff.initial = new.backoff_initial
        self.backoff.maximum = new.backoff_max
        self.backoff.min_uptime = new.min_uptime

    def request_reconnect(self, reason: str, *, operator: bool = False) -> None:
        """Close and reopen. ``operator``: an operator asked, so the reopen is immediate and
        counts as an operator action, not as a reconnect of a troubled connection."""
        if operator:
            self.operator_cycle = True
        if self.state is ConnState.FAILED or self.state is ConnState.DISABLED:
            self._move(ConnState.BACKOFF, reason)
        self._retry_at = None
        self._wake.set()
        self._abort(reason)

    def disable(self, reason: str) -> None:
        """Operator: out of service until :meth:`enable` (health and alerts skip it)."""
        self._move(ConnState.DISABLED, reason)
        self._abort(reason)

    def enable(self, reason: str) -> None:
        if self.state is ConnState.DISABLED:
            self.operator_cycle = True
            self._move(ConnState.BACKOFF, reason)
            self._wake.set()

    def set_degraded(self, degraded: bool, reason: str) -> None:
        if self.state in (ConnState.OPEN, ConnState.DEGRADED):  # never un-drains
            self._move(ConnState.DEGRADED if degraded else ConnState.OPEN, reason)

    def drain(self, reason: str) -> bool:
        """DRAINING: no new work; the owner moves what is here away, then retires it.

        Only an up connection drains (False otherwise: nothing to move). A draining
        connection whose socket closes is done: it never reconnects (its work has a new
        home or is re-homed by the owner), and its owner sees it still DRAINING in
        ``on_upstream_closed``.
        """
        if self.state not in (ConnState.OPEN, ConnState.DEGRADED):
            return False
        self._move(ConnState.DRAINING, reason)
        return True

    @property
    def draining(self) -> bool:
        return self.sm.state is ConnState.DRAINING

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called: the connection closes for good."""
        return self._stopping

    def _abort(self, reason: str) -> None:
        """Close the open socket (if any); the socket's own TaskGroup does the closing."""
        if self.ws is not None:
            self._close_reason = reason
            self._abort_requested.set()

    async def _abort_watch(self, ws: ClientConnection) -> None:
        await self._abort_requested.wait()
        await self._close_ws(ws, 1000, self._close_reason[:100])

    def start_soon(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as part of the open socket: it is cancelled when the socket closes.

        Called by the sink from :meth:`UpstreamSink.on_upstream_open` (the hub's writer).
        """
        if self._tg is None:
            coro.close()
            raise UpstreamError(f"{self.id} is not open")
        self._tg.create_task(coro, name=name)

    @staticmethod
    async def _close_ws(ws: ClientConnection, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)

    async def send(self, data: str | bytes) -> None:
        ws = self.ws
        if ws is None:
            raise UpstreamError(f"{self.id} is not open")
        await ws.send(data)
        self.metrics.on_message_out(self._clock(), len(data))

    def send_frames_nowait(self, frames: bytes, count: int) -> bool:
        """Write ``count`` whole client frames (masked, e.g. a relayed bot's) as they are.

        False when the connection is not open or its send buffer is over
        :data:`SEND_BUFFER_LIMIT` (the exchange is not reading): the caller ends the
        session rather than queue orders without bound.
        """
        ws = self.ws
        if ws is None or ws.protocol.state is not State.OPEN:
            return False
        # No is_closing() check (one call less per order): while websockets' state is
        # OPEN the transport is not lost, and a closing transport still flushes it.
        transport = ws.transport
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            return False
        transport.write(frames)
        self.metrics.on_message_out(self._clock(), len(frames), count)
        return True

    def frame_pipe(self, max_message: int | None) -> PipeLike | None:
        """The C relay step writing a bot's masked frames to this connection as they are.

        None without the C extension (or without a connection): the caller keeps
        :meth:`send_frames_nowait`. The pipe writes only while this connection's
        websockets state is OPEN and its send buffer is within :data:`SEND_BUFFER_LIMIT`
        -- the same gates as :meth:`send_frames_nowait` -- and counts what it writes, which
        the metrics read lazily (no bookkeeping per frame).
        """
        ws = self.ws
        if Pipe is None or ws is None:
            return None
        pipe = Pipe(ws.transport, ws.protocol, State.OPEN, SEND_BUFFER_LIMIT, max_message, True, ())
        self.metrics.count_lazily(pipe, inbound=False)
        return pipe

    def _look_at_pipe(self, now: float) -> None:
        """The inbound pipe wrote frames since the last look: the last frame is as of now."""
        pipe = self._in_pipe
        if pipe is not None and pipe.frames != self._in_pipe_seen:
            self._in_pipe_seen = pipe.frames
            self.last_frame_at = now

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        """Keep the connection alive until :meth:`stop`. Owned by the pool's TaskGroup."""
        try:
            while not self._stopping:
                if self.state in (ConnState.DISABLED, ConnState.FAILED):
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._wait_for_budget()
                if self._stopping or self._disabled():
                    continue
                uptime, kind, retry_after = await self._attempt()
                if self._stopping or not self.settings.reconnect or self.draining:
                    break
                if self._disabled():
                    continue
                if uptime is None:
                    self.operator_cycle = False  # the reopen failed: that is a real fault
                if self.operator_cycle:
                    # The operator closed a healthy connection: reopen now, no backoff.
                    self._move(ConnState.BACKOFF, "reopening at the operator's request")
                    continue
                decision = self.backoff.after_close(uptime, kind, retry_after)
                if not decision.retry:
                    self.failed_reason = decision.reason
                    self._move(ConnState.FAILED, decision.reason)
                    continue
                self._move(ConnState.BACKOFF, decision.reason)
                await self._sleep(decision.delay)
        finally:
            self._move(ConnState.CLOSED, "stopped")

    async def _sleep(self, delay: float) -> None:
        self._retry_at = self._clock() + delay
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            # asyncio.timeout, not wait_for: 3.11's wait_for returns when the wake-up races
            # with stop()'s cancellation, and the loop would reconnect instead of ending.
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._retry_at = None

    async def _wait_for_budget(self) -> None:
        while not self._stopping:
            wait, final = await self._budgets.acquire(self.settings.host)
            if wait <= 0:
                return
            log.info("%s waits %.2fs for a connect slot to %s", self.id, wait, self.settings.host)
            if self.state is ConnState.IDLE:
                self._move(ConnState.BACKOFF, "connect budget")
            await self._sleep(wait)
            if final:  # a slot of this node's own bucket: it is ours now
                return

    async def _attempt(self) -> tuple[float | None, CloseKind, float | None]:
        """One connect + serve cycle. Returns (uptime or None, close kind, retry-after)."""
        s = self.settings
        self._move(ConnState.CONNECTING, "connecting to " + s.display_url)
        try:
            ws = await connect(
                s.url,
                open_timeout=s.open_timeout,
                ping_interval=None,  # our own ping loop samples every RTT and owns the timeout
                close_timeout=2.0,
                max_size=s.max_size,
                max_queue=64,
                compression=None,
                proxy=True if s.use_proxy else None,
                ssl=s.ssl_context if s.url.startswith("wss:") else None,
                create_connection=LeanClientConnection if s.fast_reader else None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            retry_after = _retry_after(exc.response.headers.get("Retry-After"))
            self.metrics.on_error(self._clock(), f"http_{status}")
            self._close_reason = f"handshake rejected: HTTP {status}"
            log.warning("%s handshake rejected: HTTP %d", self.id, status)
            return None, classify_status(status), retry_after
        except Exception as exc:  # DNS, TCP, TLS, timeout, bad handshake: all retried
            self.metrics.on_error(self._clock(), "connect")
            # Exception texts may quote the URL (InvalidURI, proxy errors): mask it.
            self._close_reason = f"connect failed: {type(exc).__name__}: {mask_text(str(exc))}"
            log.warning("%s %s", self.id, self._close_reason)
            return None, CloseKind.DROPPED, None
        return await self._serve(ws), CloseKind.DROPPED, None

    async def _serve(self, ws: ClientConnection) -> float:
        now = self._clock()
        self.ws, self.opened_at, self.last_frame_at = ws, now, now
        self._close_reason = "closed by peer"
        if self._opened_before:
            self.metrics.on_reconnect(now, operator=self.operator_cycle)
        self._opened_before = True
        self.operator_cycle = False
        self._abort_requested.clear()
        self._move(ConnState.OPEN, "handshake ok")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._abort_watch(ws))
                try:
                    self.sink.on_upstream_open(self)
                except Exception as exc:
                    self.faults.record("upstream.open", exc, self.id)
                lean = isinstance(ws, LeanClientConnection) and ws.lean
                reader = tg.create_task(self._read_lean(ws) if lean else self._read(ws))
                tg.create_task(self._ping_loop(ws))
                tg.create_task(self._stale_watch(ws))
                if self.settings.max_lifetime:
                    tg.create_task(self._lifetime_watch(ws, self.settings.max_lifetime))
                await reader
                raise _Done
        except* _Done:
            pass
        finally:
            self.ws = None
            self._tg = None
            closed = self._clock()
            self._look_at_pipe(closed)
            self._in_pipe = None
            self.metrics.settle(closed)  # the socket's pipes count no more: booked, dropped
            uptime = self._clock() - now
            if self.state not in (ConnState.DISABLED, ConnState.DRAINING):
                self._move(ConnState.CLOSING, self._close_reason)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close()
            try:
                self.sink.on_upstream_closed(self, self._close_reason)
            except Exception as exc:
                self.faults.record("upstream.closed", exc, self.id)
        return uptime

    async def _read(self, ws: ClientConnection) -> None:
        sink, metrics, clock = self.sink, self.metrics, self._clock
        measure = self.settings.per_message_metrics
        try:
            async for msg in ws:
                now = clock()
                self.last_frame_at = now
                if measure:
                    metrics.on_message_in(now, len(msg))
                try:
                    sink.on_upstream_frame(self, msg)
                except Exception as exc:
                    self.faults.record("upstream.frame", exc, self.id)
        except ConnectionClosed as exc:
            if self._close_reason == "closed by peer":
                code = exc.rcvd.code if exc.rcvd is not None else 1006  # 1006: no close frame
                self._close_reason = f"closed by peer: code {code}"
            self.metrics.on_error(clock(), "closed")

    async def _read_lean(self, ws: ClientConnection) -> None:
        """Frames arrive synchronously from the transport; this task only waits for the end."""
        assert isinstance(ws, LeanClientConnection)
        sink, metrics, clock = self.sink, self.metrics, self._clock
        measure = self.settings.per_message_metrics

        def on_message(msg: str | bytes) -> None:
            now = clock()
            self.last_frame_at = now
            if measure:
                metrics.on_message_in(now, len(msg))
            try:
                sink.on_upstream_frame(self, msg)
            except Exception as exc:
                self.faults.record("upstream.frame", exc, self.id)

        raw: Callable[[UpstreamConnection, bytes], bool] | None = getattr(
            sink, "on_upstream_raw", None
        )
        on_frame: Callable[[bytes, int], bool] | None = None
        if raw is not None:
            write = raw

            def on_frame(frames: bytes, count: int) -> bool:
                # A relay: the frames go out first, the bookkeeping follows (the
                # client's latency ends at the write).
                if not write(self, frames):
                    return False
                now = clock()
                self.last_frame_at = now
                if measure:
                    metrics.on_message_in(now, len(frames), count)
                return True

        # The C relay step, when built: the sink (a relay) gives the pipe to its client.
        # The transport then calls C for a read; the pipe's counters are the bookkeeping,
        # read lazily (metrics, staleness, status).
        pipe: PipeLike | None = None
        make_pipe: Callable[[int | None], PipeLike | None] | None = getattr(
            sink, "upstream_pipe", None
        )
        if on_frame is not None and make_pipe is not None:
            pipe = make_pipe(ws.protocol.max_message_size)
            if pipe is not None:
                self._in_pipe, self._in_pipe_seen = pipe, pipe.frames
                if measure:
                    metrics.count_lazily(pipe, inbound=True)

        ws.set_handler(on_message, self.flusher, on_frame, pipe)
        await ws.wait_closed()
        exc = ws.protocol.close_exc
        if isinstance(exc, ConnectionClosedOK):
            return  # what `async for` does on a normal closure
        if self._close_reason == "closed by peer":
            code = exc.rcvd.code if exc.rcvd is not None else 1006  # 1006: no close frame
            self._close_reason = f"closed by peer: code {code}"
        self.metrics.on_error(clock(), "closed")

    async def _ping_loop(self, ws: ClientConnection) -> None:
        s = self.settings
        # First sample soon after the open, so a new connection has a latency before the
        # balancer and the health job need one; then every ping_interval.
        delay = min(1.0, s.ping_interval)
        while True:
            await asyncio.sleep(delay)
            delay = s.ping_interval
            try:
                waiter = await ws.ping()
                async with asyncio.timeout(s.ping_timeout):
                    rtt = await waiter
            except TimeoutError:
                self.metrics.on_error(self._clock(), "ping_timeout")
                self._close_reason = f"no pong within {s.ping_timeout:g}s"
                await self._close_ws(ws, 1011, "ping timeout")
                return
            except ConnectionClosed:
                return
            self.metrics.on_latency(self._clock(), rtt, "ws")

    async def _stale_watch(self, ws: ClientConnection) -> None:
        limit = self.settings.stale_after
        while True:
            self._look_at_pipe(self._clock())
            last = self.last_frame_at or self._clock()
            delay = max(0.05, last + limit - self._clock())
            if self._in_pipe is not None:
                # Frames the pipe writes are seen at the next look: look often enough that
                # a silence is noticed within a quarter of the limit of its start.
                delay = min(delay, max(0.05, limit / 4))
            await asyncio.sleep(delay)
            self._look_at_pipe(self._clock())
            if not self.expects_data() or self.sm.state is ConnState.DEGRADED:
                self.last_frame_at = self._clock()
                continue
            silent = self._clock() - (self.last_frame_at or 0.0)
            if silent >= limit:
                self.metrics.on_error(self._clock(), "stale")
                self._close_reason = f"stale: no frame for {silent:.1f}s (stale_after={limit:g})"
                log.warning("%s %s", self.id, self._close_reason)
                await self._close_ws(ws, 1000, "stale")
                return

    async def _lifetime_watch(self, ws: ClientConnection, lifetime: float) -> None:
        await asyncio.sleep(lifetime)
        if self.on_lifetime is not None:
            self.on_lifetime()  # the owner moves our subscriptions, then retires us
            return
        self._close_reason = f"max_lifetime {lifetime:g}s reached"
        await self._close_ws(ws, 1000, "max lifetime")

    # ------------------------------------------------------------------ stats
    def statistics(self) -> UpstreamStats:
        now = self._clock()
        self._look_at_pipe(now)
        m = self.metrics.snapshot(now)
        return UpstreamStats(
            id=self.id,
            route=self.settings.route,
            endpoint=self.settings.endpoint,
            url=self.settings.display_url,
            type=self.settings.conn_type.value,
            state=self.state.label,
            state_reason=self.sm.reason,
            state_age=now - self.sm.since,
            latency=m.latency_ewma,
            latency_app=m.latency_app_ewma,
            messages_in=m.messages_in,
            messages_out=m.messages_out,
            bytes_in=m.bytes_in,
            bytes_out=m.bytes_out,
            msg_rate=m.msg_rate_in,
            errors=m.errors_total,
            reconnects=m.reconnects_total,
            age=(now - self.opened_at) if self.ws is not None and self.opened_at else None,
            last_message_age=(now - self.last_frame_at) if self.last_frame_at else None,
            transitions=self.sm.transitions(),
            next_retry_in=max(0.0, self._retry_at - now) if self._retry_at else None,
            operator_reconnects=m.operator_reconnects,
        )

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.id} {self.state.label} {self.settings.display_url}>"


class _Done(Exception):
    """Ends the per-socket TaskGroup once the reader finishes."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to the rate-limit floor
