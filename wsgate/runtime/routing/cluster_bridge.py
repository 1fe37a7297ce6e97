"""Make-before-break hand-over of a cluster-shared key, the hub's half.

On the *successor* (:meth:`ClusterBridge.start`): the key, fed by the old owner until now,
is subscribed upstream while the owner's frames keep feeding the sessions; what the new
upstream subscription sends is held (bounded), not delivered. When the old owner has cut
its stream and the sessions have every frame up to the cut, :meth:`ClusterBridge.finish`
switches: the held frames go through the upstream path, where each channel type continues
the state the sessions have instead of starting over:

* trade tapes (Bitfinex trades): the new subscription's snapshot is compared with the
  tape (``Integrity.BRIDGED``): only the trades the sessions lack go out, as updates;
  later frames whose trade they already have are dropped (``DUPLICATE``);
* Bitfinex books and candles, OKX and Bybit books (:class:`Rebasing`): the snapshot
  becomes the level (or candle) updates that turn the sessions' book into the new one
  (on OKX one update chained on their last ``seqId``, on Bybit one delta with the
  snapshot's ``u``; an older snapshot is dropped and the overlap's updates are
  duplicates), so checksums and chains keep verifying and no snapshot reaches a bot;
* Binance depth and trades: :mod:`depth_sync` and :mod:`trade_sync` keep ``U``/``u`` and
  trade ids continuous from what the sessions last got, as on a re-homing;
* last-value channels (tickers, status) simply continue with the newest value.

Other channels whose stream starts with a snapshot (Bitfinex funding books) are not
continued: there the snapshot goes out, the one announced gap a hand-over may cost.

On the *old owner* (:meth:`ClusterBridge.follow_on`): after the cut its sessions (if any)
are fed by the successor from the next frame on, and its upstream subscription goes.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from wsgate.core.subscriptions import Subscription, SubState
from wsgate.dialects import base as d
from wsgate.runtime.routing.seams import FOLLOW_CONN

__all__ = ["BRIDGE_BUFFER", "ClusterBridge", "Rebasing"]

log = logging.getLogger("wsgate.hub")

BRIDGE_BUFFER = 65536  # upstream frames held while the old owner's stream still feeds


@runtime_checkable
class Rebasing(Protocol):
    """A channel state that can turn a fresh snapshot into updates for its sessions."""

    def rebase(self, event: d.ChannelData) -> list[d.ChannelData] | None:
        """None: ``event`` is not a snapshot (apply it as usual); otherwise the state now
        holds the snapshot and the returned updates take the sessions there."""
        ...


class ClusterBridge:
    def __init__(self, hub: Any, on_first_data: Callable[[Any], None]) -> None:
        self.hub = hub
        self.held: dict[Any, deque[d.ChannelData]] = {}
        self._data: set[Any] = set()  # keys whose new stream has sent data
        self._switched: set[Any] = set()  # finished before the new stream sent data
        self._on_first_data = on_first_data
        self.started = 0
        self.finished = 0
        self.overflows = 0
        self.rebased = 0

    def __repr__(self) -> str:
        return f"<ClusterBridge holding={len(self.held)} finished={self.finished}>"

    def start(self, key: Any) -> bool:
        """Subscribe ``key`` upstream while its followed frames still feed the sessions."""
        hub = self.hub
        sub = hub.registry.get(key)
        if sub is None or key in self.held or sub.state is not SubState.CONFIRMED:
            return False
        self.held[key] = deque()
        self.started += 1
        hub.registry.unplace(sub, hub.clock())
        hub.placement.place(sub)
        return True

    def hold(self, sub: Subscription, ev: d.ChannelData) -> None:
        q = self.held[sub.key]
        if sub.key in self._switched:
            # Switched before the new stream sent data: its first frame (the snapshot)
            # still continues the sessions' state; then the upstream path as usual.
            if ev.kind is d.DataKind.DATA:
                del self.held[sub.key]
                self._switched.discard(sub.key)
                self.hub.on_bridged_frame(sub, ev)
            return
        if len(q) >= BRIDGE_BUFFER:
            self.overflows += 1
            log.warning("hand-over of %s: %d frames held; switching now", sub.key, len(q))
            self.finish(sub.key)
            self.hub.on_bridged_frame(sub, ev)
            return
        q.append(ev)
        if ev.kind is d.DataKind.DATA and sub.key not in self._data:
            self._data.add(sub.key)
            self._on_first_data(sub.key)  # the new stream runs: time to cut the old one

    def finish(self, key: Any) -> None:
        """The sessions have the old owner's stream up to the cut: continue upstream."""
        q = self.held.pop(key, None)
        sub = self.hub.registry.get(key)
        if q is None or sub is None:
            self._data.discard(key)
            return
        self.finished += 1
        if key not in self._data:  # nothing yet: the first data frame is bridged on arrival
            self.held[key] = deque()
            self._switched.add(key)
            return
        self._data.discard(key)
        for ev in q:
            self.hub.on_bridged_frame(sub, ev)

    def rebase(self, sub: Subscription, ev: d.ChannelData) -> list[d.ChannelData] | None:
        ch = sub.attachment
        state = ch.state if ch is not None else None
        if not isinstance(state, Rebasing):
            return None
        updates = state.rebase(ev)
        if updates is not None:
            self.rebased += 1
        return updates

    def follow_on(self, key: Any, owner: str) -> None:
        """The old owner after the cut: its sessions continue from the successor's frames
        (no reset, no snapshot); without sessions the key simply goes."""
        hub = self.hub
        sub = hub.registry.get(key)
        if sub is None:
            return
        if sub.state is SubState.LINGER or not sub.sessions:
            hub.placement.drop_upstream(sub)
            return
        now = hub.clock()
        u = hub.ups.get(sub.conn_id or "")
        if u is not None:
            hub.placement.send_unsubscribe(u, key, sub.upstream_id)
        hub.registry.assign(sub, FOLLOW_CONN, now)
        hub.registry.confirm(sub, ("follow", owner), now)
