"""``[cluster]``: validation of the cluster engine section (see :mod:`wsgate.cluster`).

Kept apart from :mod:`wsgate.config` so the section's rules sit in one short place. Every
problem names the key path, its line and a hint, like every other section.
"""

from __future__ import annotations

import re

from wsgate.config.locate import Table, short
from wsgate.config.schema import ClusterConfig

__all__ = ["ENGINES", "build_cluster", "check_node_id"]

ENGINES = ("none", "nats")
_SCHEMES = ("nats", "tls", "ws", "wss")
# NATS subject tokens and JetStream bucket names: letters, digits, '-' and '_'.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A node id is a key in the cluster's KV buckets.
_KEY = re.compile(r"[-/_=.A-Za-z0-9]{1,128}")
_FILES = ("credentials_file", "tls_ca_file", "tls_cert_file", "tls_key_file")


def build_cluster(t: Table | None) -> ClusterConfig:
    d = ClusterConfig()
    if t is None:
        return d
    engine = t.string("engine", d.engine, choices=ENGINES)
    servers = d.servers
    if "servers" in t.data:
        given = set(t.strings("servers"))  # reports the items that are not strings
        raw = t.data["servers"] if isinstance(t.data["servers"], list) else []
        # Checked at their own index: servers[1] stays servers[1] after a bad servers[0].
        good = tuple(
            u
            for i, u in enumerate(raw)
            if isinstance(u, str) and u in given and _check_server(t, i, u)
        )
        if t.data["servers"] == []:
            t.problem(
                "servers", "expected at least one server URL", 'e.g. ["nats://127.0.0.1:4222"]'
            )
        servers = good or d.servers
    name = t.string("name", d.name)
    if name is not None and not _NAME.fullmatch(name):
        t.problem(
            "name",
            f"invalid cluster name {short(name)}",
            "use 1-64 letters, digits, '-' or '_': it prefixes NATS subjects and bucket names",
        )
        name = d.name
    heartbeat = t.number("heartbeat_interval", d.heartbeat_interval)
    down_after = t.number("node_down_after", d.node_down_after)
    if down_after < 2 * heartbeat:
        t.problem(
            "node_down_after",
            f"must be at least twice heartbeat_interval ({heartbeat:g} s), got {down_after:g}",
            "one late heartbeat must not make a peer look down; use about 5x heartbeat_interval",
        )
    files = {key: t.string(key, None) for key in _FILES}
    if files["tls_key_file"] is not None and files["tls_cert_file"] is None:
        t.problem("tls_key_file", "tls_key_file needs tls_cert_file")
    if files["tls_cert_file"] is not None and files["tls_key_file"] is None:
        t.problem("tls_cert_file", "tls_cert_file needs tls_key_file")
    cfg = ClusterConfig(
        engine=engine or d.engine,
        servers=servers,
        name=name or d.name,
        heartbeat_interval=heartbeat,
        node_down_after=down_after,
        lease_ttl=t.number("lease_ttl", d.lease_ttl),
        **files,
    )
    t.finish()
    return cfg


def _check_server(t: Table, index: int, url: str) -> bool:
    sub = Table(t.problems, t.at("servers"), {})
    return sub.check_url(index, url, _SCHEMES)


def check_node_id(root: Table, node_id: str, cluster: ClusterConfig) -> None:
    """In a cluster the node id is a KV key: NATS allows letters, digits and ``-/_=.``."""
    if cluster.enabled and not _KEY.fullmatch(node_id):
        root.problems.add(
            ("daemon", "node_id"),
            f"invalid node id {short(node_id)} for a cluster",
            "use letters, digits, '-', '_', '.', '=' or '/': it names the node in NATS keys",
        )
