"""The input snapshot the runtime builds every ``alert_check_interval`` from live statistics.

Plain frozen values: the engine never reaches back into live objects, so an evaluation is a
pure function of the snapshot plus the engine's own state. ``None`` on an optional metric
means "no data yet"; rules treat it as neither breaching nor clear, so state holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wsgate.core.types import ConnectionType

__all__ = ["AlertInputs", "ConnInput", "RouteInput", "SystemInput"]


@dataclass(frozen=True, slots=True)
class ConnInput:
    """One upstream connection as the alert rules see it."""

    id: str
    route: str
    type: ConnectionType
    state_up: bool
    seconds_down: float = 0.0
    latency: float | None = None  # seconds, the route's chosen percentile
    error_rate: float = 0.0  # errors per second
    reconnects_recent: int = 0  # reconnects in the last 10 minutes
    msg_rate: float | None = None  # messages per second
    baseline_rate: float | None = None
    baseline_latency: float | None = None
    subscriptions: int = 0
    capacity: int = 0  # max subscriptions on this connection; 0 = unlimited
    anomaly_rate: bool = False
    anomaly_latency: bool = False
    # Staleness: seconds without channel data while sessions' subscriptions expect some
    # (None: nothing expected, or unknown); ``stale_for`` is how long past the protocol's
    # limit (the channels' heartbeat cadence) that silence is, so > 0 means stale;
    # ``stale_suspect``: silent far longer than its message rate makes likely, not stale yet.
    silent_for: float | None = None
    stale_for: float = 0.0
    stale_suspect: bool = False


@dataclass(frozen=True, slots=True)
class RouteInput:
    """One route (pool) as the alert rules see it."""

    name: str
    type: ConnectionType
    open_connections: int = 0
    desired_connections: int = 0
    sessions: int = 0
    max_sessions: int = 0  # 0 = unlimited
    no_candidate_events: int = 0  # since the previous snapshot
    fail_open_engaged: bool = False
    imbalance_ratio: float = 1.0  # busiest connection load / mean load
    connect_budget_used_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class SystemInput:
    """Daemon-wide health.

    ``peers`` holds (node_id, state, seconds since its last heartbeat) for every cluster peer
    as this node's membership judged it (``up``, ``down`` or ``left``); ``cluster_link_up``
    is False while this node's engine link is down, when it knows nothing about peers.
    """

    health_score: float = 100.0
    job_failures_recent: int = 0
    missed_job_runs: Mapping[str, int] = field(default_factory=dict)
    loop_lag: float = 0.0  # seconds
    connections_total: int = 0
    max_connections: int = 0  # 0 = unlimited
    sessions_total: int = 0
    max_sessions: int = 0  # 0 = unlimited
    peers: tuple[tuple[str, str, float], ...] = ()
    cluster_link_up: bool = True


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """Everything one evaluation looks at."""

    now: float
    node_id: str
    connections: tuple[ConnInput, ...] = ()
    routes: tuple[RouteInput, ...] = ()
    system: SystemInput = field(default_factory=SystemInput)
