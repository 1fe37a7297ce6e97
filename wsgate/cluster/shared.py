"""Silences and acks as cluster state: made on any node, honoured on every node.

Two KV buckets (file storage, so they survive a NATS restart): ``<name>-silences`` keyed
by silence id and ``<name>-acks`` keyed by alert fingerprint. Every node follows both
and applies what arrives to its alert engine *and its SQLite store*, so a node cut off
from NATS (or restarted while NATS is down) keeps honouring what it last knew.

Outbound changes never wait on NATS: the alerting calls the ``*_made``/``*_removed``
methods synchronously, they land in ``_pending`` (one slot per id, so it is bounded by
the number of silences and acks) and a pusher task writes them while the link is up.
On each new link the watch first replays the buckets; at the "caught up" marker every
local silence or ack the cluster has never seen (made while cut off, or before the node
joined a cluster) is pushed. A delete marker in the replay removes a silence here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from wsgate.cluster.engine import KvBucket, KvEntry
from wsgate.cluster.share_state import parse_doc

__all__ = ["SharedAlertState", "SharedStatistics"]

log = logging.getLogger("wsgate.cluster")

SILENCES = "silences"
ACKS = "acks"


@dataclass(frozen=True)
class SharedStatistics:
    pending: int
    pushed: int
    push_failures: int
    applied: int


class SharedAlertState:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._alerting: Any = None
        self._buckets: dict[str, KvBucket] = {}
        self._pending: dict[tuple[str, str], bytes | None] = {}
        self._seen: dict[str, set[str]] = {SILENCES: set(), ACKS: set()}
        self._wake = asyncio.Event()
        self.pushed = 0
        self.push_failures = 0
        self.applied = 0

    def __repr__(self) -> str:
        return f"<SharedAlertState pending={len(self._pending)} linked={bool(self._buckets)}>"

    def attach(self, alerting: Any) -> None:
        self._alerting = alerting

    async def open_buckets(self, silences: KvBucket, acks: KvBucket) -> None:
        self._buckets = {SILENCES: silences, ACKS: acks}

    def detach_buckets(self) -> None:
        self._buckets = {}

    def start(self, tg: asyncio.TaskGroup) -> None:
        """On a new link: follow both buckets and push what waits."""
        self._seen = {SILENCES: set(), ACKS: set()}
        tg.create_task(self._buckets[SILENCES].follow(self._on_silence), name="cluster-silences")
        tg.create_task(self._buckets[ACKS].follow(self._on_ack), name="cluster-acks")
        tg.create_task(self._pusher(), name="cluster-push")
        self._wake.set()

    # ------------------------------------------------------------------ outbound

    def _queue(self, bucket: str, key: str, doc: dict[str, Any] | None) -> None:
        value = None if doc is None else json.dumps(doc, separators=(",", ":")).encode()
        self._pending[(bucket, key)] = value
        self._wake.set()

    def silence_made(self, doc: dict[str, Any]) -> None:
        self._queue(SILENCES, str(doc["id"]), doc)

    def silence_removed(self, silence_id: str) -> None:
        self._queue(SILENCES, silence_id, None)

    def ack_made(self, doc: dict[str, Any]) -> None:
        self._queue(ACKS, str(doc["fingerprint"]), doc)

    def ack_cleared(self, fingerprint: str) -> None:
        self._queue(ACKS, fingerprint, None)

    async def _pusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for (bucket, key), value in list(self._pending.items()):
                kv = self._buckets.get(bucket)
                if kv is None:
                    return
                try:
                    async with asyncio.timeout(2.0):
                        if value is None:
                            await kv.delete(key)
                        else:
                            await kv.put(key, value)
                except Exception as exc:
                    self.push_failures += 1
                    log.warning("cluster: %s/%s not shared yet (%s); will retry", bucket, key, exc)
                    await asyncio.sleep(1.0)
                    self._wake.set()
                    break
                if self._pending.get((bucket, key), b"") is value:
                    del self._pending[(bucket, key)]  # unless changed again meanwhile
                self.pushed += 1

    # ------------------------------------------------------------------ inbound

    def _on_silence(self, entry: KvEntry | None) -> None:
        alerting = self._alerting
        if alerting is None:
            return
        if entry is None:  # caught up: share what the cluster has never seen
            for sil in alerting.silences():
                if sil.id not in self._seen[SILENCES] and sil.ends_at > time.time():
                    self.silence_made(sil.to_dict())
            return
        self._seen[SILENCES].add(entry.key)
        if (SILENCES, entry.key) in self._pending:
            return  # our own newer change is on its way
        doc = parse_doc(entry.value)
        if entry.deleted:
            applied = alerting.apply_shared_unsilence(entry.key)
        elif doc:
            applied = alerting.apply_shared_silence(doc)
        else:
            return
        self.applied += int(bool(applied))

    def _on_ack(self, entry: KvEntry | None) -> None:
        alerting = self._alerting
        if alerting is None:
            return
        if entry is None:
            for ack in alerting.engine.acks():
                if ack.fingerprint not in self._seen[ACKS]:
                    self.ack_made(ack.to_dict())
            return
        self._seen[ACKS].add(entry.key)
        if entry.deleted or (ACKS, entry.key) in self._pending:
            return  # an ack ends when its alert resolves, on each node by itself
        doc = parse_doc(entry.value)
        if doc:
            self.applied += int(bool(alerting.apply_shared_ack(doc)))

    def statistics(self) -> SharedStatistics:
        return SharedStatistics(len(self._pending), self.pushed, self.push_failures, self.applied)
