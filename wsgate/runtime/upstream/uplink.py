"""The hub's side of one shared upstream connection: its codec and a budgeted writer.

Every frame the hub sends upstream (subscribe, unsubscribe, conf, application ping) goes
through :meth:`Uplink.send` into a bounded queue; :meth:`Uplink.run_writer` drains it
within the exchange's per-connection message budget (a :class:`TokenBucket`). A full
queue drops the frame, counts it (``dropped_sends``, shown in status and metrics) and
logs it: the exchange would have disconnected us for the burst anyway.

A frame may carry an ``on_written`` note, called with the time it actually left: a
subscribe still waiting for the budget (a large Binance batch at 5 messages a second) is
not overdue, its confirmation clock starts when it is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from wsgate.core.backoff import TokenBucket
from wsgate.core.balancer import ErrorPenalty
from wsgate.dialects import base as d
from wsgate.errors import UpstreamError
from wsgate.runtime.system.faults import Faults
from wsgate.runtime.upstream.connection import UpstreamConnection

__all__ = ["SEND_QUEUE", "Uplink"]

log = logging.getLogger("wsgate.hub")

SEND_QUEUE = 4096  # frames waiting for the per-connection message budget
MAX_PINGS = 16  # unanswered application pings remembered per connection


@dataclass(eq=False)
class Uplink:
    """Hub-side state of one pooled upstream connection (one per ``conn.id``)."""

    conn: UpstreamConnection
    bucket: TokenBucket
    suffix: str = ""  # the URL suffix it was opened with (its shard on a sharded venue)
    codec: d.UpstreamCodec | None = None  # None while the connection is not open
    queue: deque[str] = field(default_factory=deque)
    # Beside ``queue``, one entry per frame: called with the time the frame was written.
    notes: deque[Callable[[float], None] | None] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    req_ids: dict[int, Any] = field(default_factory=dict)  # req id -> SubKey (Binance)
    pings: dict[int, float] = field(default_factory=dict)  # cid -> sent at
    confs: deque[int] = field(default_factory=deque)  # conf flags sent, awaiting the reply
    penalty: ErrorPenalty = field(default_factory=ErrorPenalty)
    dropped_sends: int = 0
    # Channels the exchange said this socket can carry (its "limit" error, e.g. Bitfinex
    # 10305, at that load); None until it says so. Without it a subscription refused by
    # two full connections would bounce between them for ever.
    learned_capacity: int | None = None
    # When channel data last arrived on this connection (any socket of it): the alert
    # inputs judge staleness across reconnects from it.
    last_data_at: float | None = None

    @property
    def id(self) -> str:
        return self.conn.id

    @property
    def draining(self) -> bool:
        """The connection is DRAINING (rotation, operator drain): no new placements."""
        return self.conn.draining

    @property
    def ready(self) -> bool:
        """Open and speaking the dialect: frames sent now reach the exchange."""
        return self.codec is not None

    def opened(self, codec: d.UpstreamCodec) -> None:
        """A fresh connection: nothing from the previous one is still owed."""
        self.codec = codec
        self.learned_capacity = None  # a new socket: the exchange's count starts over
        self.queue.clear()
        self.notes.clear()
        self.req_ids.clear()
        self.pings.clear()
        self.confs.clear()

    def closed(self) -> None:
        self.codec = None
        self.wake.set()  # ends the writer

    def send(self, frame: str, on_written: Callable[[float], None] | None = None) -> bool:
        """Queue ``frame``; False when the queue is full and it was dropped."""
        if len(self.queue) >= SEND_QUEUE:
            self.dropped_sends += 1
            log.error("%s: send queue full; frame dropped", self.conn.id)
            return False
        self.queue.append(frame)
        self.notes.append(on_written)
        self.wake.set()
        return True

    def ping_sent(self, cid: int, now: float) -> None:
        self.pings[cid] = now
        if len(self.pings) > MAX_PINGS:  # unanswered pings must not accumulate
            self.pings.pop(next(iter(self.pings)))

    async def run_writer(self, clock: Callable[[], float], faults: Faults) -> None:
        """Send queued frames within the message budget until the connection closes."""
        conn = self.conn
        while self.codec is not None:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = self.bucket.reserve(clock())
            if wait > 0:
                await asyncio.sleep(wait)
            if self.codec is None:
                return
            frame = self.queue.popleft()
            notes = [self.notes.popleft()]
            if self.queue and isinstance(self.codec, d.Coalescing):
                # Venues that count requests, not args (OKX 480 ops/hour, Bybit spot 10
                # args a request): what waited for the budget leaves as one request.
                left = len(self.queue)
                frame = self.codec.coalesce(frame, self.queue)
                notes += [self.notes.popleft() for _ in range(left - len(self.queue))]
            try:
                await conn.send(frame)
            except (UpstreamError, ConnectionError, ConnectionClosed):
                return  # the connection is lost: its subscriptions are re-homed
            except Exception as exc:  # this frame is lost; the next ones still go
                faults.record("hub.writer", exc, f"{conn.id}: {frame[:80]}")
            now = clock()
            for note in notes:  # a lost frame too: its confirmation will not come either
                if note is not None:
                    note(now)

    def __repr__(self) -> str:
        return (
            f"<Uplink {self.conn.id} ready={self.ready} queued={len(self.queue)} "
            f"draining={self.draining}>"
        )
