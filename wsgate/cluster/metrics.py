"""Prometheus families for the cluster, read from live state at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["budget_metrics", "cluster_metrics"]


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
    yield from budget_metrics(getattr(daemon, "cluster_budgets", None))


def budget_metrics(budgets: Any) -> Iterator[Metric]:
    """Cluster budgets (share = "cluster" hosts' connect budgets): the ledger as this node
    last saw it, its own part, and how its takes went."""
    if budgets is None:
        return
    docs = budgets.snapshot()  # statistics() as dicts: the same figures as status
    gauges = {
        "limit": GaugeMetricFamily(
            "wsgate_cluster_budget_limit",
            "What the exchange allows one IP in the window, for the whole cluster.",
            labels=["budget"],
        ),
        "window": GaugeMetricFamily(
            "wsgate_cluster_budget_window_seconds",
            "The window the limit counts over.",
            labels=["budget"],
        ),
        "used": GaugeMetricFamily(
            "wsgate_cluster_budget_used",
            "Tokens occupying the budget across the cluster (as this node last saw the ledger).",
            labels=["budget"],
        ),
        "used_here": GaugeMetricFamily(
            "wsgate_cluster_budget_node_used",
            "Tokens of the budget this node holds.",
            labels=["budget"],
        ),
        "share": GaugeMetricFamily(
            "wsgate_cluster_budget_local_share",
            "What this node may use alone while the cluster ledger is out of reach.",
            labels=["budget"],
        ),
    }
    alone = GaugeMetricFamily(
        "wsgate_cluster_budget_local_mode",
        "1 while this node grants from its local share (no cluster link).",
        labels=["budget"],
    )
    counters = {
        "granted": CounterMetricFamily(
            "wsgate_cluster_budget_grants",
            "Tokens this node took, from the ledger or from its local share.",
            labels=["budget"],
        ),
        "granted_local": CounterMetricFamily(
            "wsgate_cluster_budget_local_grants",
            "Tokens this node took from its local share while the ledger was out of reach.",
            labels=["budget"],
        ),
        "waits": CounterMetricFamily(
            "wsgate_cluster_budget_waits",
            "Takes refused for now: the caller waits for the window to free a token.",
            labels=["budget"],
        ),
        "conflicts": CounterMetricFamily(
            "wsgate_cluster_budget_conflicts",
            "Compare-and-set writes that lost to another node's (then read again).",
            labels=["budget"],
        ),
        "errors": CounterMetricFamily(
            "wsgate_cluster_budget_errors",
            "Takes that could not reach the ledger (answered from the local share).",
            labels=["budget"],
        ),
    }
    for doc in docs:
        label = [str(doc["budget"])]
        for key, fam in gauges.items():
            fam.add_metric(label, float(doc["window" if key == "window" else key]))
        alone.add_metric(label, 0.0 if doc["mode"] == "cluster" else 1.0)
        for key, cfam in counters.items():
            cfam.add_metric(label, float(doc[key]))
    yield from gauges.values()
    yield alone
    yield from counters.values()
