"""The cluster link of a route's data plane going away and coming back
(:class:`wsgate.cluster.data_plane.RouteShare`).

The engine's link to NATS is one client connection; when it drops, the node opens a new
one, and nothing subscribed on the old one (followed frames, served state, the lease
watch) or its KV handle comes along. A short outage can end between two looks of the
route's watch: the link is then *replaced* rather than seen down, and is treated the same
way — fall back to subscribing here, then back to the lease rules with fresh state — or
followed keys would starve on dead subscriptions while their owner's lease lapses, and an
owner would keep a stream its followers no longer see whole.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["fall_back", "rejoin", "replaced"]

log = logging.getLogger("wsgate.cluster")

# The route's RouteShare (an import of it here would be a cycle).
RouteShare = Any


def _links(share: RouteShare) -> int:
    return int(share.engine.statistics().connects)


def replaced(share: RouteShare) -> bool:
    """The engine connected again since the lease watch started (an outage we did not see)."""
    if _links(share) == share.links:
        return False
    log.warning("route %s: the cluster link was replaced (a short outage)", share.route)
    return True


def fall_back(share: RouteShare) -> None:
    """The link is gone: followed keys are subscribed here, as share = "node" does; owned
    ones stay subscribed here (their lease lapses by itself, or is ours again on rejoin,
    with a stream that starts past a left-out sequence number)."""
    share._bucket = None
    for key in list(share.followed):
        fol = share.followed.pop(key)
        share.fallbacks += 1
        log.warning(
            "route %s: cluster link lost; subscribing %s here (was following %s)",
            share.route,
            key,
            fol.owner,
        )
        share.local.add(key)
        share.hub.cluster_go_local(key)
        if fol.served is not None and share._tg is not None:
            share._tg.create_task(fol.served.stop())
    for key in list(share.owned):
        own = share.owned.pop(key)
        share.local.add(key)
        log.warning(
            "route %s: cluster link lost; %s stays subscribed here, not published (at %d)",
            share.route,
            key,
            own.seq,
        )
        if own.served is not None and share._tg is not None:
            share._tg.create_task(own.served.stop())


def rejoin(share: RouteShare) -> None:
    """The link is (back) up: every key subscribed here goes back to the lease rules."""
    share.links = _links(share)
    for key in list(share.local):
        sub = share.hub.registry.get(key)
        if sub is None or not sub.sessions:
            continue
        share._redecide(key)
