"""The owner's way to NATS (:mod:`wsgate.cluster.data_plane`): the frames its fan-out
delivered this loop turn, one message per key (:mod:`wsgate.cluster.wire`), and the
route's control messages, in the order they were made.

Nothing waits: :meth:`Outbox.frame` adds to the key's message for this turn (at most
``PUBLISH_QUEUE`` frames waiting; beyond, dropped and counted, the followers see a gap),
and :meth:`Outbox.pump` runs at the fan-out's flush (the same turn as the sessions'
writes, :meth:`~wsgate.runtime.downstream.session.Flusher.call`) and hands every message
to the engine without waiting (refused by a link that is behind: dropped and counted).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsgate.cluster import wire
from wsgate.cluster.engine import Engine
from wsgate.dialects import base as d

if TYPE_CHECKING:
    from wsgate.runtime.downstream.session import Flusher

__all__ = ["BATCH_BYTES", "BATCH_FRAMES", "PUBLISH_QUEUE", "Outbox"]

PUBLISH_QUEUE = 65536  # frames waiting for the link; beyond, dropped (followers see a gap)
BATCH_FRAMES = 256  # frames of one key in one message at most
BATCH_BYTES = 256 * 1024  # ... and their text (NATS refuses a message over max_payload, 1 MB)


@dataclass(eq=False, slots=True)
class _Batch:
    """Frames of one key tapped in this turn, sequences ``first``, ``first + 1``, ..."""

    first: int
    events: list[d.ChannelData]
    size: int


class Outbox:
    def __init__(self, engine: Engine, epoch: str, flusher: Flusher | None = None) -> None:
        self.engine = engine
        self.epoch = epoch
        self.flusher = flusher
        # Messages ready for the link, in order: (subject, data, frames in it).
        self._queue: deque[tuple[str, bytes, int]] = deque()
        self._open: dict[str, _Batch] = {}  # subject -> the message this turn is filling
        self._waiting = 0  # frames in both, against PUBLISH_QUEUE
        self._due = False
        self.published = 0  # frames
        self.messages = 0  # NATS messages they took
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<Outbox waiting={self._waiting} published={self.published}>"

    def frame(self, subject: str, seq: int, ev: d.ChannelData, v1: bool = False) -> None:
        """Frame ``seq`` of the key on ``subject``; ``v1``: one message per frame (a
        follower of that key reads only v1)."""
        if self._waiting >= PUBLISH_QUEUE:
            self.dropped += 1
            return
        self._waiting += 1
        if v1:
            self._seal(subject)
            self._queue.append((subject, wire.encode_v1(self.epoch, seq, ev), 1))
        else:
            batch = self._open.get(subject)
            if batch is not None and batch.first + len(batch.events) == seq:
                batch.events.append(ev)
                batch.size += len(ev.text)
                if len(batch.events) >= BATCH_FRAMES or batch.size >= BATCH_BYTES:
                    self._seal(subject)
            else:  # the first of this turn, or after a drop: one message has no hole
                self._seal(subject)
                self._open[subject] = _Batch(seq, [ev], len(ev.text))
        if not self._due:
            self._schedule()

    def message(self, subject: str, data: bytes) -> None:
        """A control message (a link, a notice), after the frames before it."""
        self._seal(subject)
        self._queue.append((subject, data, 0))
        if not self._due:
            self._schedule()

    def pump(self) -> None:
        """Everything so far to the link, in order, without waiting."""
        self._due = False
        for subject in list(self._open):
            self._seal(subject)
        queue, publish = self._queue, self.engine.publish_nowait
        if not queue:
            return
        while queue:
            subject, data, frames = queue.popleft()
            self._waiting -= frames
            if publish(subject, data):
                self.published += frames
                self.messages += 1
            else:
                self.dropped += max(frames, 1)  # the followers see the gap
        self.engine.send_now()  # in this turn, after the sessions' writes (Flusher.flush)

    def _schedule(self) -> None:
        self._due = True
        if self.flusher is not None:
            self.flusher.call(self.pump)
        else:
            asyncio.get_running_loop().call_soon(self.pump)

    def _seal(self, subject: str) -> None:
        batch = self._open.pop(subject, None)
        if batch is not None:
            data = wire.encode_frames(self.epoch, batch.first, batch.events)
            self._queue.append((subject, data, len(batch.events)))
