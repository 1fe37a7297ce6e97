"""The cluster data plane of one route (``share = "cluster"``): one upstream subscription
per key for the whole cluster.

For each subscription key the hub wants, this decides (:func:`wsgate.core.leases.decide_lease`)
whether this node *owns* it (holds the lease, subscribes upstream, publishes what its
sessions get), *follows* it (feeds its sessions from the owner's frames through the hub's
own path), or subscribes *locally* because the cluster link is down.

* Lease: key ``<route>.<token>`` in the bucket ``<name>-leases`` (TTL ``lease_ttl``),
  created if absent, renewed by the owner every ``lease_ttl / 3`` with compare-and-set;
  one KV watch per route (``<route>.>``) tells followers of releases, new owners and
  renewals that stopped.
* Frames: subject ``<name>.md.<route>.<token>``, what the owner's fan-out delivered, each
  with a per-key sequence number: the frames of one loop turn in one message
  (:mod:`wsgate.cluster.wire`, v2), or one JSON list per frame for a follower that did not
  say it reads v2 (v1; a successor's link: ``[epoch, start, old epoch, at]``, always v1).
* State: subject ``<name>.mds.<route>.<token>``: the owner's epoch, last sequence and
  snapshot (a follower buffers frames until it arrives); also a successor's cut request
  (:mod:`wsgate.cluster.handover`: hand-over without a gap, spread moves).

Nothing on the data path waits on NATS: the tap adds each frame to its key's message
in the :class:`~wsgate.cluster.outbox.Outbox` (bounded; a drop is a gap the followers
see), handed to the client at the end of the turn without waiting. Decisions run in
their own tasks, and a subscription waits in DESIRED until its decision lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from wsgate.cluster import handover, relink, renewal, wire
from wsgate.cluster.engine import Engine, KvBucket
from wsgate.cluster.engine import Subscription as Served
from wsgate.cluster.outbox import Outbox
from wsgate.cluster.share_state import Followed, Owned, ShareStatistics, event_of, parse_doc
from wsgate.config.schema import ClusterConfig
from wsgate.core.cluster import NodeState
from wsgate.core.leases import (
    LeaseRole,
    SeqVerdict,
    TargetHealth,
    decide_lease,
    key_token,
    stream_start,
)
from wsgate.core.subscriptions import Subscription, SubState
from wsgate.dialects import base as d
from wsgate.errors import KeyConflict

if TYPE_CHECKING:
    from wsgate.runtime.downstream.session import Flusher

__all__ = ["RouteShare", "ShareStatistics"]

log = logging.getLogger("wsgate.cluster")

STATE_TIMEOUT = 2.0
LINK_POLL = 0.25
HANDING_MAX = 15.0  # a hand-over not cut by then is abandoned


class RouteShare:
    """One route's part of the data plane; the hub calls :meth:`gate`, :meth:`tap` and
    :meth:`dropped`, and feeds followed frames through ``hub.on_cluster_frame``."""

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        route: str,
        engine: Engine,
        hub: Any,
        on_event: Callable[[dict[str, Any]], object] | None = None,
        peer_states: Callable[[], Mapping[str, NodeState]] | None = None,
        peer_summaries: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
        rng: random.Random | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.route = route
        self.engine = engine
        self.hub = hub
        self.epoch = uuid.uuid4().hex[:12]  # this process's lease instance
        self.ttl = cfg.lease_ttl
        self._bucket: KvBucket | None = None
        self._tokens: dict[Any, str] = {}
        self.local: set[Any] = set()  # keys this node subscribes upstream itself
        self.owned: dict[Any, Owned] = {}
        self.followed: dict[Any, Followed] = {}
        self._deciding: set[Any] = set()
        # The fan-out's flusher: a turn's messages go out when its sessions' writes do.
        self.flusher = flusher
        self.out = Outbox(engine, self.epoch, flusher)
        self._unknown_seen = False
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False
        self._abandoned: set[Any] = set()  # hand-overs given up: the lease rules decide
        self._handing: dict[Any, float] = {}  # owned keys being handed over (no renewal): since
        self.on_event = on_event  # spread moves for the event bus
        self.peer_states = peer_states  # the membership's view: who the spread counts
        # Every node's last heartbeat summary (this one's too): who the spread may target.
        self.peer_summaries = peer_summaries
        self.rng = rng or random.Random()
        self.targets = TargetHealth(handover.POLICY)
        self.unfit: dict[str, str] = {}  # nodes that take no key now, and why
        self._by_token: dict[str, Any] = {}
        # Per key, the last sequence this epoch published: a key owned again continues past
        # it (one number left out), so a follower still on the old stream sees the gap.
        self.last_seq: dict[Any, int] = {}
        self.links = 0  # the engine's connects when the lease watch started (relink)
        # Every lease of this route as the watch last saw it: token -> (node, epoch, seen at).
        self._owners: dict[str, tuple[str, str, float]] = {}
        self._caught_up = False
        self._lease_task: asyncio.Task[None] | None = None
        self._busy_at: float | None = None  # the last time the route had a key here
        self._take_served: Served | None = None
        self.bridge_started: dict[Any, asyncio.Event] = {}  # successor: new stream runs
        self.moved_at: dict[Any, float] = {}
        self.spread_round: float | None = None  # the last round that moved keys
        self.spread_checked: float | None = None
        self.handed_over = 0
        self.taken_over = 0
        self.linked = 0
        self.moves_out = 0
        self.moves_in = 0
        self.last_move: dict[str, Any] | None = None
        self.lease_events = 0  # entries the route's lease watch delivered (renewals mostly)
        self.received = 0
        self.gaps = 0
        self.takeovers = 0
        self.fallbacks = 0

    def __repr__(self) -> str:
        return (
            f"<RouteShare {self.route} owned={len(self.owned)} followed={len(self.followed)} "
            f"local={len(self.local)}>"
        )

    @property
    def enabled(self) -> bool:
        return bool(self.hub.route.cfg.share == "cluster")

    def _token(self, key: Any) -> str:
        tok = self._tokens.get(key)
        if tok is None:
            tok = self._tokens[key] = key_token(self.route, key)
            self._by_token[tok] = key
        return tok

    def _subject(self, kind: str, key: Any) -> str:
        return f"{self.cfg.name}.{kind}.{self.route}.{self._token(key)}"

    def _lease_key(self, key: Any) -> str:
        return f"{self.route}.{self._token(key)}"

    # ------------------------------------------------------------------ hub-facing (sync)

    def gate(self, sub: Subscription) -> bool:
        """True: the share decides where ``sub`` comes from (placement waits for it)."""
        if not self.enabled or sub.key in self.local or self._closing:
            return False
        if sub.key not in self._deciding and self._tg is not None:
            self._deciding.add(sub.key)
            self._tg.create_task(self._decide(sub.key), name=f"share-{self.route}-decide")
        elif self._tg is None:
            self.local.add(sub.key)  # not running (yet): one node's behaviour
            return False
        return True

    def tap(self, sub: Subscription, ev: d.ChannelData) -> None:
        """Every event the fan-out delivers; the owner's go to the cluster."""
        own = self.owned.get(sub.key)
        if own is None or not own.publishing or own.cut is not None:
            return  # not ours, ours but still bridging from the old owner, or handed over
        seq = own.seq = own.seq + 1
        self.last_seq[sub.key] = seq
        self.out.frame(self._subject("md", sub.key), seq, ev, own.legacy)

    def resync(self, key: Any) -> None:
        fol = self.followed.pop(key, None)
        if fol is not None:
            self.gaps += 1
            if fol.served is not None and self._tg is not None:
                self._tg.create_task(fol.served.stop())
            self._redecide(key)

    def dropped(self, sub: Subscription) -> None:
        """No session wants ``sub`` any more (after the linger): release what we hold."""
        key = sub.key
        self.local.discard(key)
        tok = self._tokens.pop(key, None)  # the subjects below were made before
        if tok is not None:
            self._by_token.pop(tok, None)
        own = self.owned.pop(key, None)
        fol = self.followed.pop(key, None)
        if self._tg is None:
            return
        if own is not None:
            self._tg.create_task(self._release(key, own), name=f"share-{self.route}-release")
        if fol is not None and fol.served is not None:
            self._tg.create_task(fol.served.stop())

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self._watch(), name=f"share-{self.route}-leases")

    async def _link(self) -> KvBucket | None:
        if not self.engine.connected:
            self._bucket = None
            return None
        if self._bucket is None:
            try:
                async with asyncio.timeout(5.0):
                    self._bucket = await self.engine.bucket(f"{self.cfg.name}-leases", ttl=self.ttl)
            except Exception as exc:
                log.warning("cluster data plane: lease bucket not available (%r)", exc)
                return None
        return self._bucket

    async def _watch(self) -> None:
        """Renew what we own, watch the route's leases, fall back and come back with the
        link, spread ownership. Nothing here asks NATS per followed key: the lease watch
        (one per route) says when an owner releases, changes or stops renewing a key."""
        was_up = False
        poll = max(0.1, min(self.ttl / 6, 0.5))
        while True:
            await asyncio.sleep(poll)
            if not self.enabled or self._closing:
                continue
            bucket = await self._link()
            if bucket is None or (was_up and relink.replaced(self)):
                await self._stop_lease_watch()
                if was_up or self.followed:
                    relink.fall_back(self)
                was_up = False
                continue
            now = time.monotonic()
            if not was_up or self._take_served is None:
                await self._serve_offers()
            if not renewal.needs_leases(self, now):
                if self._lease_task is not None:
                    await self._stop_lease_watch(offers=False)
            elif not was_up or self._lease_task is None or self._lease_task.done():
                await self._start_lease_watch(bucket)
            if not was_up:
                was_up = True
                relink.rejoin(self)
            for key, since in list(self._handing.items()):
                if now - since > HANDING_MAX and key in self.owned:
                    # No successor cut our stream: the lease rules decide again (renewing
                    # finds who holds it now).
                    log.warning("route %s: hand-over of %s did not finish", self.route, key)
                    del self._handing[key]
                    self._abandoned.add(key)
            await renewal.renew_due(self, bucket, now)
            handover.check_followed(self, now, poll)
            if self._caught_up:
                handover.spread(self, now)

    async def _start_lease_watch(self, bucket: KvBucket) -> None:
        await self._stop_lease_watch(offers=False)
        self._owners.clear()
        assert self._tg is not None
        self._lease_task = self._tg.create_task(self._follow_leases(bucket))

    async def _serve_offers(self) -> None:
        """Spread offers reach this node on every link, keys or none: an owner counts a
        node as a follower as soon as it asked for a key's state, and drops it from every
        follower list when an offer finds nobody listening."""
        served, self._take_served = self._take_served, None
        if served is not None:
            await served.stop()
        with contextlib.suppress(Exception):
            self._take_served = await self.engine.serve(
                f"{self.cfg.name}.mdt.{self.route}.{self.node_id}",
                lambda payload: handover.answer_take(self, payload),
            )

    async def _follow_leases(self, bucket: KvBucket) -> None:
        with contextlib.suppress(Exception):
            await bucket.follow(lambda e: handover.on_lease(self, e), f"{self.route}.>")

    async def _stop_lease_watch(self, *, offers: bool = True) -> None:
        self._caught_up = False
        task, self._lease_task = self._lease_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if offers:
            served, self._take_served = self._take_served, None
            if served is not None:
                await served.stop()

    def bridge_data(self, key: Any) -> None:
        """The hub: a hand-over's new upstream subscription sent its first data."""
        ev = self.bridge_started.get(key)
        if ev is not None:
            ev.set()

    async def hand_over(self, timeout: float) -> int:  # noqa: ASYNC109 - a bound
        """Graceful stop: release every lease we hold, keep publishing until a successor
        holds each one (or ``timeout``), so followers need not wait for the TTL."""
        self._closing = True
        handover.leaving(self)
        if self._bucket is None or not self.owned or not self.engine.connected:
            await self.flushed(1.0)
            return 0
        keys = list(self.owned)
        # Beyond the TTL: a successor may still be subscribing (then it asks for the cut).
        await self._release_and_wait(keys, timeout + handover.HAND_OVER_EXTRA)
        log.info("route %s: handed over %d key(s)", self.route, len(keys))
        return len(keys)

    def before_drop(self, sub: Subscription) -> bool:
        """The linger of a key we own ended: if followers use it, hand it over first
        (make-before-break) and drop the upstream subscription afterwards."""
        key = sub.key
        own = self.owned.get(key)
        if own is None or own.asked == 0 or self._tg is None or self._closing:
            return False
        if self._bucket is None or not self.engine.connected:
            return False
        if key not in self._handing:
            self._handing[key] = time.monotonic()
            self._tg.create_task(self._hand_over_key(key), name=f"share-{self.route}-handover")
        return True

    async def _hand_over_key(self, key: Any) -> None:
        try:
            await self._release_and_wait([key], self.ttl)
        finally:
            self._handing.pop(key, None)
            self.hub.cluster_release(key)

    async def _release_and_wait(self, keys: list[Any], timeout: float) -> None:  # noqa: ASYNC109
        bucket = self._bucket
        if bucket is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                for key in keys:
                    entry = await bucket.get(self._lease_key(key))
                    if entry is not None and parse_doc(entry.value).get("epoch") == self.epoch:
                        await bucket.delete(self._lease_key(key))
                waiting = set(keys)
                while waiting:
                    for key in list(waiting):
                        if key not in self.owned or self.owned[key].cut is not None:
                            waiting.discard(key)  # a successor subscribed and cut our stream
                        elif not self._has_followers(key):
                            waiting.discard(key)
                    if waiting:
                        await asyncio.sleep(0.1)

    def _has_followers(self, key: Any) -> bool:
        """Whether anyone asked for this key's state since we own it (a follower)."""
        own = self.owned.get(key)
        return own is not None and own.asked > 0

    def _redecide(self, key: Any) -> None:
        if key in self._deciding or self._tg is None or self._closing:
            return
        self._deciding.add(key)
        self._tg.create_task(self._decide(key), name=f"share-{self.route}-decide")

    async def _release(self, key: Any, own: Owned) -> None:
        if own.served is not None:
            await own.served.stop()
        bucket = self._bucket
        if bucket is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                entry = await bucket.get(self._lease_key(key))
                if entry is not None and parse_doc(entry.value).get("epoch") == self.epoch:
                    await bucket.delete(self._lease_key(key))

    def _lease_doc(self, continues: str | None = None) -> bytes:
        doc: dict[str, Any] = {"node": self.node_id, "instance": self.epoch, "epoch": self.epoch}
        if continues is not None:
            doc["from"] = continues  # the stream we continue after its owner's cut
        return json.dumps(doc, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ decisions

    async def _decide(self, key: Any) -> None:
        try:
            for attempt in range(6):
                if await self._decide_once(key):
                    return
                # An owner that just took the lease may not serve its state yet.
                await asyncio.sleep(0.1 * (attempt + 1))
            self._go_local(key, "the lease keeps changing")
        except Exception as exc:
            self._go_local(key, f"deciding failed ({exc!r})")
        finally:
            self._deciding.discard(key)

    async def _decide_once(self, key: Any) -> bool:
        sub = self.hub.registry.get(key)
        if sub is None or not sub.sessions:
            return True
        bucket = await self._link()
        if bucket is None:
            self._go_local(key, "no cluster link")
            return True
        lease = self._lease_key(key)
        async with asyncio.timeout(self.ttl / 2):
            entry = await bucket.get(lease)
        doc = parse_doc(entry.value) if entry is not None else None
        verdict = decide_lease(doc, self.node_id, self.epoch, link_up=True)
        fol = self.followed.get(key)
        cont = fol.epoch if fol is not None and fol.ready else None
        if verdict.role is LeaseRole.TAKE:
            try:
                async with asyncio.timeout(self.ttl / 2):
                    if entry is None:
                        rev = await bucket.create(lease, self._lease_doc(cont))
                    else:
                        rev = await bucket.update(lease, self._lease_doc(cont), entry.revision)
            except KeyConflict:
                return False  # another node was first: look again
            await self._own(key, rev)
            return True
        if verdict.role is LeaseRole.OWN:
            assert entry is not None
            await self._own(key, entry.revision)
            return True
        assert verdict.owner is not None and verdict.epoch is not None
        if cont is not None and fol is not None and doc is not None and doc.get("from") == cont:
            if fol.successor_since is None:
                fol.successor_since = time.monotonic()
            return True  # the new owner continues the stream we follow: its link follows
        return await self._follow(key, verdict.owner, verdict.epoch)

    async def _own(self, key: Any, revision: int) -> None:
        held = self.owned.get(key)
        if held is not None:
            held.revision = revision
            return

        seq = stream_start(self.last_seq.get(key))  # never a number used before
        fol = self.followed.get(key)
        if fol is not None and fol.ready and self._tg is not None:
            # Make-before-break: subscribe upstream while the old stream still feeds.
            self.local.add(key)
            if self.hub.cluster_bridge(key):
                # Its state is served after the switch: until then the old owner alone
                # answers on that subject (a dead one: "no responders", at once).
                self.owned[key] = Owned(revision, time.monotonic(), seq, publishing=False)
                self.last_seq[key] = seq
                self.bridge_started[key] = asyncio.Event()
                self._tg.create_task(handover.take_over(self, key, fol), name="share-takeover")
                return
            self.local.discard(key)
        was_following = self.followed.pop(key, None)
        own = self.owned[key] = Owned(revision, time.monotonic(), seq)
        self.last_seq[key] = seq
        await self.serve_state(key, own)
        if was_following is not None:
            self.takeovers += 1
            log.warning(
                "route %s: %s took over %s from %s",
                self.route,
                self.node_id,
                key,
                was_following.owner,
            )
            if was_following.served is not None:
                await was_following.served.stop()
        if key not in self.local:
            self.local.add(key)
            self.hub.cluster_go_local(key)

    async def serve_state(self, key: Any, own: Owned) -> None:
        async def answer(payload: bytes) -> bytes | None:
            return await self._answer_state(key, payload)

        own.served = await self.engine.serve(self._subject("mds", key), answer)

    async def _answer_state(self, key: Any, payload: bytes = b"") -> bytes | None:
        req = parse_doc(payload) if payload else {}
        if "cut" in req:
            return await handover.answer_cut(self, key, req)
        own = self.owned.get(key)
        if req.get("notice"):
            if own is not None and req.get("node"):
                if req.get("leaving"):
                    own.followers.pop(str(req["node"]), None)
                else:
                    own.followers[str(req["node"])] = time.monotonic()
            return None
        sub = self.hub.registry.get(key)
        if own is None or sub is None or not own.publishing or own.cut is not None:
            return None
        own.asked += 1
        reads = req.get("wire")
        if not (isinstance(reads, int) and reads >= 2) and not own.legacy:
            # A node that reads only v1 follows: this key's frames go one per message.
            log.info("route %s: a follower of %s reads v1 frames only", self.route, key)
            own.legacy = True
        if req.get("node"):
            own.followers[str(req["node"])] = time.monotonic()
        snap = None
        ch = sub.attachment
        if ch is not None and sub.state in (SubState.CONFIRMED, SubState.LINGER):
            ev = ch.state.snapshot_event()
            if ev is not None:
                snap = [ev.channel, ev.kind.value, ev.text, ev.start, ev.end, ev.ts]
        return json.dumps({"epoch": self.epoch, "seq": own.seq, "snapshot": snap}).encode()

    async def _follow(self, key: Any, owner: str, epoch: str) -> bool:
        old = self.followed.get(key)
        if old is not None and old.epoch == epoch and old.ready:
            return True
        fol = Followed(owner, epoch)
        self.followed[key] = fol
        if old is not None and old.served is not None:
            await old.served.stop()

        fol.served = await self.engine.serve(self._subject("md", key), self.frame_handler(key, fol))
        ask = json.dumps({"node": self.node_id, "wire": 2}).encode()
        try:
            raw = await self.engine.request(self._subject("mds", key), ask, STATE_TIMEOUT)
            state = json.loads(raw)
        except Exception as exc:
            log.info("route %s: no state for %s from %s (%r)", self.route, key, owner, exc)
            self.followed.pop(key, None)
            await fol.served.stop()
            return False  # the owner may be gone: look at the lease again
        if state.get("epoch") != epoch:
            self.followed.pop(key, None)
            await fol.served.stop()
            return False
        fol.tracker.start(epoch, int(state.get("seq", 0)))
        snap = event_of(state.get("snapshot"))
        self.local.discard(key)
        self.hub.cluster_follow(key, owner, snap)
        fol.ready = True
        pending = list(fol.buffer)
        fol.buffer.clear()
        for body in pending:
            self._deliver(key, fol, body)
        log.info("route %s: following %s from %s", self.route, key, owner)
        return True

    def frame_handler(self, key: Any, fol: Followed) -> Callable[[bytes], Awaitable[None]]:
        async def on_frame(payload: bytes) -> None:
            self._on_frame(key, fol, payload)

        return on_frame

    def _on_frame(self, key: Any, fol: Followed, payload: bytes) -> None:
        if self.followed.get(key) is not fol:
            return
        bodies = wire.decode(payload)
        if bodies is None:
            if not self._unknown_seen:
                self._unknown_seen = True
                log.warning(
                    "route %s: ignoring frames in a format this node does not read (%s); "
                    "is a newer version running on another node?",
                    self.route,
                    wire.version_of(payload),
                )
            return
        self.received += len(bodies)
        if not fol.ready:
            fol.buffer.extend(bodies)
            return
        flusher = self.flusher
        if flusher is not None:
            flusher.begin()  # the message's frames reach the sessions in this turn
        try:
            for body in bodies:
                if self.followed.get(key) is not fol:
                    return  # a gap ended this stream: the rest waits for the state
                self._deliver(key, fol, body)
        finally:
            if flusher is not None:
                flusher.end()

    def _deliver(self, key: Any, fol: Followed, body: list[Any]) -> None:
        if len(body) == 4:
            verdict = fol.tracker.link(str(body[0]), str(body[2]), int(body[3]), int(body[1]))
            if verdict is SeqVerdict.NEXT:
                self._switched(key, fol)
            elif verdict is SeqVerdict.GAP:
                self._gap(key, fol)
            return
        verdict = fol.tracker.observe(str(body[0]), int(body[1]))
        if verdict is SeqVerdict.HOLD:
            fol.held.append(body)  # the successor's, before the old stream reached the cut
            return
        if verdict is SeqVerdict.STALE:
            return
        if verdict is SeqVerdict.GAP:
            self._gap(key, fol)
            return
        ev = event_of(body[2:])
        if ev is not None:
            self.hub.on_cluster_frame(key, ev)
        if fol.tracker.after_delivery():
            self._switched(key, fol)

    def _switched(self, key: Any, fol: Followed) -> None:
        """The old stream reached the cut: the successor's frames continue it."""
        assert fol.tracker.epoch is not None
        fol.epoch = fol.tracker.epoch
        seen = self._owners.get(self._token(key))
        if seen is not None and seen[1] == fol.epoch:
            fol.owner = seen[0]
        fol.successor_since = None
        self.linked += 1
        # The new owner learns who follows it (a spread needs that) without a state reply.
        self.queue(self._subject("mds", key), {"node": self.node_id, "notice": True})
        log.info("route %s: %s continues from %s without a gap", self.route, key, fol.owner)
        held = list(fol.held)
        fol.held.clear()
        for body in held:
            if self.followed.get(key) is not fol:
                return
            self._deliver(key, fol, body)

    def _gap(self, key: Any, fol: Followed) -> None:
        self.gaps += 1
        log.warning("route %s: gap in %s from %s; fetching its state", self.route, key, fol.owner)
        fol.ready = False
        fol.buffer.clear()
        self.followed.pop(key, None)
        self._redecide(key)

    def _go_local(self, key: Any, why: str) -> None:
        if key in self.local:
            return
        log.info("route %s: subscribing %s here (%s)", self.route, key, why)
        self.local.add(key)
        self.hub.cluster_go_local(key)

    # ------------------------------------------------------------------ publishing

    def queue(self, subject: str, body: list[Any] | dict[str, Any]) -> None:
        self.out.message(subject, json.dumps(body).encode())

    async def flushed(self, within: float) -> None:
        """Everything queued so far handed to the link (at once: nothing waits)."""
        self.out.pump()

    def statistics(self) -> ShareStatistics:
        return ShareStatistics(
            # A key changing hands is the publisher's until the cut, never counted twice.
            owned=sum(own.publishing and own.cut is None for own in self.owned.values()),
            followed=len(self.followed),
            local=len(self.local.difference(self.owned)),  # alone: no link, or no answer
            published=self.out.published,
            published_messages=self.out.messages,
            publish_dropped=self.out.dropped,
            received=self.received,
            gaps=self.gaps,
            takeovers=self.takeovers,
            fallbacks=self.fallbacks,
            handed_over=self.handed_over,
            taken_over=self.taken_over,
            linked=self.linked,
            moves_out=self.moves_out,
            moves_in=self.moves_in,
            last_move=self.last_move,
            unfit=dict(self.unfit),
            handing=len(self._handing),
            lease_events=self.lease_events,
        )
