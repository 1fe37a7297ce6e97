"""The control API: one function per command, bound to the running daemon.

The daemon is seen through :class:`~wsgate.control.view.DaemonView` (typed, read-only).

Results are plain JSON documents; ``wsgate <cmd> --json`` prints exactly them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from wsgate.cluster import brief as cluster_brief
from wsgate.config import config_view
from wsgate.control.api_alerts import build_alert_handlers
from wsgate.control.api_analytics import build_analytics_handlers, conn_health_fields
from wsgate.control.api_balance import adaptive_doc, build_balance_handlers
from wsgate.control.api_clients import build_client_handlers
from wsgate.control.api_cluster import build_cluster_handlers
from wsgate.control.audit import operator_action
from wsgate.control.schema import NO_PARAMS, Schema, string
from wsgate.control.server import Caller, Handler
from wsgate.errors import ControlError
from wsgate.redact import mask_url
from wsgate.version import __version__

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView

__all__ = ["build_handlers"]


def _conn_dict(conn: Any) -> dict[str, Any]:
    return dataclasses.asdict(conn.statistics())


def _share_doc(rt: Any) -> dict[str, Any] | None:
    share = rt.hub.share if rt.hub is not None else None
    if share is None or rt.cfg.share != "cluster":
        return None
    return dataclasses.asdict(share.statistics())


def status(d: DaemonView) -> dict[str, Any]:
    routes = []
    for rt in d.routes.values():
        conns = rt.connections()
        states: dict[str, int] = {}
        for c in conns:
            states[c.state.label] = states.get(c.state.label, 0) + 1
        hub_stats = rt.hub.statistics() if rt.hub is not None else None
        routes.append(
            {
                "name": rt.name,
                "dialect": rt.cfg.dialect.value,
                "type": rt.cfg.type.value,
                "strategy": rt.balancer.strategy.value,
                "adaptive": adaptive_doc(rt),
                "endpoints": [mask_url(e.url) for e in rt.cfg.endpoints],
                "sessions": len(rt.sessions),
                "connections": {"total": len(conns), "up": rt.open_connections(), "states": states},
                "health": d.analytics.route_score(rt.name),
                # frames the upstream send queue could not take (runtime.uplink.SEND_QUEUE)
                "dropped_sends": hub_stats.dropped_sends if hub_stats is not None else 0,
                # trade channels resumed after an upstream change: bridged (the missed
                # trades sent once as updates) or announced (a gap, sent as a snapshot)
                "trade_resumes": (
                    {**hub_stats.trade_resumes, "trades_bridged": hub_stats.trades_bridged}
                    if hub_stats is not None
                    else None
                ),
                # share = "cluster": keys owned, followed, subscribed here for lack of a
                # link; frames published and received, gaps, takeovers, fallbacks
                "share": rt.cfg.share,
                "cluster_share": _share_doc(rt),
            }
        )
    return {
        "version": __version__,
        "node_id": d.config.daemon.node_id,
        "pid": os.getpid(),
        "uptime": time.time() - d.started_at,
        "started_at": d.started_at,
        "demo": d.demo,
        "simulators": d.simulators,
        "config_path": d.config_path,
        "config_generation": d.generation,
        "config_sha256": d.config.source_sha256,
        "last_reload": d.last_reload,
        "gateway": d.gateway.statistics(),
        "control_socket": d.config.daemon.control_socket,
        "sessions": len(d.gateway.sessions),
        # [[gateway.clients]]: each identity's sessions, subscriptions and refusals
        "clients": [dataclasses.asdict(c) for c in d.gateway.clients.statistics()],
        "anonymous_sessions": sum(1 for s in d.gateway.sessions if s.client is None),
        "loop_lag": round(d.loop_lag, 6),
        "handler_errors": dataclasses.asdict(d.faults.statistics()),
        "tasks": len(asyncio.all_tasks()),  # leak checks: chaos drills compare it over time
        "health": d.analytics.health_doc(),
        "routes": routes,
        "jobs": [j.as_dict() for j in d.jobs.statistics()],
        "budgets": d.budgets.snapshot(),
        "cluster": cluster_brief(d.cluster, d.config.cluster),
    }


def _find_connection(d: DaemonView, conn_id: str) -> Any:
    for rt in d.routes.values():
        for c in rt.connections():
            if c.id == conn_id:
                return c
    raise ControlError("not_found", f"no upstream connection {conn_id!r}; see `wsgate connections`")


def build_handlers(d: DaemonView) -> Mapping[str, Handler]:
    async def h_status(params: dict[str, Any], caller: Caller) -> Any:
        return status(d)

    async def h_connections(params: dict[str, Any], caller: Caller) -> Any:
        route = params.get("route")
        return [
            {**_conn_dict(c), **conn_health_fields(d, c)}
            for rt in d.routes.values()
            if route in (None, rt.name)
            for c in rt.connections()
        ]

    async def h_connection_show(params: dict[str, Any], caller: Caller) -> Any:
        conn = _find_connection(d, params["id"])
        return {
            **_conn_dict(conn),
            **conn_health_fields(d, conn, detail=True),
            "history": [dataclasses.asdict(p) for p in conn.metrics.history()],
            "recent_transitions": [t.as_dict() for t in conn.sm.history()],
        }

    async def h_connection_reconnect(params: dict[str, Any], caller: Caller) -> Any:
        conn = _find_connection(d, params["id"])
        conn.request_reconnect(f"operator uid {caller.uid} pid {caller.pid}", operator=True)
        operator_action(d, "reconnect", conn, caller)
        return {"id": conn.id, "state": conn.state.label}

    async def h_connection_disable(params: dict[str, Any], caller: Caller) -> Any:
        conn = _find_connection(d, params["id"])
        conn.disable(f"disabled by uid {caller.uid} pid {caller.pid}")
        operator_action(d, "disable", conn, caller)
        return {"id": conn.id, "state": conn.state.label}

    async def h_connection_enable(params: dict[str, Any], caller: Caller) -> Any:
        conn = _find_connection(d, params["id"])
        conn.enable(f"enabled by uid {caller.uid} pid {caller.pid}")
        operator_action(d, "enable", conn, caller)
        return {"id": conn.id, "state": conn.state.label}

    async def h_reload(params: dict[str, Any], caller: Caller) -> Any:
        return await d.reload(f"control (uid {caller.uid}, pid {caller.pid})")

    async def h_reload_plan(params: dict[str, Any], caller: Caller) -> Any:
        return await d.reload(f"dry run (uid {caller.uid}, pid {caller.pid})", dry_run=True)

    async def h_config_show(params: dict[str, Any], caller: Caller) -> Any:
        return config_view(d.config)

    async def h_stop(params: dict[str, Any], caller: Caller) -> Any:
        d.stop(f"control (uid {caller.uid}, pid {caller.pid})")
        return {"stopping": True}

    async def h_events(params: dict[str, Any], caller: Caller) -> AsyncIterator[tuple[str, Any]]:
        async for ev in d.follow_events():
            yield ev

    by_id = Schema(id=string(required=True))
    return {
        "status": Handler(h_status, params=NO_PARAMS),
        "connections": Handler(h_connections, params=Schema(route=string())),
        "connections.show": Handler(h_connection_show, params=by_id),
        "connections.reconnect": Handler(h_connection_reconnect, mutating=True, params=by_id),
        "connections.disable": Handler(h_connection_disable, mutating=True, params=by_id),
        "connections.enable": Handler(h_connection_enable, mutating=True, params=by_id),
        "reload": Handler(h_reload, mutating=True, params=NO_PARAMS),
        "reload.plan": Handler(h_reload_plan, params=NO_PARAMS),
        "config.show": Handler(h_config_show, params=NO_PARAMS),
        "stop": Handler(h_stop, mutating=True, params=NO_PARAMS),
        "events.follow": Handler(h_events, stream=True, params=NO_PARAMS),
        **build_balance_handlers(d),
        **build_analytics_handlers(d),
        **build_alert_handlers(d),
        **build_cluster_handlers(d),
        **build_client_handlers(d),
    }
