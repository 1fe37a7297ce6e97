"""Cluster membership as each node sees it: who is up, down or gone, from heartbeat ages.

Pure: the runtime feeds heartbeats (as they arrive from the engine's watch), the state of
its own engine link and ``now`` (monotonic seconds; ``wall`` only for display), and reads
back node states and the changes between them. Nothing here awaits or reads a clock.

Rules (why each exists):

* A peer is *down* when no new heartbeat revision arrived for ``node_down_after`` seconds
  **as this node measured it**: ages come from local receive times, never from the
  peer's timestamps, so clock skew between hosts does not matter. (A key that expires
  by TTL produces no watch event, so absence of news is the only signal.)
* A peer that said goodbye (its last heartbeat carries ``state = "left"``) is *left*:
  no alert.
* While our own engine link is down we know nothing about peers: no state changes.
  When it comes back (or after this process was frozen, e.g. SIGSTOP, which the runtime
  sees as a long gap between ticks) every peer gets a fresh grace of
  ``node_down_after`` from that moment; news (a new revision) ends it early. So a NATS
  outage or a stall never turns into a storm of false "down" verdicts.
* Each down episode has an id (the peer's instance and the last revision heard), the same
  on every survivor; the alert layer keys its cluster-wide "one page" claim by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ClaimVerdict",
    "Membership",
    "MembershipStatistics",
    "NodeChange",
    "NodeState",
    "NodeView",
    "decide_claim",
]


class ClaimVerdict(StrEnum):
    WON = "won"  # already ours: send (a repeat, or a second channel of the same notice)
    LOST = "lost"  # another node sent it, or it is stale: record "sent elsewhere"
    WRITE = "write"  # ours if the compare-and-set of the new record succeeds


def decide_claim(
    current: Mapping[str, Any] | None, proposal: str, episode: str, me: str
) -> ClaimVerdict:
    """Who sends a notification of a cluster-wide alert (one record per fingerprint).

    ``current`` is the claim record in the KV bucket (``state``, ``episode``, ``node``),
    ``proposal`` the transition to notify (``firing``/``resolved``), ``episode`` the down
    episode this node saw (``""`` if it never saw one, e.g. after its own restart). Every
    transition of the record is one compare-and-set, so exactly one node wins each; a
    proposal that repeats the record's transition (another survivor, or a stale view)
    loses. A resolved notice with no firing on record is not sent: nobody was paged.
    """
    if current is None:
        return ClaimVerdict.WRITE if proposal == "firing" else ClaimVerdict.LOST
    state, node = current.get("state"), current.get("node")
    same_episode = not episode or current.get("episode") == episode
    if proposal == "firing":
        if state == "firing" and same_episode:
            return ClaimVerdict.WON if node == me else ClaimVerdict.LOST
        if state == "resolved" and same_episode:
            return ClaimVerdict.LOST  # this episode is over already: a late, stale notice
        return ClaimVerdict.WRITE  # a new episode
    if state == "resolved":
        return ClaimVerdict.WON if node == me else ClaimVerdict.LOST
    return ClaimVerdict.WRITE


class NodeState(StrEnum):
    UP = "up"
    DOWN = "down"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class NodeChange:
    node_id: str
    old: NodeState | None  # None: first heard of
    new: NodeState
    episode: str


@dataclass(frozen=True, slots=True)
class NodeView:
    """One row of ``wsgate cluster nodes``."""

    node_id: str
    state: NodeState
    last_seen: float | None  # unix seconds, local receive time
    age: float | None  # seconds since the last heartbeat arrived
    is_self: bool
    summary: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "node_id": self.node_id,
            "state": self.state.value,
            "last_seen": self.last_seen,
            "age": self.age,
            "self": self.is_self,
            "health": s.get("health"),
            "sessions": s.get("sessions"),
            "upstreams": s.get("upstreams"),
            "version": s.get("version"),
            "gateway": s.get("gateway"),
            "started_at": s.get("started_at"),
            "alerts": s.get("alerts"),
            "routes": s.get("routes"),
        }


@dataclass(frozen=True, slots=True)
class MembershipStatistics:
    link_up: bool
    up: int
    down: int
    left: int
    heartbeats_seen: int
    stale_heartbeats: int  # repeats of a revision already seen (watch restarts)
    grace_restarts: int


@dataclass(slots=True)
class _Peer:
    node_id: str
    state: NodeState
    revision: int
    instance: str
    heard_at: float  # monotonic
    heard_wall: float
    summary: Mapping[str, Any]
    episode: str = ""
    # False while all we have is the value that was already in the bucket when we looked
    # (a replay): it may be a dead node's last words. Any newer revision confirms it.
    confirmed: bool = False


class Membership:
    """Every peer's state. ``self_id`` is this node; it is never judged."""

    def __init__(
        self,
        self_id: str,
        *,
        node_down_after: float,
        stall_after: float,
        forget_left_after: float = 3600.0,
    ) -> None:
        self.self_id = self_id
        self.node_down_after = node_down_after
        # A gap between ticks longer than this means we were frozen: restart the grace.
        self.stall_after = stall_after
        self.forget_left_after = forget_left_after
        self._peers: dict[str, _Peer] = {}
        self._link_up = False
        self._grace_from: float | None = None
        self._last_tick: float | None = None
        self._own_summary: Mapping[str, Any] = {}
        self._seen = 0
        self._stale = 0
        self._graces = 0

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Membership {self.self_id} link={'up' if s.link_up else 'down'} "
            f"up={s.up} down={s.down} left={s.left}>"
        )

    # ------------------------------------------------------------------ inputs

    @property
    def link_up(self) -> bool:
        return self._link_up

    def set_link(self, up: bool, now: float) -> None:
        """Our engine link came up or went down."""
        if up and not self._link_up:
            self._grace_from = now
            self._graces += 1
        self._link_up = up

    def set_own_summary(self, summary: Mapping[str, Any]) -> None:
        self._own_summary = summary

    def observe(
        self,
        node_id: str,
        revision: int,
        summary: Mapping[str, Any],
        now: float,
        wall: float,
    ) -> NodeChange | None:
        """A heartbeat (KV entry) arrived. Returns the change of that node's state, if any."""
        if node_id == self.self_id:
            return None
        peer = self._peers.get(node_id)
        if peer is not None and revision <= peer.revision:
            self._stale += 1  # a watch restart replays the last value: not news
            return None
        self._seen += 1
        new = NodeState.LEFT if summary.get("state") == "left" else NodeState.UP
        instance = str(summary.get("instance", ""))
        if peer is None:
            peer = _Peer(node_id, new, revision, instance, now, wall, summary)
            self._peers[node_id] = peer
            return NodeChange(node_id, None, new, "")
        old = peer.state
        peer.confirmed = True
        peer.revision, peer.instance, peer.summary = revision, instance, summary
        peer.heard_at, peer.heard_wall = now, wall
        if old is new:
            return None
        peer.state = new
        return NodeChange(node_id, old, new, peer.episode)

    def tick(self, now: float) -> list[NodeChange]:
        """Judge every peer at ``now``; call at least every heartbeat interval."""
        if self._last_tick is not None and now - self._last_tick > self.stall_after:
            self._grace_from = now  # we were frozen: what we know is stale, not the peers
            self._graces += 1
        self._last_tick = now
        if not self._link_up:
            return []
        changes: list[NodeChange] = []
        for node_id, peer in list(self._peers.items()):
            if peer.state is NodeState.LEFT:
                if now - peer.heard_at > self.forget_left_after:
                    del self._peers[node_id]
                continue
            if peer.state is NodeState.UP and self._silent_for(peer, now) > self.node_down_after:
                peer.state = NodeState.DOWN
                peer.episode = f"{peer.instance or node_id}.{peer.revision}"
                changes.append(NodeChange(node_id, NodeState.UP, NodeState.DOWN, peer.episode))
        return changes

    def _silent_for(self, peer: _Peer, now: float) -> float:
        since = peer.heard_at
        if self._grace_from is not None and self._grace_from > since:
            since = self._grace_from
        return now - since

    # ------------------------------------------------------------------ queries

    def state(self, node_id: str) -> NodeState | None:
        peer = self._peers.get(node_id)
        return peer.state if peer is not None else None

    def episode(self, node_id: str) -> str:
        """The id of the peer's latest down episode ("" if it was never down)."""
        peer = self._peers.get(node_id)
        return peer.episode if peer is not None else ""

    def peers(self, now: float) -> list[tuple[str, NodeState, float]]:
        """(node_id, state, seconds since its last heartbeat) for every known peer."""
        return [(p.node_id, p.state, now - p.heard_at) for p in self._sorted()]

    def summaries(self) -> dict[str, Mapping[str, Any]]:
        """Every node's last heartbeat summary, this node's own included."""
        out = {p.node_id: p.summary for p in self._peers.values()}
        out[self.self_id] = self._own_summary
        return out

    def alert_peers(self, now: float) -> list[tuple[str, str, float]]:
        """Like :meth:`peers` for the alert rule, with ``unknown`` for a peer we have only
        seen in the bucket's replay and not heard since: the rule holds its alert as it
        was (a restarted survivor must not resolve, nor page, on old news)."""
        return [
            (
                p.node_id,
                "unknown" if p.state is NodeState.UP and not p.confirmed else p.state.value,
                now - p.heard_at,
            )
            for p in self._sorted()
        ]

    def view(self, now: float, wall: float) -> list[NodeView]:
        rows = [NodeView(self.self_id, NodeState.UP, wall, 0.0, True, self._own_summary)]
        rows.extend(
            NodeView(p.node_id, p.state, p.heard_wall, now - p.heard_at, False, p.summary)
            for p in self._sorted()
        )
        return rows

    def _sorted(self) -> list[_Peer]:
        return sorted(self._peers.values(), key=lambda p: p.node_id)

    def statistics(self) -> MembershipStatistics:
        states = [p.state for p in self._peers.values()]
        return MembershipStatistics(
            link_up=self._link_up,
            up=states.count(NodeState.UP),
            down=states.count(NodeState.DOWN),
            left=states.count(NodeState.LEFT),
            heartbeats_seen=self._seen,
            stale_heartbeats=self._stale,
            grace_restarts=self._graces,
        )
