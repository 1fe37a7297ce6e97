"""Notifications about the cluster: queued first, sent only by the node that claims them.

A fact about the cluster (``cluster_node_down``) is paged once cluster-wide: every
survivor raises it, and the node that wins its claim (``ClusterNode.claim``, a KV
compare-and-set) sends it. The order makes that durable:

1. the notification is written to the outbox *held*, with the claims it needs
   (:class:`~wsgate.cluster.base.ClaimKey`: fingerprint, transition, down episode);
2. the cluster is asked;
3. the row is settled in one statement: sent as what this node won, or dropped when
   another node sends it (recorded as ``notification_sent_elsewhere``).

A node killed between 1 and 3 finds the held row when it runs again and asks again for
the same fact: the claim record (kept two days) says whether it is its own, so the page
goes out exactly once, whichever side of the compare-and-set the crash fell on. A claim
the cluster cannot answer (no link, a timeout) leaves the row held and is asked again
every :data:`RETRY` seconds while the link is up: nobody knows who sends it yet, and
pages about peers are never sent without the cluster's word.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from wsgate.cluster.base import ClaimKey, Cluster
from wsgate.core.alerts import Notification
from wsgate.runtime.ops.outbox import Outbox
from wsgate.runtime.persistence.store import OutboxRow, Store

__all__ = ["GIVE_UP_AFTER", "RETRY", "ClaimSettler"]

log = logging.getLogger("wsgate.alerts")

RETRY = 2.0  # seconds between attempts to settle rows still held
# A held row older than this is dropped (logged, in history): its claim record, kept two
# days, may be gone by the time it could be asked, and asking then could page twice.
GIVE_UP_AFTER = 86400.0

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class ClaimSettler:
    """Holds cluster notifications in the outbox until their claims are settled."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        render: Callable[[Notification], dict[str, Any]],
        clock: Callable[[], float],
        spawn: Spawn,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self._render = render
        self._clock = clock
        self._spawn = spawn
        self._settling: set[tuple[str, str]] = set()  # (channel, id) being asked now
        self.held = 0
        self.won = 0
        self.lost = 0

    def __repr__(self) -> str:
        return f"<ClaimSettler settling={len(self._settling)} won={self.won} lost={self.lost}>"

    def hold(self, cluster: Cluster, n: Notification) -> bool | None:
        """Queue ``n`` held and start asking for its claims. ``None`` when none of its
        alerts is a cluster fact (the caller queues it as usual); else whether it was
        queued (``False``: the channel does not want it, or it is a duplicate)."""
        keys = [cluster.claim_key(a) for a in n.alerts if cluster.scoped(a)]
        if not keys:
            return None
        payload = self._render(n)
        if not self.outbox.enqueue(n.channel, payload, [k.as_dict() for k in keys]):
            return False
        self.held += 1
        self._start(cluster, n.channel, n.id, payload, keys)
        return True

    def retry(self, cluster: Cluster) -> None:
        """Ask again for every held row nobody is asking for (left by a crash, or not
        answered): at most once per row at a time, and only while the link is up."""
        if not cluster.link_up:
            return
        now = self._clock()
        for row in self.store.outbox_claims():
            if (row.channel, row.id) in self._settling:
                continue
            if now - row.created_at > GIVE_UP_AFTER:
                self._give_up(row, now)
                continue
            keys = [ClaimKey.from_dict(k) for k in row.claim or ()]
            self._start(cluster, row.channel, row.id, row.payload, keys)

    def _start(
        self,
        cluster: Cluster,
        channel: str,
        notification_id: str,
        payload: dict[str, Any],
        keys: Sequence[ClaimKey],
    ) -> None:
        self._settling.add((channel, notification_id))
        self._spawn(self._settle(cluster, channel, notification_id, payload, keys))

    async def _settle(
        self,
        cluster: Cluster,
        channel: str,
        notification_id: str,
        payload: dict[str, Any],
        keys: Sequence[ClaimKey],
    ) -> None:
        try:
            outcomes = [await cluster.claim(k) for k in keys]
            if any(won is None for won in outcomes):
                return  # not answered: stays held, asked again by retry()
            lost = [k for k, won in zip(keys, outcomes, strict=True) if not won]
            gone = {k.fingerprint for k in lost}
            n = Notification.from_dict(payload)
            kept = tuple(a for a in n.alerts if a.fingerprint not in gone)
            won = self._render(dataclasses.replace(n, alerts=kept)) if kept else None
            if not self.outbox.settle(channel, notification_id, won):
                return  # settled already (or the row is gone): nothing more to say
            if won is None:
                self.lost += 1
            else:
                self.won += 1
            now = self._clock()
            for k in lost:
                data = {"fingerprint": k.fingerprint, "alertname": k.alertname}
                self.store.add_event(
                    now, "notification_sent_elsewhere", {**data, "status": k.proposal}
                )
        finally:
            self._settling.discard((channel, notification_id))

    def _give_up(self, row: OutboxRow, now: float) -> None:
        if self.store.outbox_settle(row.id, row.channel, None):
            log.error(
                "notification %s to %s dropped: its cluster claim was never answered",
                row.id,
                row.channel,
            )
            data = {"id": row.id, "channel": row.channel, "claim": row.claim}
            self.store.add_event(now, "notification_unclaimed", data)
