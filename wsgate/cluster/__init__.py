"""The cluster: nodes that know each other, one page per fact, silences that hold everywhere.

``[cluster] engine = "none"`` (the default) gives :class:`LocalCluster`: one node, nothing
external. ``engine = "nats"`` gives :class:`ClusterNode` on :class:`NatsEngine`. The seam
other engines would implement is :mod:`wsgate.cluster.engine`; the pure membership rules
live in :mod:`wsgate.core.cluster`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsgate.cluster.base import CLUSTER_SCOPED, Cluster, ClusterStatistics, LocalCluster
from wsgate.cluster.engine import Engine, KvBucket, KvEntry

if TYPE_CHECKING:
    from wsgate.cluster.budgets import ClusterBudgets

__all__ = [
    "CLUSTER_SCOPED",
    "Cluster",
    "ClusterStatistics",
    "Engine",
    "KvBucket",
    "KvEntry",
    "LocalCluster",
    "brief",
    "build_budgets",
    "build_cluster",
    "node_summary",
]


def node_summary(daemon: Any) -> dict[str, Any]:
    """What a heartbeat carries: enough for ``wsgate cluster nodes`` without asking."""
    from wsgate.version import __version__

    upstreams: dict[str, int] = {}
    for rt in daemon.routes.values():
        for conn in rt.connections():
            label = conn.state.label
            upstreams[label] = upstreams.get(label, 0) + 1
    overview = daemon.analytics.overview()
    budgets = getattr(daemon, "budgets", None)
    alerting = daemon.alerting
    gw = daemon.config.gateway  # before the listener binds (join), its configured port
    return {
        "version": __version__,
        "started_at": daemon.started_at,
        "gateway": f"{gw.host}:{daemon.gateway.port if daemon.gateway.server else gw.port}",
        "health": None if overview.health is None else round(overview.health, 1),
        "sessions": len(daemon.gateway.sessions),
        "upstreams": upstreams,
        "alerts": alerting.engine.statistics().firing if alerting is not None else 0,
        "routes": sorted(daemon.routes),
        # What a spread weighs before handing this node a key (wsgate.core.leases).
        "route_health": {
            r.route: round(r.health, 1) for r in overview.by_route if r.health is not None
        },
        "connect_budget": budgets.route_use() if budgets is not None else {},
    }


def brief(cluster: Cluster, cfg: Any) -> dict[str, Any]:
    """The cluster part of ``wsgate status``: engine, link, nodes by state."""
    s = cluster.statistics()
    return {
        "engine": s.engine,
        "name": cfg.name if cluster.enabled else None,
        "link_up": s.link_up,
        "identity": s.identity,
        "nodes": {"up": s.nodes_up, "down": s.nodes_down, "left": s.nodes_left},
    }


def build_cluster(daemon: Any, status: Callable[[], dict[str, Any]]) -> Cluster:
    """``status`` is the node's ``wsgate status`` document (the control plane's, passed in:
    the cluster sits below the control plane and never imports it)."""
    cfg = daemon.config

    def summary() -> dict[str, Any]:
        return node_summary(daemon)

    if not cfg.cluster.enabled:
        return LocalCluster(cfg.daemon.node_id, summary=summary, status=status)
    from wsgate.cluster.nats_engine import NatsEngine
    from wsgate.cluster.node import ClusterNode

    engine = NatsEngine(cfg.cluster, f"wsgate {cfg.daemon.node_id}")
    rng = random.Random(daemon.rng.random())
    events = getattr(daemon, "events", None)

    def on_change(data: dict[str, Any]) -> None:
        if events is not None:
            events.publish("cluster", data)

    return ClusterNode(
        cfg.cluster,
        cfg.daemon.node_id,
        engine,
        summary=summary,
        status=status,
        rng=rng,
        on_change=on_change,
    )


def build_budgets(cluster: Cluster, cfg: Any, rng: random.Random) -> ClusterBudgets | None:
    """The cluster's exchange budgets (:mod:`wsgate.cluster.budgets`) on a cluster engine;
    None on a single node."""
    engine = getattr(cluster, "engine", None)
    if engine is None:
        return None
    from wsgate.cluster.budgets import ClusterBudgets

    def nodes() -> int:
        # Nodes that may be spending the budget while this one cannot see the ledger: up
        # or down (a down node may only be cut off from NATS, spending its own share).
        s = cluster.statistics()
        return s.nodes_up + s.nodes_down

    return ClusterBudgets(
        cfg.cluster,
        cfg.daemon.node_id,
        engine,
        live_nodes=nodes,
        rng=random.Random(rng.random()),
    )
