"""Fan-out: one upstream event of a shared subscription to every session that acked it.

This is the hot path's last step. The frame is rewritten (gateway channel id, Binance
wrapper kept or stripped) and WebSocket-encoded once per :class:`~wsgate.dialects.base.FrameForm`;
every session then costs one list append (:meth:`Session.push`). Sessions with
per-session rendering (Bitfinex sequence numbers, timestamps) take ``codec.render``.
Late joiners get the gateway's channel state as exactly one snapshot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

from websockets.asyncio.server import ServerConnection

from wsgate.core.backoff import TokenBucket
from wsgate.core.subscriptions import Subscription
from wsgate.dialects import base as d
from wsgate.runtime.downstream.session import Session
from wsgate.runtime.framing import encode_text
from wsgate.runtime.routing.seams import Deliver

__all__ = ["Channel", "FanOut", "Member"]


@dataclass(eq=False)
class Member:
    """One bot session of a hub."""

    session: Session
    codec: d.SessionCodec
    ws: ServerConnection
    subs: dict[Any, d.Subscribe] = field(default_factory=dict)  # key -> request
    acked: set[Any] = field(default_factory=set)  # in the fan-out lists
    held: dict[Any, None] = field(default_factory=dict)  # live, held by an unanswered request
    flags: int = 0
    bucket: TokenBucket | None = None


@dataclass(eq=False)
class Channel:
    """Hub-side state of one shared subscription, kept on it (``Subscription.attachment``).

    It lives and dies with the subscription, so the hot path reaches it without a lookup
    keyed by the (re-hashed, frozen) subscription key, and nothing outlives a dropped one.
    """

    state: d.ChannelState
    members: list[Member] = field(default_factory=list)  # acked sessions: the fan-out list


class FanOut:
    """Renders and pushes channel events; counts deliveries."""

    def __init__(self, dialect: d.Dialect) -> None:
        self.dialect = dialect
        self.deliveries = 0
        # The cluster data plane's tap (share = "cluster"): what an owner's sessions get,
        # its followers get too. It sees the event even when no session here wants it.
        self.tap: Deliver | None = None

    def channel(self, sub: Subscription) -> Channel:
        """The subscription's channel, created on first use."""
        ch: Channel | None = sub.attachment
        if ch is None:
            ch = sub.attachment = Channel(self.dialect.new_state(cast(d.SubKey, sub.key)))
        return ch

    def members(self, sub: Subscription) -> list[Member]:
        return self.channel(sub).members

    def remove(self, sub: Subscription | None, m: Member) -> None:
        ch: Channel | None = sub.attachment if sub is not None else None
        if ch is not None and m in ch.members:
            ch.members.remove(m)

    def deliver(self, sub: Subscription, ev: d.ChannelData) -> None:
        """Push ``ev`` to every acked session of ``sub`` (the :data:`seams.Deliver` seam)."""
        tap = self.tap
        if tap is not None:
            tap(sub, ev)
        members = (sub.attachment or self.channel(sub)).members
        if not members:
            return
        gw = sub.gw_id
        shared: dict[d.FrameForm, bytes] = {}
        kind = ev.kind
        wall: float | None = None
        for m in members:
            codec = m.codec
            if kind in codec.fast_kinds:
                frame = shared.get(codec.form)
                if frame is None:
                    frame = shared[codec.form] = encode_text(
                        self.dialect.rewrite(ev, gw, codec.form)
                    )
            else:
                if wall is None:  # Bitfinex TIMESTAMP is epoch ms, not the monotonic clock
                    wall = time.time()
                body = codec.render(ev, gw, wall)
                if body is None:
                    continue
                frame = encode_text(body)
            m.session.push(frame)
        self.deliveries += len(members)

    def close_sessions(self, sub: Subscription, code: int, reason: str) -> int:
        """Close every session of ``sub`` (the :data:`seams.CloseSessions` seam).

        They leave the fan-out list at once, so no frame after the cause reaches them.
        """
        members = self.channel(sub).members
        n = len(members)
        for m in list(members):
            m.session.close_nowait(code, reason)
        del members[:]
        return n

    def send_snapshot(self, m: Member, sub: Subscription) -> None:
        """A late joiner gets the gateway's state, so exactly one snapshot reaches it."""
        snap = self.channel(sub).state.snapshot_event()
        if snap is None:
            return  # the upstream snapshot has not arrived yet; it will reach this session
        if snap.kind in m.codec.fast_kinds:
            m.session.push(encode_text(self.dialect.rewrite(snap, sub.gw_id, m.codec.form)))
        else:
            body = m.codec.render(snap, sub.gw_id, time.time())  # epoch ms timestamps
            if body is not None:
                m.session.push_text(body)
