"""Prometheus families for the cluster, read from live state at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["cluster_metrics"]


def cluster_metrics(daemon: Any) -> Iterator[Metric]:
    cluster = getattr(daemon, "cluster", None)
    if cluster is None:
        return
    s = cluster.statistics()
    nodes = GaugeMetricFamily(
        "wsgate_cluster_nodes", "Cluster nodes by state, as this node sees them.", labels=["state"]
    )
    for state, n in (("up", s.nodes_up), ("down", s.nodes_down), ("left", s.nodes_left)):
        nodes.add_metric([state], n)
    yield nodes
    yield GaugeMetricFamily(
        "wsgate_cluster_engine_connected",
        "1 while this node's link to the cluster engine is up (always 1 on a single node).",
        value=1.0 if s.link_up else 0.0,
    )
    age = GaugeMetricFamily(
        "wsgate_cluster_heartbeat_age_seconds",
        "Seconds since each peer's last heartbeat arrived here.",
        labels=["peer"],
    )
    for peer, seconds in sorted(s.peer_heartbeat_age.items()):
        age.add_metric([peer], seconds)
    yield age
    claims = CounterMetricFamily(
        "wsgate_cluster_notification_claims",
        "Cluster-wide notification claims: won (sent here), lost (sent elsewhere), failed.",
        labels=["outcome"],
    )
    for outcome, n in (
        ("won", s.claims_won),
        ("lost", s.claims_lost),
        ("failed", s.claim_failures),
    ):
        claims.add_metric([outcome], n)
    yield claims
    yield CounterMetricFamily(
        "wsgate_cluster_heartbeats", "Heartbeats published by this node.", value=s.heartbeats_sent
    )
