"""Which endpoint (mirror, region) a route's next upstream connection goes to. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["endpoint_for_new_connection"]


def endpoint_for_new_connection(
    weights: Sequence[tuple[str, int]], open_counts: Mapping[str, int]
) -> str:
    """The endpoint furthest below its weighted share of the route's connections.

    ``weights`` is (endpoint name, current weight) in config order; weight 0 means no new
    connections unless every endpoint is at 0 (then all count equally). Ties go to the
    first in config order, so the choice is deterministic.
    """
    if not weights:
        raise ValueError("a route has at least one endpoint")
    live = [(n, w) for n, w in weights if w > 0] or [(n, 1) for n, _ in weights]
    return min(live, key=lambda nw: (open_counts.get(nw[0], 0) + 1) / nw[1])[0]
