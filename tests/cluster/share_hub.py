"""The hub's side of the seam a route's data plane (RouteShare) calls, for tests and
benches that drive the data plane without a gateway: which keys the hub subscribes
upstream here and which it feeds from another node (the runtime hub keeps the same
bookkeeping, and also does the subscribing and the feeding)."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from wsgate.core.subscriptions import SubState
from wsgate.dialects import base as d

__all__ = ["ShareHub"]


class ShareHub:
    def __init__(self, keys: Iterable[Any]) -> None:
        self.route = SimpleNamespace(cfg=SimpleNamespace(share="cluster"))
        self.registry: dict[Any, Any] = {
            key: SimpleNamespace(key=key, sessions={1}, attachment=None, state=SubState.CONFIRMED)
            for key in keys
        }
        self.upstream: set[Any] = set()
        self.follows: dict[Any, str] = {}

    def cluster_go_local(self, key: Any) -> None:
        self.upstream.add(key)
        self.follows.pop(key, None)

    def cluster_follow(self, key: Any, owner: str, snapshot: d.ChannelData | None) -> None:
        self.upstream.discard(key)
        self.follows[key] = owner

    def cluster_bridge(self, key: Any) -> bool:
        return False  # no upstream here to bridge with: the share takes over directly
