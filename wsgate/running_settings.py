"""What the running daemon's components use, key by key, read from them (not from the file).

The reload walk (tests/e2e/test_reload_walk.py) compares this view with what each reload
claimed: a key reported as applied must show its new value here, a restart-required key
its running one. Keys the daemon reads from its config at each use (shutdown_timeout,
history_retention, ...) come from there; everything a component caches is read back from
the component: the log handler, the gateway, the control socket's groups, every route's
runtime config and each open connection's settings, the job intervals, the metrics rings.
"""

from __future__ import annotations

import dataclasses
import grp
import logging
import os
from typing import Any, Protocol

from wsgate.config import Config
from wsgate.config.changes import flatten
from wsgate.config.dump import config_to_dict
from wsgate.control.metrics_http import MetricsServer
from wsgate.control.server import ControlServer
from wsgate.logsetup import current_format
from wsgate.runtime.downstream.gateway import Gateway
from wsgate.runtime.ops.alerting import Alerting
from wsgate.runtime.persistence.store import Store
from wsgate.runtime.persistence.store_connections import ConnectionStore
from wsgate.runtime.routing.routes import RouteEnv, RouteRuntime
from wsgate.runtime.system.scheduler import Jobs

__all__ = ["RunningParts", "running_settings"]


class RunningParts(Protocol):
    """The daemon's components this view reads (the daemon provides them; no import of it)."""

    @property
    def config(self) -> Config: ...
    @property
    def env(self) -> RouteEnv: ...
    @property
    def routes(self) -> dict[str, RouteRuntime]: ...
    @property
    def gateway(self) -> Gateway: ...
    @property
    def jobs(self) -> Jobs: ...
    @property
    def store(self) -> Store: ...
    @property
    def connection_store(self) -> ConnectionStore: ...
    @property
    def control(self) -> ControlServer | None: ...
    @property
    def metrics_http(self) -> MetricsServer | None: ...
    @property
    def alerting(self) -> Alerting | None: ...


def running_settings(d: RunningParts) -> dict[str, Any]:
    """Key -> the value the running components use, read from them, not from the file.

    Keys the daemon reads from ``d.config`` at each use (shutdown_timeout,
    history_retention, ...) come from there. The reload walk test compares this view
    with what each reload claimed.
    """

    cfg = dataclasses.replace(
        d.config,
        # the identities the gateway admits by, from its registry (not its config copy)
        gateway=dataclasses.replace(d.gateway.cfg, clients=d.gateway.clients.configs()),
        routes=tuple(rt.cfg for rt in d.routes.values()),
    )
    if d.alerting is not None:
        cfg = dataclasses.replace(cfg, alerts=d.alerting.alerts_config)
    view: dict[str, Any] = {}
    flatten(config_to_dict(cfg, mask_secrets=False), "", view)
    root_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    view["daemon.log_level"] = str(root_level).lower()
    view["daemon.max_connections"] = d.env.max_connections
    view["daemon.log_format"] = current_format()
    view["daemon.node_id"] = getattr(d.connection_store, "node", cfg.daemon.node_id)
    view["daemon.state_dir"] = os.path.dirname(d.store.path)
    if d.control is not None:
        view["daemon.control_socket"] = d.control.path
        for key, attr in (("control_group", "_read_gid"), ("admin_group", "_admin_gid")):
            gid = getattr(d.control, attr, None)
            view[f"daemon.{key}"] = None if gid is None else grp.getgrgid(gid).gr_name
    view["gateway.linger"] = d.env.gateway_linger
    view["gateway.client_messages_per_second"] = d.env.client_messages_per_second
    view["gateway.max_subscriptions_per_session"] = d.env.max_subscriptions_per_session
    view["gateway.listen"] = f"{cfg.gateway.host}:{d.gateway.port}"
    if d.metrics_http is not None:
        view["metrics.listen"] = d.metrics_http.statistics().listen
    view["metrics.history_points"] = d.env.history_points
    view["metrics.per_message"] = d.env.per_message_metrics
    for rt in d.routes.values():
        for conn in rt.connections():
            if conn.metrics.history_points != d.env.history_points:
                view["metrics.history_points"] = conn.metrics.history_points
            if conn.settings.per_message_metrics != d.env.per_message_metrics:
                view["metrics.per_message"] = conn.settings.per_message_metrics
    for rt in d.routes.values():
        for conn in rt.connections():
            s = conn.settings
            for key, value in (
                ("stale_after", s.stale_after),
                ("ping_interval", s.ping_interval),
                ("ping_timeout", s.ping_timeout),
                ("backoff_initial", conn.backoff.initial),
                ("backoff_max", conn.backoff.maximum),
                ("min_uptime", conn.backoff.min_uptime),
                ("max_lifetime", s.max_lifetime or 0),
                ("use_proxy", s.use_proxy),
            ):
                if view.get(f"routes.{rt.name}.{key}") != value:
                    view[f"routes.{rt.name}.{key}"] = value  # a connection lags the route
    intervals = {j.name: j.interval for j in d.jobs.statistics()}
    for job, key in (
        ("health", "health_check_interval"),
        ("analytics", "analytics_interval"),
        ("alerts", "alert_check_interval"),
        ("cleanup", "cleanup_interval"),
    ):
        if job in intervals:
            view[f"jobs.{key}"] = intervals[job]
    return view
