"""The narrow views one runtime part has of another (a leaf: it imports no runtime module).

Each seam names the few facts and callbacks that cross it, so neither side reaches into
the other's attributes and the import graph points one way:

* :class:`HubRoute` — what a :class:`~wsgate.runtime.routing.hub.Hub` needs from the route that
  owns it (configuration, operator weights and health, pool growth, the relay hand-over).
  :class:`~wsgate.runtime.routing.routes.RouteRuntime` provides it; the hub never imports routes.
* :data:`Deliver` — how :class:`~wsgate.runtime.routing.depth_sync.DepthSync` hands a synthetic
  event to the fan-out, and :data:`CloseSessions` how it ends the sessions of a channel
  whose continuity is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from wsgate.config import RouteConfig
from wsgate.core.subscriptions import Subscription
from wsgate.dialects import base as d

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from wsgate.runtime.downstream.session import Session
    from wsgate.runtime.upstream.connection import UpstreamConnection

__all__ = ["FOLLOW_CONN", "CloseSessions", "ClusterShare", "Deliver", "HubRoute"]

FOLLOW_CONN = "cluster"
"""The registry's connection id of a subscription fed by another node (``share = "cluster"``)."""

Deliver = Callable[[Subscription, d.ChannelData], None]
"""Fan one event out to the sessions of a shared subscription."""

CloseSessions = Callable[[Subscription, int, str], int]
"""Close every session of a subscription (code, reason); returns how many were closed."""


class HubRoute(Protocol):
    """The route as its hub sees it."""

    @property
    def name(self) -> str: ...

    @property
    def cfg(self) -> RouteConfig: ...

    def endpoint_weight(self, name: str) -> int:
        """The endpoint's current weight (operator override or config); 0 takes no work."""
        ...

    def health_of(self, conn: UpstreamConnection) -> float:
        """The connection's last health score, 0-100."""
        ...

    def cadence(self, key: Any, dialect_default: float | None) -> float:
        """Seconds of silence after which the channel counts as stale."""
        ...

    def no_candidate(self, reason: str) -> None:
        """Report a load-balancer issue: nowhere to place a subscription."""
        ...

    def fail_open(self, reason: str) -> None:
        """Report a placement on an unhealthy connection (every candidate unhealthy)."""
        ...

    def grow(self, force: bool = False, suffix: str | None = None) -> None:
        """One more pooled connection (opened with URL ``suffix``: a sharded venue's path;
        the dialect's own when None); raises CapacityError at a limit."""
        ...

    def retire(self, conn: UpstreamConnection) -> None:
        """Close a drained or rotated-out connection for good."""
        ...

    async def relay_after_auth(
        self, ws: ServerConnection, session: Session, frame: str, upstream_path: str | None
    ) -> None:
        """Serve an authenticated session on a dedicated upstream until it ends."""
        ...


class ClusterShare(Protocol):
    """The cluster data plane of a route (:class:`wsgate.cluster.data_plane.RouteShare`)
    as the hub sees it: all three calls return at once, nothing waits on the cluster."""

    def gate(self, sub: Subscription) -> bool:
        """True: the cluster decides where ``sub`` comes from; placement waits."""
        ...

    def tap(self, sub: Subscription, ev: d.ChannelData) -> None:
        """An event the fan-out delivers (an owner publishes it to its followers)."""
        ...

    def before_drop(self, sub: Subscription) -> bool:
        """True: followers use ``sub``; it is handed over first and dropped afterwards."""
        ...

    def dropped(self, sub: Subscription) -> None:
        """``sub`` is gone after its linger (release the lease, stop following)."""
        ...

    def resync(self, key: Any) -> None:
        """A followed channel lost its integrity: fetch the owner's state again."""
        ...

    def bridge_data(self, key: Any) -> None:
        """A hand-over's new upstream subscription sent its first data: cut the old stream."""
        ...

    async def run(self) -> None: ...

    async def hand_over(self, timeout: float) -> int:  # noqa: ASYNC109 - a bound
        """Graceful stop: let successors take every key this node owns."""
        ...

    def statistics(self) -> Any: ...
