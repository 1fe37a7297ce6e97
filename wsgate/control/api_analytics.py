"""Control methods for analytics: ``health``, the ``top`` stream, ``events.recent``.

``top`` yields one ``snapshot`` event per ``interval`` seconds (0.2..60, default 1) and
ends after ``count`` snapshots when ``count`` > 0; ``wsgate top`` renders them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from wsgate.control.schema import NO_PARAMS, Schema, integer, number
from wsgate.control.server import Caller, Handler
from wsgate.runtime.ops.events import RECENT

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView
    from wsgate.runtime.upstream.connection import UpstreamStats

__all__ = ["build_analytics_handlers", "conn_health_fields", "top_snapshot"]

MAX_TOP_SESSIONS = 500  # a top view of 10k sessions would be a 2 MB line per second


def _latency(stats: UpstreamStats) -> float | None:
    return stats.latency if stats.latency is not None else stats.latency_app


def top_snapshot(d: DaemonView, max_sessions: int = MAX_TOP_SESSIONS) -> dict[str, Any]:
    """Routes, connections and the busiest sessions, as one JSON document."""
    a = d.analytics
    routes, conns, sessions = [], [], []
    total_rate = 0.0
    for rt in list(d.routes.values()):
        hub = rt.hub
        hub_stats = hub.statistics() if hub is not None else None
        load = (
            {cid: hub.registry.load(cid) for cid in hub.ups} if hub is not None else {}
        )  # subscriptions per connection
        route_rate = 0.0
        up = 0
        for c in rt.connections():
            st = c.statistics()
            ch = a.connection_health(c.id)
            route_rate += st.msg_rate
            up += 1 if c.state.is_up else 0
            conns.append(
                {
                    "id": st.id,
                    "route": st.route,
                    "type": st.type,
                    "endpoint": st.endpoint,
                    "state": st.state,
                    "health": None if ch is None else round(ch.score, 1),
                    "worst": None if ch is None else ch.worst,
                    "latency": _latency(st),
                    "msg_rate": round(st.msg_rate, 2),
                    "messages_in": st.messages_in,
                    "bytes_in": st.bytes_in,
                    "errors": st.errors,
                    "reconnects": st.reconnects,
                    "subscriptions": load.get(c.id, 0),
                    "age": st.age,
                }
            )
        total_rate += route_rate
        routes.append(
            {
                "name": rt.name,
                "type": rt.cfg.type.value,
                "dialect": rt.cfg.dialect.value,
                "strategy": rt.cfg.strategy.value,
                "health": a.route_score(rt.name),
                "connections": len(rt.connections()),
                "up": up,
                "sessions": len(rt.sessions),
                "msg_rate": round(route_rate, 2),
                "subscriptions": sum(hub_stats.subscriptions.values()) if hub_stats else 0,
                "deliveries": hub_stats.deliveries if hub_stats else 0,
            }
        )
    all_sessions = list(d.gateway.sessions)
    all_sessions.sort(key=lambda s: s.bytes_out, reverse=True)
    for s in all_sessions[:max_sessions]:
        sessions.append(dataclasses.asdict(s.statistics()))
    ov = a.overview()
    return {
        "ts": time.time(),
        "node_id": d.config.daemon.node_id,
        "uptime": time.time() - d.started_at,
        "health": a.health_doc(),
        "totals": {
            "routes": len(routes),
            "connections": ov.connections,
            "up": ov.up,
            "sessions": len(all_sessions),
            "msg_rate": round(total_rate, 2),
        },
        "routes": routes,
        "connections": conns,
        "sessions": sessions,
        "sessions_truncated": len(all_sessions) > max_sessions,
        "clients": [
            {
                "name": c.name + ("" if c.configured else " (removed)"),
                "routes": list(c.routes) if c.routes is not None else None,
                "sessions": c.sessions,
                "subscriptions": c.subscriptions,
                "refused": sum(c.refused.values()),
                "max_sessions": c.max_sessions,
                "max_subscriptions": c.max_subscriptions,
            }
            for c in d.gateway.clients.statistics()
        ],
        "jobs": [j.as_dict() for j in d.jobs.statistics()],
        "loop_lag": d.loop_lag,
    }


def build_analytics_handlers(d: DaemonView) -> dict[str, Handler]:
    async def h_health(params: dict[str, Any], caller: Caller) -> Any:
        a = d.analytics
        conns = {}
        for rt in d.routes.values():
            for c in rt.connections():
                ch = a.connection_health(c.id)
                if ch is not None:
                    conns[c.id] = {"route": rt.name, **ch.as_dict()}
        return {
            **a.health_doc(),
            "overview": a.overview().as_dict(),
            "connections": conns,
            "analytics": dataclasses.asdict(a.statistics()),
        }

    async def h_top(params: dict[str, Any], caller: Caller) -> AsyncIterator[tuple[str, Any]]:
        interval: float = params["interval"]
        count: int = params["count"]
        max_sessions: int = params["max_sessions"]
        sent = 0
        while True:
            yield "snapshot", top_snapshot(d, max_sessions)
            sent += 1
            if count and sent >= count:
                return
            await asyncio.sleep(interval)

    async def h_events_recent(params: dict[str, Any], caller: Caller) -> Any:
        return [e.as_dict() for e in d.events.recent(params["limit"])]

    return {
        "health": Handler(h_health, params=NO_PARAMS),
        "top": Handler(
            h_top,
            stream=True,
            params=Schema(
                interval=number(0.2, 60.0, default=1.0),
                count=integer(0, 10**9, default=0),
                max_sessions=integer(0, 10_000, default=MAX_TOP_SESSIONS),
            ),
        ),
        "events.recent": Handler(
            h_events_recent, params=Schema(limit=integer(0, RECENT, default=50))
        ),
    }


def conn_health_fields(d: DaemonView, conn: Any, *, detail: bool = False) -> dict[str, Any]:
    """``health`` (and with ``detail`` the breakdown) for a `connections` row."""
    ch = d.analytics.connection_health(conn.id)
    out: dict[str, Any] = {
        "health": None if ch is None else round(ch.score, 2),
        "health_worst": None if ch is None else ch.worst,
    }
    if detail:
        out["health_detail"] = None if ch is None else ch.as_dict()
    return out
