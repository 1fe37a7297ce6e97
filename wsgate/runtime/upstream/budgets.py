"""Connect budgets per upstream host, shared by every connection to that host.

On one node each host has a :class:`~wsgate.core.backoff.TokenBucket` that hands out
future slots in order. A host that a ``share = "cluster"`` route connects to is counted
for the whole cluster instead: its connect slots come from a :class:`SharedBudget` (the
cluster's budget ledger, :mod:`wsgate.cluster.budgets`), so N nodes behind one egress IP
together stay within what the exchange allows that IP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from wsgate.core.backoff import TokenBucket

__all__ = ["HostBudgets", "SharedBudget"]


class SharedBudget(Protocol):
    """A budget counted across the cluster (implemented in :mod:`wsgate.cluster.budgets`)."""

    async def take_connect(self, host: str, count: int, per: float) -> float:
        """0.0: a connect slot is this node's now; > 0: ask again after that many seconds.
        Bounded in time; without the cluster it answers from this node's local share."""
        ...

    def connect_snapshot(self, host: str) -> dict[str, Any] | None: ...


class HostBudgets:
    """Connect budgets per upstream host, shared by every connection to that host."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._limits: dict[str, tuple[int, float]] = {}
        self._cluster_routes: dict[str, set[str]] = {}  # host -> share = "cluster" routes
        self.shared: SharedBudget | None = None

    def __repr__(self) -> str:
        return f"<HostBudgets hosts={sorted(self._buckets)} cluster={sorted(self.cluster_hosts)}>"

    def configure(
        self, host: str, count: int, per: float, *, route: str = "", cluster: bool = False
    ) -> TokenBucket:
        """``cluster``: ``route`` (share = "cluster") wants this host counted cluster-wide."""
        routes = self._cluster_routes.setdefault(host, set())
        if cluster:
            routes.add(route)
        else:
            routes.discard(route)
        self._limits[host] = (count, per)
        b = self._buckets.get(host)
        if b is None or b.capacity != count or abs(b.rate - count / per) > 1e-9:
            b = TokenBucket(count, per, self._clock())
            self._buckets[host] = b
        return b

    def forget_route(self, route: str) -> None:
        """``route`` is reconfigured (or gone): it no longer marks any host."""
        for routes in self._cluster_routes.values():
            routes.discard(route)

    @property
    def cluster_hosts(self) -> set[str]:
        if self.shared is None:
            return set()
        return {h for h, routes in self._cluster_routes.items() if routes}

    def reserve(self, host: str) -> float:
        """This node's bucket: a slot now or later; how long the caller must wait for it."""
        b = self._buckets.get(host)
        return 0.0 if b is None else b.reserve(self._clock())

    async def acquire(self, host: str) -> tuple[float, bool]:
        """``(wait, final)``: wait that long; ``final`` means the slot is then the caller's,
        otherwise it asks again (a cluster budget grants no future slots)."""
        shared = self.shared
        if shared is not None and self._cluster_routes.get(host):
            count, per = self._limits[host]
            wait = await shared.take_connect(host, count, per)
            return wait, wait <= 0
        return self.reserve(host), True

    def route_use(self) -> dict[str, float]:
        """Per ``share = "cluster"`` route, the used fraction of its host's connect budget
        as this node sees it (the cluster's use; this node's share without the ledger)."""
        out: dict[str, float] = {}
        if self.shared is None:
            return out
        for host, routes in self._cluster_routes.items():
            doc = self.shared.connect_snapshot(host) if routes else None
            if not doc or not doc.get("limit"):
                continue
            if doc.get("mode") == "local share" and doc.get("share"):
                use = doc["used_here"] / doc["share"]
            else:
                use = doc["used"] / doc["limit"]
            for route in routes:
                out[route] = round(min(1.0, use), 3)
        return out

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for h, b in self._buckets.items():
            doc: dict[str, Any] = {
                "available": round(b.available(now), 3),
                "capacity": b.capacity,
                "used_fraction": round(b.used_fraction(now), 3),
                "granted": b.granted,
                "delayed": b.delayed,
            }
            if self.shared is not None and h in self.cluster_hosts:
                # This node's bucket is not used for the host: show the cluster's figures
                # (the capacity alert judges the cluster's use of the budget).
                cluster = self.shared.connect_snapshot(h) or {}
                doc["cluster"] = cluster
                if cluster.get("limit"):
                    used, limit = cluster["used"], cluster["limit"]
                    doc["available"] = max(0, limit - used)
                    doc["capacity"] = float(limit)
                    doc["used_fraction"] = round(min(1.0, used / limit), 3)
                    doc["granted"] = cluster["granted"]
                    doc["delayed"] = cluster["waits"]
            out[h] = doc
        return out
