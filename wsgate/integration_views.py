"""The specification's analytics and alert views (:mod:`wsgate.integration`'s read side).

Thin adapters over :class:`wsgate.Gateway`: per-connection performance figures, the
per-type summary, and active alerts, in the specification's shapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsgate.core.alerts.state import AlertView
from wsgate.core.types import ConnectionType, Severity
from wsgate.embed import Gateway
from wsgate.redact import mask_url

__all__ = ["ActiveAlert", "AlertManager", "ConnectionAnalytics", "PerformanceMetrics"]


# ---------------------------------------------------------------- analytics and alerts
@dataclass(frozen=True)
class PerformanceMetrics:
    """One upstream connection's figures, as the analytics job and health score see them."""

    connection_id: str
    connection_type: ConnectionType
    route: str
    endpoint: str
    url: str
    state: str
    avg_latency_ms: float | None  # EWMA of ping RTT (WebSocket ping, else application ping)
    peak_latency_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    messages_per_second: float
    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int
    error_count: int
    error_rate: float  # errors per second over the rate window
    reconnect_count: int
    uptime_seconds: float
    availability: float | None
    health_score: float
    timestamp: float


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class ConnectionAnalytics:
    """``manager.analytics``: performance figures per connection type."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def get_performance_metrics(
        self, connection_type: ConnectionType | str
    ) -> list[PerformanceMetrics]:
        ctype = ConnectionType(connection_type)
        now = time.monotonic()
        out: list[PerformanceMetrics] = []
        for rt in self._gw.daemon.routes.values():
            if rt.cfg.type is not ctype:
                continue
            for conn in rt.connections():
                m = conn.metrics.snapshot(now)
                s = conn.settings
                out.append(
                    PerformanceMetrics(
                        connection_id=conn.id,
                        connection_type=ctype,
                        route=rt.name,
                        endpoint=s.endpoint,
                        url=mask_url(s.url),  # the embedding app may log it
                        state=conn.state.label,
                        avg_latency_ms=_ms(conn.metrics.effective_latency()),
                        peak_latency_ms=_ms(m.latency_peak),
                        p50_latency_ms=_ms(m.latency_p50),
                        p95_latency_ms=_ms(m.latency_p95),
                        p99_latency_ms=_ms(m.latency_p99),
                        messages_per_second=m.msg_rate_in,
                        messages_received=m.messages_in,
                        messages_sent=m.messages_out,
                        bytes_received=m.bytes_in,
                        bytes_sent=m.bytes_out,
                        error_count=m.errors_total,
                        error_rate=m.error_rate,
                        reconnect_count=m.reconnects_total,
                        uptime_seconds=m.uptime,
                        availability=m.availability,
                        health_score=rt.health_of(conn),
                        timestamp=time.time(),
                    )
                )
        return out

    def get_type_summary(self, connection_type: ConnectionType | str) -> dict[str, Any]:
        """The connection type's aggregate from the health overview (totals, health, latency)."""
        return self._gw.performance(connection_type)


@dataclass(frozen=True)
class ActiveAlert:
    title: str
    severity: Severity
    message: str
    state: str
    fingerprint: str
    labels: Mapping[str, str]
    value: float | None
    started_at: float | None
    acknowledged: bool


def _alert(v: AlertView) -> ActiveAlert:
    target = v.labels.get("connection") or v.labels.get("route") or v.labels.get("node")
    title = f"{v.alertname.replace('_', ' ')}" + (f" on {target}" if target else "")
    return ActiveAlert(
        title=title,
        severity=v.severity,
        message=v.summary,
        state=v.state.value,
        fingerprint=v.fingerprint,
        labels=v.labels,
        value=v.value,
        started_at=v.started_at,
        acknowledged=v.acknowledged,
    )


class AlertManager:
    """``manager.alert_manager``: the daemon's alert engine (rules, hysteresis, silences)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    def get_active_alerts(self) -> list[ActiveAlert]:
        alerting = self._gw.daemon.alerting
        if alerting is None:
            return []
        return [_alert(v) for v in alerting.engine.active()]

    async def evaluate(self) -> list[ActiveAlert]:
        """Run the alert rules now (the alerts job's own pass) and return what is active."""
        if self._gw.daemon.alerting is not None:
            await self._gw.daemon.alerting.evaluate()
        return self.get_active_alerts()
