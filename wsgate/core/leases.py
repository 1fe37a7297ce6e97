"""Who keeps the upstream subscription of a cluster-shared key, and whether a follower's
stream is whole: pure decisions for :mod:`wsgate.cluster.data_plane` (callers pass ``now``).

A lease is a KV key (``<route>.<key-token>``) whose value names the owner node and its
instance; the bucket's TTL ends a lease nobody renews. The owner renews it every
``ttl / 3``; anyone else reads it and follows the owner. When the key is absent (never
taken, released, or expired after the owner died) the next node that needs the channel
creates it, and the KV store's create-if-absent makes exactly one of them the owner.

Frames between nodes carry ``(epoch, seq)``: the epoch is the owner's lease instance (it
changes when ownership changes), the sequence counts the key's frames from 1 within an
epoch. A follower delivers a frame only when it is the next one; anything else is a gap,
announced to its sessions by one fresh snapshot from the owner (the re-homing rule).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "LeaseRole",
    "LeaseVerdict",
    "SeqTracker",
    "SeqVerdict",
    "decide_lease",
    "key_token",
    "renew_due",
]


class LeaseRole(StrEnum):
    TAKE = "take"  # nobody holds it: create it (the store decides between contenders)
    OWN = "own"  # ours: keep the upstream subscription, renew
    FOLLOW = "follow"  # another node's: follow its frames
    LOCAL = "local"  # no cluster link: subscribe ourselves, as share = "node" does


@dataclass(frozen=True, slots=True)
class LeaseVerdict:
    role: LeaseRole
    owner: str | None = None  # node id of the holder (FOLLOW, OWN)
    epoch: str | None = None  # the holder's lease instance


def decide_lease(
    current: dict[str, Any] | None, node_id: str, instance: str, *, link_up: bool
) -> LeaseVerdict:
    """What this node does about a key, given the lease record it just read (None: absent)."""
    if not link_up:
        return LeaseVerdict(LeaseRole.LOCAL)
    if current is None or not current.get("node"):
        return LeaseVerdict(LeaseRole.TAKE)
    owner = str(current["node"])
    epoch = str(current.get("epoch", ""))
    if owner == node_id and current.get("instance") == instance:
        return LeaseVerdict(LeaseRole.OWN, owner, epoch)
    if owner == node_id:
        # Our node id, an earlier life of this node (restarted within the TTL): nobody
        # serves it, and we are that node: take it over at once.
        return LeaseVerdict(LeaseRole.TAKE)
    return LeaseVerdict(LeaseRole.FOLLOW, owner, epoch)


def renew_due(last_renewed: float, now: float, ttl: float) -> bool:
    """The owner renews at a third of the TTL, so two renewals may fail before it lapses."""
    return now - last_renewed >= ttl / 3


def key_token(route: str, key: object) -> str:
    """A subject- and KV-safe name of a subscription key, equal on every node."""
    digest = hashlib.sha1(f"{route}\x00{key!r}".encode(), usedforsecurity=False).hexdigest()
    return digest[:20]


class SeqVerdict(StrEnum):
    NEXT = "next"  # deliver
    STALE = "stale"  # already seen (or from an earlier epoch): drop
    GAP = "gap"  # one or more frames missing, or a new owner: announce by a fresh snapshot


class SeqTracker:
    """Per-key sequence check on a follower."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.seq = 0
        self.gaps = 0
        self.stale = 0

    def __repr__(self) -> str:
        return f"<SeqTracker {self.epoch}:{self.seq} gaps={self.gaps}>"

    def start(self, epoch: str, seq: int) -> None:
        """The owner's state was taken at ``seq``: the next frame to deliver is ``seq + 1``."""
        self.epoch, self.seq = epoch, seq

    def observe(self, epoch: str, seq: int) -> SeqVerdict:
        if epoch != self.epoch:
            self.gaps += 1
            return SeqVerdict.GAP
        if seq <= self.seq:
            self.stale += 1
            return SeqVerdict.STALE
        if seq != self.seq + 1:
            self.gaps += 1
            return SeqVerdict.GAP
        self.seq = seq
        return SeqVerdict.NEXT
