"""The cluster data plane of one route (``share = "cluster"``): one upstream subscription
per key for the whole cluster.

For each subscription key the hub wants, this decides (:func:`wsgate.core.leases.decide_lease`)
whether this node *owns* it (holds the lease, subscribes upstream, publishes what its
sessions get), *follows* it (feeds its sessions from the owner's frames through the hub's
own path), or subscribes *locally* because the cluster link is down.

* Lease: key ``<route>.<token>`` in the bucket ``<name>-leases`` (TTL ``lease_ttl``),
  created if absent, renewed by the owner every ``lease_ttl / 3`` with compare-and-set.
* Frames: subject ``<name>.md.<route>.<token>``, JSON ``[epoch, seq, channel, kind, text,
  start, end, ts]``. The owner publishes from the fan-out's tap, so followers get exactly
  what the owner's sessions get (trade bridges, Binance depth bridging included).
* State: subject ``<name>.mds.<route>.<token>``; the owner answers with its epoch, its
  last sequence and its channel's snapshot. A follower buffers frames (bounded) until the
  answer, then delivers the snapshot and what came after it.

Nothing on the data path waits on NATS: the tap appends to a bounded queue a publisher
task drains (a full queue drops and counts; followers see a gap), decisions run in their
own tasks, and a subscription waits in DESIRED until its decision lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from wsgate.cluster.engine import Engine, KvBucket
from wsgate.cluster.engine import Subscription as Served
from wsgate.config.schema import ClusterConfig
from wsgate.core.leases import (
    LeaseRole,
    SeqTracker,
    SeqVerdict,
    decide_lease,
    key_token,
    renew_due,
)
from wsgate.core.subscriptions import Subscription, SubState
from wsgate.dialects import base as d
from wsgate.errors import KeyConflict

__all__ = ["RouteShare", "ShareStatistics"]

log = logging.getLogger("wsgate.cluster")

PUBLISH_QUEUE = 65536  # frames waiting for the link; beyond, dropped (followers see a gap)
FOLLOW_BUFFER = 4096  # frames held while a follower waits for the owner's state
STATE_TIMEOUT = 2.0
LINK_POLL = 0.25


@dataclass(eq=False)
class _Followed:
    owner: str
    epoch: str
    served: Served | None = None
    tracker: SeqTracker = field(default_factory=SeqTracker)
    ready: bool = False
    buffer: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=FOLLOW_BUFFER))


@dataclass(eq=False)
class _Owned:
    revision: int
    renewed_at: float
    seq: int = 0
    served: Served | None = None
    asked: int = 0  # state requests answered: followers exist


@dataclass(frozen=True)
class ShareStatistics:
    owned: int
    followed: int
    local: int
    published: int
    publish_dropped: int
    received: int
    gaps: int
    takeovers: int
    fallbacks: int


class RouteShare:
    """One route's part of the data plane; the hub calls :meth:`gate`, :meth:`tap` and
    :meth:`dropped`, and feeds followed frames through ``hub.on_cluster_frame``."""

    def __init__(
        self, cfg: ClusterConfig, node_id: str, route: str, engine: Engine, hub: Any
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
        self.owned: dict[Any, _Owned] = {}
        self.followed: dict[Any, _Followed] = {}
        self._deciding: set[Any] = set()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._closing = False
        self._handing: set[Any] = set()  # owned keys being handed over (no renewal)
        self.published = 0
        self.publish_dropped = 0
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
        if own is None:
            return
        own.seq += 1
        if len(self._queue) >= PUBLISH_QUEUE:
            self.publish_dropped += 1
            return
        body = [self.epoch, own.seq, ev.channel, ev.kind.value, ev.text, ev.start, ev.end, ev.ts]
        self._queue.append((self._subject("md", sub.key), json.dumps(body).encode()))
        self._wake.set()

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
        self._tokens.pop(key, None)  # the subjects below were made before: no token needed
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
            tg.create_task(self._publisher(), name=f"share-{self.route}-publish")
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
        """Renew what we own, watch what we follow, fall back and come back with the link."""
        was_up = False
        poll = max(0.1, min(self.ttl / 6, 0.5))
        while True:
            await asyncio.sleep(poll)
            if not self.enabled or self._closing:
                continue
            bucket = await self._link()
            if bucket is None:
                if was_up or self.followed:
                    self._fall_back()
                was_up = False
                continue
            if not was_up:
                was_up = True
                self._rejoin()
            now = time.monotonic()
            for key, own in list(self.owned.items()):
                if key not in self._handing and renew_due(own.renewed_at, now, self.ttl):
                    await self._renew(bucket, key, own, now)
            for key, fol in list(self.followed.items()):
                if not fol.ready:
                    continue
                try:
                    async with asyncio.timeout(self.ttl / 3):
                        entry = await bucket.get(self._lease_key(key))
                except Exception:
                    continue
                doc = _parse(entry.value) if entry is not None else None
                if doc is None or doc.get("epoch") != fol.epoch:
                    self._redecide(key)

    def _fall_back(self) -> None:
        """The link is gone: followed keys are subscribed here, as share = "node" does."""
        self._bucket = None
        for key in list(self.followed):
            fol = self.followed.pop(key)
            self.fallbacks += 1
            log.warning(
                "route %s: cluster link lost; subscribing %s here (was following %s)",
                self.route,
                key,
                fol.owner,
            )
            self.local.add(key)
            self.hub.cluster_go_local(key)
        for key in list(self.owned):  # still subscribed here; the lease lapses by itself
            del self.owned[key]
            self.local.add(key)

    def _rejoin(self) -> None:
        """The link is back: every key subscribed here goes back to the lease rules."""
        for key in list(self.local):
            sub = self.hub.registry.get(key)
            if sub is None or not sub.sessions:
                continue
            self._redecide(key)

    async def hand_over(self, timeout: float) -> int:  # noqa: ASYNC109 - a bound
        """Graceful stop: release every lease we hold, keep publishing until a successor
        holds each one (or ``timeout``), so followers need not wait for the TTL."""
        self._closing = True
        if self._bucket is None or not self.owned or not self.engine.connected:
            return 0
        keys = list(self.owned)
        await self._release_and_wait(keys, timeout)
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
            self._handing.add(key)
            self._tg.create_task(self._hand_over_key(key), name=f"share-{self.route}-handover")
        return True

    async def _hand_over_key(self, key: Any) -> None:
        try:
            await self._release_and_wait([key], self.ttl)
        finally:
            self._handing.discard(key)
            self.hub.cluster_release(key)

    async def _release_and_wait(self, keys: list[Any], timeout: float) -> None:  # noqa: ASYNC109
        bucket = self._bucket
        if bucket is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                for key in keys:
                    entry = await bucket.get(self._lease_key(key))
                    if entry is not None and _parse(entry.value).get("epoch") == self.epoch:
                        await bucket.delete(self._lease_key(key))
                waiting = set(keys)
                while waiting:
                    for key in list(waiting):
                        entry = await bucket.get(self._lease_key(key))
                        doc = _parse(entry.value) if entry is not None else {}
                        if doc.get("epoch") not in (None, self.epoch):
                            waiting.discard(key)  # a successor subscribed
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

    async def _renew(self, bucket: KvBucket, key: Any, own: _Owned, now: float) -> None:
        try:
            async with asyncio.timeout(self.ttl / 3):
                own.revision = await bucket.update(
                    self._lease_key(key), self._lease_doc(), own.revision
                )
            own.renewed_at = now
        except KeyConflict:
            log.warning("route %s: lease of %s taken by another node", self.route, key)
            self.owned.pop(key, None)
            self._redecide(key)
        except Exception as exc:
            log.warning("route %s: lease of %s not renewed (%r)", self.route, key, exc)

    async def _release(self, key: Any, own: _Owned) -> None:
        if own.served is not None:
            await own.served.stop()
        bucket = self._bucket
        if bucket is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                entry = await bucket.get(self._lease_key(key))
                if entry is not None and _parse(entry.value).get("epoch") == self.epoch:
                    await bucket.delete(self._lease_key(key))

    def _lease_doc(self) -> bytes:
        doc = {"node": self.node_id, "instance": self.epoch, "epoch": self.epoch}
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
        doc = _parse(entry.value) if entry is not None else None
        verdict = decide_lease(doc, self.node_id, self.epoch, link_up=True)
        if verdict.role is LeaseRole.TAKE:
            try:
                async with asyncio.timeout(self.ttl / 2):
                    if entry is None:
                        rev = await bucket.create(lease, self._lease_doc())
                    else:
                        rev = await bucket.update(lease, self._lease_doc(), entry.revision)
            except KeyConflict:
                return False  # another node was first: look again
            await self._own(key, rev)
            return True
        if verdict.role is LeaseRole.OWN:
            assert entry is not None
            await self._own(key, entry.revision)
            return True
        assert verdict.owner is not None and verdict.epoch is not None
        return await self._follow(key, verdict.owner, verdict.epoch)

    async def _own(self, key: Any, revision: int) -> None:
        held = self.owned.get(key)
        if held is not None:
            held.revision = revision
            return
        was_following = self.followed.pop(key, None)
        own = self.owned[key] = _Owned(revision, time.monotonic())

        async def answer(_payload: bytes, k: Any = key) -> bytes | None:
            return await self._answer_state(k)

        own.served = await self.engine.serve(self._subject("mds", key), answer)
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

    async def _answer_state(self, key: Any) -> bytes | None:
        own = self.owned.get(key)
        sub = self.hub.registry.get(key)
        if own is None or sub is None:
            return None
        own.asked += 1
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
        fol = _Followed(owner, epoch)
        self.followed[key] = fol
        if old is not None and old.served is not None:
            await old.served.stop()

        async def on_frame(payload: bytes, k: Any = key, f: _Followed = fol) -> None:
            self._on_frame(k, f, payload)

        fol.served = await self.engine.serve(self._subject("md", key), on_frame)
        try:
            raw = await self.engine.request(self._subject("mds", key), b"", STATE_TIMEOUT)
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
        snap = _event(state.get("snapshot"))
        self.local.discard(key)
        self.hub.cluster_follow(key, owner, snap)
        fol.ready = True
        pending = list(fol.buffer)
        fol.buffer.clear()
        for body in pending:
            self._deliver(key, fol, body)
        log.info("route %s: following %s from %s", self.route, key, owner)
        return True

    def _on_frame(self, key: Any, fol: _Followed, payload: bytes) -> None:
        if self.followed.get(key) is not fol:
            return
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if not isinstance(body, list) or len(body) != 8:
            return
        self.received += 1
        if not fol.ready:
            fol.buffer.append(body)
            return
        self._deliver(key, fol, body)

    def _deliver(self, key: Any, fol: _Followed, body: list[Any]) -> None:
        verdict = fol.tracker.observe(str(body[0]), int(body[1]))
        if verdict is SeqVerdict.STALE:
            return
        if verdict is SeqVerdict.GAP:
            self.gaps += 1
            log.warning(
                "route %s: gap in %s from %s; fetching its state", self.route, key, fol.owner
            )
            fol.ready = False
            fol.buffer.clear()
            self.followed.pop(key, None)
            self._redecide(key)
            return
        ev = _event(body[2:])
        if ev is not None:
            self.hub.on_cluster_frame(key, ev)

    def _go_local(self, key: Any, why: str) -> None:
        if key in self.local:
            return
        log.info("route %s: subscribing %s here (%s)", self.route, key, why)
        self.local.add(key)
        self.hub.cluster_go_local(key)

    # ------------------------------------------------------------------ publishing

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                subject, data = self._queue.popleft()
                try:
                    await self.engine.publish(subject, data)
                    self.published += 1
                except Exception:
                    self.publish_dropped += 1  # the followers see the gap

    def statistics(self) -> ShareStatistics:
        return ShareStatistics(
            owned=len(self.owned),
            followed=len(self.followed),
            local=len(self.local.difference(self.owned)),  # alone: no link, or no answer
            published=self.published,
            publish_dropped=self.publish_dropped,
            received=self.received,
            gaps=self.gaps,
            takeovers=self.takeovers,
            fallbacks=self.fallbacks,
        )


def _event(raw: Any) -> d.ChannelData | None:
    if not isinstance(raw, list) or len(raw) != 6:
        return None
    channel, kind, text, start, end, ts = raw
    try:
        return d.ChannelData(channel, d.DataKind(kind), str(text), int(start), int(end), ts)
    except (ValueError, TypeError):
        return None


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
