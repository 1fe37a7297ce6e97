"""What the daemon, the alerting and the control plane see of the cluster, and the
single-node implementation (``[cluster] engine = "none"``): no peers, every claim won.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from wsgate.cluster.engine import EngineStatistics
from wsgate.cluster.shared import SharedAlertState

__all__ = [
    "CLUSTER_SCOPED",
    "ClaimKey",
    "Cluster",
    "ClusterStatistics",
    "LocalCluster",
    "StatusFn",
    "SummaryFn",
]

# Alert types that are facts about the cluster, not about one node: every survivor sees
# them, exactly one sends each notification (the claim), acks and silences apply to all.
CLUSTER_SCOPED = frozenset({"cluster_node_down"})

SummaryFn = Callable[[], Mapping[str, Any]]
StatusFn = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ClaimKey:
    """What a notification claim is about: one transition of one alert in one down
    episode. Kept with the notification in the outbox until the claim is settled, so a
    node restarted in between asks again for the same fact, never for a new one."""

    fingerprint: str
    alertname: str
    proposal: str  # the transition to notify: "firing" | "resolved"
    episode: str  # the peer's down episode as this node saw it ("" if it never saw one)

    def as_dict(self) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "proposal": self.proposal,
            "episode": self.episode,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClaimKey:
        return cls(
            str(d["fingerprint"]),
            str(d.get("alertname", "")),
            str(d["proposal"]),
            str(d["episode"]),
        )


@dataclass(frozen=True)
class ClusterStatistics:
    engine: str
    link_up: bool
    identity: str  # held | pending | lost ("held" on a single node)
    nodes_up: int  # this node included
    nodes_down: int
    nodes_left: int
    peer_heartbeat_age: Mapping[str, float] = field(default_factory=dict)
    heartbeats_sent: int = 0
    heartbeat_failures: int = 0
    claims_won: int = 0
    claims_lost: int = 0
    claim_failures: int = 0
    engine_stats: EngineStatistics | None = None


class Cluster(Protocol):
    """What the daemon, the alerting, the alert inputs and the control plane use."""

    @property
    def enabled(self) -> bool: ...
    @property
    def link_up(self) -> bool: ...
    @property
    def identity(self) -> str: ...
    @property
    def shared(self) -> SharedAlertState | None: ...

    async def join(self) -> None: ...
    def attach(self, alerting: Any) -> None: ...
    def start(self, tg: asyncio.TaskGroup) -> None: ...
    async def close(self) -> None: ...
    def alert_fields(self, now: float) -> dict[str, Any]: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    async def status_all(self, timeout: float) -> list[dict[str, Any]]: ...  # noqa: ASYNC109
    def scoped(self, view: Any) -> bool: ...
    def claim_key(self, view: Any) -> ClaimKey: ...
    async def claim(self, key: ClaimKey) -> bool | None: ...
    def statistics(self) -> ClusterStatistics: ...


class LocalCluster:
    """One node, nothing external: the default."""

    enabled = False
    link_up = True  # no link to lose
    identity = "held"
    shared: SharedAlertState | None = None

    def __init__(self, node_id: str, *, summary: SummaryFn, status: StatusFn) -> None:
        self.node_id = node_id
        self._summary = summary
        self._status = status

    def __repr__(self) -> str:
        return f"<LocalCluster {self.node_id}>"

    async def join(self) -> None:
        return None

    def attach(self, alerting: Any) -> None:
        return None

    def start(self, tg: asyncio.TaskGroup) -> None:
        return None

    async def close(self) -> None:
        return None

    def alert_fields(self, now: float) -> dict[str, Any]:
        return {}

    def nodes(self) -> list[dict[str, Any]]:
        s = self._summary()
        return [
            {
                "node_id": self.node_id,
                "state": "up",
                "last_seen": time.time(),
                "age": 0.0,
                "self": True,
                **{k: s.get(k) for k in ("health", "sessions", "upstreams", "version")},
                **{k: s.get(k) for k in ("gateway", "started_at", "alerts", "routes")},
            }
        ]

    async def status_all(self, timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109
        return [
            {"node_id": self.node_id, "state": "up", "answered": True, "status": self._status()}
        ]

    def scoped(self, view: Any) -> bool:
        return False  # nothing to share: every notification is this node's

    def claim_key(self, view: Any) -> ClaimKey:
        return ClaimKey(view.fingerprint, view.alertname, view.state.value, "")

    async def claim(self, key: ClaimKey) -> bool | None:
        return True

    def statistics(self) -> ClusterStatistics:
        return ClusterStatistics("none", True, "held", 1, 0, 0)
