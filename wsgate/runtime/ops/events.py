"""The daemon's event bus: state changes, health-band crossings and alert events.

Producers call :meth:`EventBus.publish` from the event loop (connection transitions,
the health job, the alerting engine). Each consumer (a ``/_wsgate/events`` dashboard
socket, a ``wsgate`` ``events.follow`` stream) holds an :class:`EventSubscriber` with a
bounded queue: when a consumer falls behind, the oldest events are dropped and counted
rather than letting one slow dashboard grow the daemon's memory. Consumers learn about
the gap from a ``dropped`` event carrying the running count.

Wire form of one event (WebSocket text frame, one JSON object)::

    {"seq": 12, "ts": 1767225600.123, "kind": "transition", "data": {...}}

Kinds: ``transition`` (a connection changed state), ``health`` (a score crossed a
10-point band), ``alert`` (published by the alerting engine), ``dropped`` (this
consumer lost events) and ``hello`` (first frame on a dashboard socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from wsgate.errors import CapacityError
from wsgate.runtime.downstream.session import Session

__all__ = [
    "BusEvent",
    "EventBus",
    "EventBusStats",
    "EventSubscriber",
    "follow",
    "make_system_route",
    "serve_events_ws",
]

log = logging.getLogger("wsgate.events")

DEFAULT_QUEUE = 1024  # events per subscriber before the oldest are dropped
RECENT = 200  # events kept for late readers (`status`, a new dashboard's backlog)
MAX_SUBSCRIBERS = 256


@dataclass(frozen=True)
class BusEvent:
    seq: int
    ts: float  # unix time of publication
    kind: str
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "data": self.data}


@dataclass(frozen=True)
class EventBusStats:
    published: int
    subscribers: int
    dropped: int  # events dropped across all subscribers, ever
    by_kind: dict[str, int]


class EventSubscriber:
    """One consumer's bounded view of the bus; use as a context manager or call close()."""

    def __init__(self, bus: EventBus, maxlen: int, kinds: frozenset[str] | None) -> None:
        self._bus = bus
        self.kinds = kinds
        self.maxlen = maxlen
        self._queue: deque[BusEvent] = deque()
        self._wake = asyncio.Event()
        self.dropped = 0
        self.delivered = 0
        self.closed = False

    def offer(self, ev: BusEvent) -> None:
        """Called by the bus; never blocks. Drops the oldest event when full."""
        if self.closed or (self.kinds is not None and ev.kind not in self.kinds):
            return
        if len(self._queue) >= self.maxlen:
            self._queue.popleft()
            self.dropped += 1
            self._bus.dropped += 1
        self._queue.append(ev)
        self._wake.set()

    def get_nowait(self) -> BusEvent | None:
        if not self._queue:
            self._wake.clear()
            return None
        self.delivered += 1
        return self._queue.popleft()

    async def wait_get(self) -> BusEvent:
        """The next event, waiting as long as it takes (cancel to stop waiting)."""
        while True:
            ev = self.get_nowait()
            if ev is not None:
                return ev
            await self._wake.wait()

    def __len__(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.clear()
            self._bus._unsubscribe(self)

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kinds = ",".join(sorted(self.kinds)) if self.kinds is not None else "*"
        return (
            f"<EventSubscriber kinds={kinds} queued={len(self._queue)}/{self.maxlen} "
            f"dropped={self.dropped}>"
        )


class EventBus:
    """Fan-out of daemon events to bounded subscriber queues."""

    def __init__(
        self,
        *,
        queue_size: int = DEFAULT_QUEUE,
        max_subscribers: int = MAX_SUBSCRIBERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"EventBus queue_size must be >= 1, got {queue_size}")
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self._clock = clock
        self._subs: list[EventSubscriber] = []
        self._recent: deque[BusEvent] = deque(maxlen=RECENT)
        self._seq = 0
        self.published = 0
        self.dropped = 0
        self._by_kind: dict[str, int] = {}

    def publish(self, kind: str, data: dict[str, Any]) -> BusEvent:
        """Record one event and offer it to every subscriber; O(subscribers), never blocks."""
        self._seq += 1
        ev = BusEvent(self._seq, self._clock(), kind, data)
        self.published += 1
        self._by_kind[kind] = self._by_kind.get(kind, 0) + 1
        self._recent.append(ev)
        for sub in self._subs:
            sub.offer(ev)
        return ev

    def subscribe(
        self, kinds: Iterable[str] | None = None, *, queue_size: int | None = None
    ) -> EventSubscriber:
        if len(self._subs) >= self.max_subscribers:
            raise CapacityError(f"event bus: {self.max_subscribers} subscribers already")
        sub = EventSubscriber(
            self, queue_size or self.queue_size, frozenset(kinds) if kinds is not None else None
        )
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: EventSubscriber) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def recent(self, n: int = RECENT, kinds: Iterable[str] | None = None) -> list[BusEvent]:
        wanted = frozenset(kinds) if kinds is not None else None
        evs = [e for e in self._recent if wanted is None or e.kind in wanted]
        return evs[-n:] if n > 0 else []

    def statistics(self) -> EventBusStats:
        return EventBusStats(
            published=self.published,
            subscribers=len(self._subs),
            dropped=self.dropped,
            by_kind=dict(self._by_kind),
        )

    def __repr__(self) -> str:
        return (
            f"<EventBus published={self.published} subscribers={len(self._subs)} "
            f"dropped={self.dropped}>"
        )


async def follow(
    bus: EventBus, stop: asyncio.Event, kinds: Iterable[str] | None = None
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ``(kind, event dict)`` until ``stop`` is set; reports gaps as ``dropped``."""
    with bus.subscribe(kinds) as sub:
        async for got in _until(sub, stop):
            if isinstance(got, int):
                yield "dropped", {"count": got}
            else:
                yield got.kind, got.as_dict()


async def _until(sub: EventSubscriber, stop: asyncio.Event) -> AsyncIterator[BusEvent | int]:
    """``sub``'s events as they come until ``stop`` is set; before the first event after
    a loss, the subscriber's dropped count (an int) so the reader can say so."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        reported = 0
        while not stop.is_set():
            getter = asyncio.ensure_future(sub.wait_get())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            if sub.dropped != reported:
                reported = sub.dropped
                yield reported
            yield getter.result()
    finally:
        stopper.cancel()


def _kinds_from(path: str) -> frozenset[str] | None:
    raw = parse_qs(urlsplit(path).query).get("kinds")
    if not raw:
        return None
    return frozenset(k for part in raw for k in part.split(",") if k)


async def serve_events_ws(bus: EventBus, ws: ServerConnection, session: Session) -> None:
    """The ``/_wsgate/events`` system route: stream bus events as JSON text frames.

    ``?kinds=transition,health`` filters; ``?backlog=N`` first replays up to N recent
    events. Frames from the client are read and ignored (so pings and closes work).
    """
    path = ws.request.path if ws.request is not None else "/"
    kinds = _kinds_from(path)
    query = parse_qs(urlsplit(path).query)
    try:
        backlog = max(0, min(RECENT, int((query.get("backlog") or ["0"])[0])))
    except ValueError:
        backlog = 0

    async def drain() -> None:
        async for _ in ws:
            session.messages_in += 1

    try:
        sub = bus.subscribe(kinds)
    except CapacityError as exc:
        log.warning("events session %d refused: %s", session.id, exc)
        await ws.close(1013, "too many event streams")
        return
    with sub:
        reader = asyncio.ensure_future(drain())
        closed = asyncio.Event()  # the bot left: its frames ended
        reader.add_done_callback(lambda _: closed.set())
        try:
            hello = {"kind": "hello", "data": {"kinds": sorted(kinds) if kinds else None}}
            await ws.send(json.dumps(hello))
            for ev in bus.recent(backlog, kinds):
                await ws.send(json.dumps(ev.as_dict(), default=str))
            async for got in _until(sub, closed):
                if isinstance(got, int):
                    await ws.send(json.dumps({"kind": "dropped", "data": {"count": got}}))
                else:
                    await ws.send(json.dumps(got.as_dict(), default=str))
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader
    log.debug("events session %d ended (dropped %d)", session.id, sub.dropped)


def make_system_route(
    bus: EventBus,
) -> Callable[[ServerConnection, Session], Awaitable[None]]:
    """The handler for the gateway's ``_wsgate`` system route (only ``/_wsgate/events``).

    Access (checked by the gateway at the handshake): ``gateway.origins`` applies as on
    every route; with ``gateway.events_token_env`` the bearer token (header or
    ``?token=``) is required (503 while the variable is unset); without it the stream is
    refused (403) unless the operator opened it with ``gateway.events_require_token =
    false``.
    """

    async def handler(ws: ServerConnection, session: Session) -> None:
        path = urlsplit(ws.request.path).path if ws.request is not None else ""
        if path.rstrip("/") != "/_wsgate/events":
            await ws.close(1008, "unknown system path; try /_wsgate/events")
            return
        await serve_events_ws(bus, ws, session)

    return handler
