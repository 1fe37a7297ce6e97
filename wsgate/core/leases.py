"""Who keeps the upstream subscription of a cluster-shared key, and whether a follower's
stream is whole: pure decisions for :mod:`wsgate.cluster.data_plane` (callers pass ``now``).

A lease is a KV key (``<route>.<key-token>``) whose value names the owner node and its
instance; the bucket's TTL ends a lease nobody renews. The owner renews it every
``ttl / 3``; anyone else reads it and follows the owner. When the key is absent (never
taken, released, or expired after the owner died) the next node that needs the channel
creates it, and the KV store's create-if-absent makes exactly one of them the owner.

Frames between nodes carry ``(epoch, seq)``: the epoch is the owner's lease instance (it
changes when ownership changes), the sequence counts the key's frames within an epoch
and never repeats in it: a key the same epoch owns again (its link to NATS came back, it
got the lease back) continues past its last number with one left out
(:func:`stream_start`), because what its sessions got in between was not published. A
follower delivers a frame only when it is the next one; anything else is a gap, announced
to its sessions by one fresh snapshot from the owner (the re-homing rule).

A hand-over from a live owner (graceful stop, an owner whose bots left, a spread move) is
not a gap: the successor takes the lease naming the epoch it continues (``from``),
subscribes upstream, then asks the old owner to stop publishing; the old owner answers
with its last sequence ``at`` and the successor announces its epoch with a *link*
``(new epoch, start, old epoch, at)``. A follower delivers the old epoch up to ``at``, then
the new one from ``start + 1`` (:meth:`SeqTracker.link`). :func:`plan_spread` decides which
owned keys a node hands to which follower so that ownership spreads over the nodes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "LeaseRole",
    "LeaseVerdict",
    "SeqTracker",
    "SeqVerdict",
    "SpreadMove",
    "SpreadPolicy",
    "TargetHealth",
    "decide_lease",
    "key_token",
    "plan_spread",
    "renew_due",
    "route_health",
    "stream_start",
    "target_unfit",
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


def stream_start(last: int | None) -> int:
    """The sequence a key's stream starts from when this epoch owns it (again): past every
    number the epoch used for it (``last``) with one left out, because frames its sessions
    got in between (the link was down, another node owned it) were not published. A
    follower still on the earlier stream then sees a gap instead of taking the new frames
    for ones it already has (and dropping them unannounced)."""
    return 0 if last is None else last + 1


def key_token(route: str, key: object) -> str:
    """A subject- and KV-safe name of a subscription key, equal on every node."""
    digest = hashlib.sha1(f"{route}\x00{key!r}".encode(), usedforsecurity=False).hexdigest()
    return digest[:20]


class SeqVerdict(StrEnum):
    NEXT = "next"  # deliver
    STALE = "stale"  # already seen (or from an earlier epoch): drop
    GAP = "gap"  # one or more frames missing, or a new owner: announce by a fresh snapshot
    HOLD = "hold"  # the successor's epoch, before the old one reached the link: keep it


class SeqTracker:
    """Per-key sequence check on a follower, across linked epochs (a hand-over)."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.seq = 0
        self.gaps = 0
        self.stale = 0
        self.linked = 0
        self.next_epoch: str | None = None  # announced successor, switched to at ``cut``
        self.cut = 0
        self.next_start = 0  # the successor's sequence before its first frame
        self._previous: str | None = None  # the epoch before the last switch: stale now

    def __repr__(self) -> str:
        return f"<SeqTracker {self.epoch}:{self.seq} gaps={self.gaps}>"

    def start(self, epoch: str, seq: int) -> None:
        """The owner's state was taken at ``seq``: the next frame to deliver is ``seq + 1``."""
        self.epoch, self.seq = epoch, seq
        self.next_epoch, self._previous = None, None

    def link(self, new_epoch: str, old_epoch: str, at: int, start: int = 0) -> SeqVerdict:
        """``new_epoch`` continues ``old_epoch`` after its frame ``at``; its own frames follow
        ``start``. NEXT: switched now (deliver held frames); HOLD: switch once ``at`` is
        delivered; GAP: not continuable (``at`` < 0: the successor could not cut the old
        stream)."""
        if new_epoch == self.epoch or new_epoch == self.next_epoch:
            return SeqVerdict.STALE  # said twice
        if old_epoch != self.epoch or at < self.seq:
            self.gaps += 1
            return SeqVerdict.GAP
        if at == self.seq:
            self._switch(new_epoch, start)
            return SeqVerdict.NEXT
        self.next_epoch, self.cut, self.next_start = new_epoch, at, start
        return SeqVerdict.HOLD

    def _switch(self, new_epoch: str, start: int) -> None:
        self._previous, self.epoch, self.seq = self.epoch, new_epoch, start
        self.next_epoch, self.next_start = None, 0
        self.linked += 1

    def observe(self, epoch: str, seq: int) -> SeqVerdict:
        if epoch != self.epoch:
            if epoch == self.next_epoch:
                return SeqVerdict.HOLD
            if epoch == self._previous:
                self.stale += 1
                return SeqVerdict.STALE
            self.gaps += 1
            return SeqVerdict.GAP
        if seq <= self.seq:
            self.stale += 1
            return SeqVerdict.STALE
        if seq != self.seq + 1 or (self.next_epoch is not None and seq > self.cut):
            self.gaps += 1
            return SeqVerdict.GAP
        self.seq = seq
        return SeqVerdict.NEXT

    def after_delivery(self) -> bool:
        """Call after delivering a NEXT frame: True when it was the cut (switched: deliver
        the held frames of the new epoch now)."""
        if self.next_epoch is not None and self.seq == self.cut:
            self._switch(self.next_epoch, self.next_start)
            return True
        return False


# ---------------------------------------------------------------------- ownership spread


@dataclass(frozen=True, slots=True)
class SpreadPolicy:
    """When a node hands keys over. ``slack``: owning up to this many keys more than the
    cluster's mean is fine (hysteresis); a move must leave the target with fewer keys than
    the source (so two nodes never trade a key back and forth); at most ``per_round``
    moves start per ``interval`` seconds, and a key that moved stays put for ``hold``.

    Targets (:func:`target_unfit`, :class:`TargetHealth`): a node whose upstream health on
    the route is below ``unhealthy_below`` (the balancer's threshold), whose heartbeat
    says it is not up, or whose connect budget for the route's host is ``budget_near``
    used, takes no key; once it looks fit again it stays out for ``recover`` seconds."""

    slack: int = 1
    interval: float = 1.0
    per_round: int = 1
    hold: float = 60.0
    unhealthy_below: float = 50.0
    budget_near: float = 0.8
    recover: float = 30.0


@dataclass(frozen=True, slots=True)
class SpreadMove:
    key: Any
    target: str
    why: str


def target_unfit(
    summary: Mapping[str, Any] | None, route: str, policy: SpreadPolicy = SpreadPolicy()
) -> str | None:
    """Why a node should take no key of ``route`` now, from its heartbeat summary (None:
    it may). A node with no upstream connection on the route has no health figure: it is
    fit (its connections have nothing wrong; it has room)."""
    if not summary:
        return None
    state = summary.get("state", "up")
    if state != "up":
        return f"state {state}"
    health = _route_figure(summary.get("route_health"), route)
    if health is not None and health < policy.unhealthy_below:
        return f"upstream health {health:.0f} on {route} (below {policy.unhealthy_below:.0f})"
    use = _route_figure(summary.get("connect_budget"), route)
    if use is not None and use >= policy.budget_near:
        return f"connect budget {use:.0%} used"
    return None


def _route_figure(doc: Any, route: str) -> float | None:
    value = doc.get(route) if isinstance(doc, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def route_health(summary: Mapping[str, Any] | None, route: str) -> float:
    """A node's upstream health on ``route`` for ranking targets: 100 without connections."""
    health = _route_figure((summary or {}).get("route_health"), route)
    return 100.0 if health is None else health


class TargetHealth:
    """Which nodes take no key now, with hysteresis: a node seen unfit stays out until it
    has looked fit for ``policy.recover`` seconds, so a health score hovering at the
    threshold never sends keys back and forth (a move costs a subscribe and an unsubscribe
    at the exchange). Pure: the caller passes ``now``."""

    def __init__(self, policy: SpreadPolicy = SpreadPolicy()) -> None:
        self.policy = policy
        self._bad: dict[str, tuple[float, str]] = {}  # node -> (last seen unfit, why)

    def __repr__(self) -> str:
        return f"<TargetHealth unfit={sorted(self._bad)}>"

    def observe(self, node: str, why: str | None, now: float) -> None:
        if why is not None:
            self._bad[node] = (now, why)

    def unfit(self, now: float) -> dict[str, str]:
        for node, (at, _why) in list(self._bad.items()):
            if now - at >= self.policy.recover:
                del self._bad[node]
        return {node: why for node, (_at, why) in self._bad.items()}


def plan_spread(
    node_id: str,
    owned: dict[Any, tuple[str, ...]],
    loads: dict[str, int],
    now: float,
    *,
    last_round: float | None,
    moved_at: dict[Any, float],
    policy: SpreadPolicy = SpreadPolicy(),
    live: frozenset[str] | None = None,
    unfit: Mapping[str, str] | None = None,
    health: Mapping[str, float] | None = None,
    rng: random.Random | None = None,
) -> list[SpreadMove]:
    """Which owned keys to hand to whom, now. ``owned``: each key this node owns and the
    nodes following it (only a follower can take a key: it has sessions for it and the
    owner's state already); ``loads``: keys owned by every node (this one too); ``live``:
    the nodes the membership says are up (None: every node in ``loads``). A node not in
    it (killed without a word) neither lowers the mean nor becomes a target. ``unfit``:
    nodes that take no key (:class:`TargetHealth`); they still count in the mean (they
    are up and own what they own). The target is the least loaded fit follower (the
    balancer's least-connections rule), then the healthiest (``health``: its health-based
    rule), then a draw from ``rng`` (so owners that spread at the same moment do not all
    pick the same node; without ``rng``, the first by node id)."""
    if last_round is not None and now - last_round < policy.interval:
        return []
    unfit = unfit or {}
    health = health or {}
    counts = {n: c for n, c in loads.items() if live is None or n in live}
    counts[node_id] = len(owned)
    mean = sum(counts.values()) / len(counts)
    moves: list[SpreadMove] = []
    for key in sorted(owned, key=repr):
        if len(moves) >= policy.per_round:
            break
        mine = counts[node_id]
        if mine <= mean + policy.slack:
            break
        at = moved_at.get(key)
        if at is not None and now - at < policy.hold:
            continue
        followers = [n for n in owned[key] if n != node_id and n in counts and n not in unfit]
        if not followers:
            continue
        target = _pick(followers, counts, health, rng)
        if counts[target] + 1 > mine - 1:
            continue  # would leave the target owning more than us: no better spread
        moves.append(
            SpreadMove(
                key,
                target,
                f"{node_id} owns {mine} keys, {target} {counts[target]}; cluster mean {mean:.1f}",
            )
        )
        counts[node_id] -= 1
        counts[target] += 1
    return moves


def _pick(
    followers: list[str],
    counts: Mapping[str, int],
    health: Mapping[str, float],
    rng: random.Random | None,
) -> str:
    def rank(n: str) -> tuple[int, float]:
        return counts[n], -health.get(n, 100.0)

    best = min(rank(n) for n in followers)
    tied = sorted(n for n in followers if rank(n) == best)
    return tied[0] if rng is None or len(tied) == 1 else rng.choice(tied)
