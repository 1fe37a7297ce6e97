"""Control commands about the cluster: `cluster.nodes` and `cluster.status` (read-only;
admin commands act only on the node whose socket is used)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wsgate.control.schema import NO_PARAMS, Schema, number
from wsgate.control.server import Caller, Handler

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView

__all__ = ["build_cluster_handlers"]

_MAX_TIMEOUT = 30.0


def _head(d: DaemonView) -> dict[str, Any]:
    c = d.cluster
    stats = c.statistics()
    return {
        "cluster": d.config.cluster.name if c.enabled else None,
        "engine": d.config.cluster.engine,
        "node_id": d.config.daemon.node_id,
        "link_up": stats.link_up,
        "identity": stats.identity,
        "claims": {
            "won": stats.claims_won,
            "lost": stats.claims_lost,
            "failed": stats.claim_failures,
        },
        "engine_stats": (
            dataclasses.asdict(stats.engine_stats) if stats.engine_stats is not None else None
        ),
    }


def build_cluster_handlers(d: DaemonView) -> Mapping[str, Handler]:
    async def h_nodes(params: dict[str, Any], caller: Caller) -> Any:
        return {**_head(d), "nodes": d.cluster.nodes()}

    async def h_status(params: dict[str, Any], caller: Caller) -> Any:
        return {**_head(d), "nodes": await d.cluster.status_all(float(params["timeout"]))}

    status_params = Schema(timeout=number(0.05, _MAX_TIMEOUT, default=2.0))
    return {
        "cluster.nodes": Handler(h_nodes, params=NO_PARAMS),
        "cluster.status": Handler(h_status, params=status_params),
    }
