"""The daemon as the control plane sees it: one typed Protocol instead of the daemon itself.

The control plane (``control/api*.py``, ``control/audit.py``, ``control/metrics_http.py``)
sits above the daemon: it reads live state and calls a few lifecycle methods. It imports
this view, never :mod:`wsgate.daemon`, so the dependency points one way (the daemon wires
the control plane up; the control plane does not know the concrete daemon class).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from wsgate.cluster import Cluster
from wsgate.config import Config
from wsgate.runtime.downstream.gateway import Gateway
from wsgate.runtime.ops.alerting import Alerting
from wsgate.runtime.ops.analytics import Analytics
from wsgate.runtime.ops.events import EventBus
from wsgate.runtime.persistence.store import Store
from wsgate.runtime.routing.routes import RouteRuntime
from wsgate.runtime.system.faults import Faults
from wsgate.runtime.system.scheduler import Jobs
from wsgate.runtime.upstream.connection import HostBudgets

__all__ = ["DaemonView"]


class DaemonView(Protocol):
    """Read-only state and the lifecycle calls the control plane uses."""

    # ------------------------------------------------------------ identity, config
    @property
    def config(self) -> Config: ...
    @property
    def config_path(self) -> str | None: ...
    @property
    def generation(self) -> int: ...
    @property
    def last_reload(self) -> dict[str, Any] | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def demo(self) -> bool: ...
    @property
    def simulators(self) -> dict[str, str]: ...
    @property
    def ready(self) -> asyncio.Event: ...

    # ------------------------------------------------------------ live parts
    @property
    def routes(self) -> dict[str, RouteRuntime]: ...
    @property
    def gateway(self) -> Gateway: ...
    @property
    def analytics(self) -> Analytics: ...
    @property
    def alerting(self) -> Alerting | None: ...
    @property
    def jobs(self) -> Jobs: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def store(self) -> Store: ...
    @property
    def budgets(self) -> HostBudgets: ...
    @property
    def cluster(self) -> Cluster: ...
    @property
    def faults(self) -> Faults: ...
    @property
    def loop_lag(self) -> float: ...

    # ------------------------------------------------------------ lifecycle
    async def reload(self, trigger: str, *, dry_run: bool = False) -> dict[str, Any]: ...
    def stop(self, reason: str = "requested") -> None: ...
    def follow_events(self) -> AsyncIterator[tuple[str, Any]]: ...
