"""What the cluster data plane keeps per key (:mod:`wsgate.cluster.data_plane`), and its
statistics: a followed key (the owner's stream, its sequence, frames held across a
hand-over) and an owned key (the lease, the sequence published, who follows)."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from wsgate.cluster.engine import Subscription as Served
from wsgate.core.leases import SeqTracker
from wsgate.dialects import base as d

__all__ = ["FOLLOW_BUFFER", "Followed", "Owned", "ShareStatistics", "event_of", "parse_doc"]

FOLLOW_BUFFER = 4096  # frames held while a follower waits for the owner's state


@dataclass(eq=False)
class Followed:
    owner: str
    epoch: str
    served: Served | None = None
    tracker: SeqTracker = field(default_factory=SeqTracker)
    ready: bool = False
    buffer: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=FOLLOW_BUFFER))
    held: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=FOLLOW_BUFFER))
    successor_since: float | None = None  # the lease names a successor continuing us


@dataclass(eq=False)
class Owned:
    revision: int
    renewed_at: float
    seq: int = 0
    served: Served | None = None
    asked: int = 0  # state requests answered: followers exist
    publishing: bool = True  # False while a hand-over to us still follows the old owner
    cut: int | None = None  # handed over: the last sequence we published
    followers: dict[str, float] = field(default_factory=dict)  # node -> when it last asked
    legacy: bool = False  # a follower reads v1 frames only (wsgate.cluster.wire)


@dataclass(frozen=True)
class ShareStatistics:
    owned: int
    followed: int
    local: int
    published: int  # frames
    publish_dropped: int
    received: int
    gaps: int
    takeovers: int
    fallbacks: int
    handed_over: int = 0  # keys whose stream a successor continued (no gap)
    taken_over: int = 0  # keys we continued from a live owner (no gap)
    linked: int = 0  # followed keys that went on to a successor's stream without a gap
    moves_out: int = 0  # spread moves this node started
    moves_in: int = 0  # spread moves this node accepted
    last_move: dict[str, Any] | None = None
    unfit: dict[str, str] = field(default_factory=dict)  # nodes the spread targets not, why
    handing: int = 0  # owned keys being handed over now (a successor holds the lease)
    lease_events: int = 0  # entries the route's lease watch delivered (what idle keys cost)
    published_messages: int = 0  # NATS messages the published frames took


def event_of(raw: Any) -> d.ChannelData | None:
    if not isinstance(raw, list) or len(raw) != 6:
        return None
    channel, kind, text, start, end, ts = raw
    try:
        return d.ChannelData(channel, d.DataKind(kind), str(text), int(start), int(end), ts)
    except (ValueError, TypeError):
        return None


def parse_doc(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
