"""This node's part in a cluster: identity, heartbeats, the membership watch, status
request/reply and the one-page-per-fact notification claims.

The daemon starts it (``join`` before its TaskGroup, so a node-id clash fails startup
with one line; ``start`` inside the TaskGroup) and stops it first on shutdown, so peers
see a graceful ``left`` instead of a silence. Nothing on the data path calls into it:
bots are served whether or not NATS is reachable.

Link lifecycle: one engine link at a time. Each link is a *session* (a TaskGroup): it
re-opens the buckets, re-checks the node id, publishes a heartbeat at once, serves the
status subject and follows the buckets. When the link drops the session ends, the
membership stops judging peers (see :mod:`wsgate.core.cluster`), and the run loop
reconnects with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from wsgate.cluster.base import (
    CLUSTER_SCOPED,
    ClaimKey,
    ClusterStatistics,
    StatusFn,
    SummaryFn,
)
from wsgate.cluster.engine import Engine, KvBucket, KvEntry
from wsgate.cluster.share_state import parse_doc
from wsgate.cluster.shared import SharedAlertState
from wsgate.config.schema import ClusterConfig
from wsgate.core.backoff import Backoff
from wsgate.core.cluster import ClaimVerdict, Membership, NodeState, decide_claim
from wsgate.core.types import Severity
from wsgate.errors import ClusterError, KeyConflict, NodeIdTaken
from wsgate.redact import mask_url

__all__ = ["ClusterNode"]

log = logging.getLogger("wsgate.cluster")

# Keys outlive the facts they record: a dead node's last heartbeat stays visible (as
# "down") for a day, and a claim outlives the heartbeat it is keyed by, so a node that
# restarts while a peer is still down finds the page already sent.
NODES_TTL = 86400.0
CLAIMS_TTL = 2 * 86400.0
ACKS_TTL = 7 * 86400.0
CLAIM_TIMEOUT = 2.0
_CLAIM_CACHE_MAX = 4096


class _LinkClosed(Exception):
    """The engine link is gone: end the session."""


class ClusterNode:
    """``[cluster] engine = "nats"``: see the module docstring."""

    enabled = True

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        engine: Engine,
        *,
        summary: SummaryFn,
        status: StatusFn,
        rng: random.Random,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.engine = engine
        self.instance = uuid.uuid4().hex[:16]
        self._summary_fn = summary
        # Node state changes for the event bus (/_wsgate/events, events.follow, wsgate top).
        self._on_change = on_change
        self._status_fn = status
        hb = cfg.heartbeat_interval
        self.membership = Membership(
            node_id, node_down_after=cfg.node_down_after, stall_after=max(2 * hb, 1.0)
        )
        self.shared = SharedAlertState(node_id)
        self._backoff = Backoff(
            rng, initial=min(1.0, hb), maximum=max(5.0, min(30.0, 3 * cfg.node_down_after))
        )
        self._nodes: KvBucket | None = None
        self._claims: KvBucket | None = None
        self._rev = 0
        self.identity = "pending"  # held | pending | lost
        self._identity_problem = ""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._alerting: Any = None
        self._started_mono = time.monotonic()
        self._link_lost_at: float | None = self._started_mono
        # Our own heartbeat's last acknowledgement. A link that is up but cannot write (a
        # stalled or partitioned server) tells us nothing about peers either: past this
        # age we stop judging them, before node_down_after could make them look down.
        self._last_ack: float | None = None
        self._ack_limit = max(cfg.node_down_after / 2, 1.5 * hb)
        self._suspect = False
        self._claim_cache: dict[str, bool] = {}
        self.heartbeats_sent = 0
        self.heartbeat_failures = 0
        self.claims_won = 0
        self.claims_lost = 0
        self.claim_failures = 0

    def __repr__(self) -> str:
        return f"<ClusterNode {self.node_id} {self.identity} {self.membership!r}>"

    @property
    def link_up(self) -> bool:
        return self.membership.link_up

    def _prefix(self, what: str) -> str:
        return f"{self.cfg.name}-{what}"

    # ------------------------------------------------------------------ lifecycle

    async def join(self) -> None:
        """Before serving: claim the node id if NATS answers (NodeIdTaken is fatal)."""
        if not await self.engine.connect(min(3.0, self.cfg.node_down_after)):
            log.warning(
                "cluster %s: NATS unreachable at %s (%s); serving alone, cluster degraded, "
                "retrying in the background",
                self.cfg.name,
                ", ".join(mask_url(u) for u in self.cfg.servers),  # userinfo is a password
                self.engine.statistics().last_error,
            )
            return
        try:
            await self._open_buckets()
            await self._claim_identity()
        except NodeIdTaken:
            await self.engine.close()
            raise
        except Exception as exc:
            log.warning("cluster: joining failed (%r); retrying in the background", exc)
            await self.engine.close()

    def attach(self, alerting: Any) -> None:
        self._alerting = alerting
        self.shared.attach(alerting)

    def start(self, tg: asyncio.TaskGroup) -> None:
        self._tasks = [
            tg.create_task(self._run(), name="cluster"),
            tg.create_task(self._judge_loop(), name="cluster-judge"),
        ]

    async def close(self) -> None:
        """Say goodbye (peers record ``left``, no page), then drop the link."""
        self._stop.set()
        nodes = self._nodes
        # Heartbeats stop first, so the goodbye cannot lose a compare-and-set race to one.
        for task in self._tasks:
            task.cancel()
        # gather: their ends are collected, while a cancellation of close() itself is not
        # swallowed (a suppress around each await would swallow it).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.engine.connected and nodes is not None and self.identity == "held":
            try:
                async with asyncio.timeout(2.0):
                    entry = await nodes.get(self.node_id)
                    mine = (
                        entry is not None
                        and parse_doc(entry.value).get("instance") == self.instance
                    )
                    last = entry.revision if mine and entry is not None else self._rev
                    await nodes.update(self.node_id, self._doc("left"), last)
                log.info("cluster %s: left", self.cfg.name)
            except Exception as exc:
                log.warning("cluster: could not announce the leave (%r)", exc)
        await self.engine.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _run(self) -> None:
        while not self._stop.is_set():
            started: float | None = None
            if self.engine.connected or await self.engine.connect(3.0):
                started = time.monotonic()
                try:
                    await self._session()
                except* _LinkClosed:
                    pass
                except* NodeIdTaken as eg:
                    self._lose_identity(str(eg.exceptions[0]))
                except* Exception as eg:
                    if not self._stop.is_set():
                        log.warning("cluster session ended: %r", eg.exceptions[0])
                finally:
                    self.membership.set_link(False, time.monotonic())
                    self._link_lost_at = time.monotonic()
                    self._suspect = False
                    self._nodes = self._claims = None
                    self.shared.detach_buckets()
                    if not self._stop.is_set():
                        await self.engine.close()
            if self._stop.is_set():
                return
            uptime = None if started is None else time.monotonic() - started
            decision = self._backoff.after_close(uptime)
            log.debug("cluster: reconnecting in %.2fs (%s)", decision.delay, decision.reason)
            await self._sleep(decision.delay)

    async def _session(self) -> None:
        if self._nodes is None:
            await self._open_buckets()
        assert self._nodes is not None
        if self.identity == "lost":
            return await self._idle_until_closed()
        await self._claim_identity()
        served = await self.engine.serve(
            f"{self.cfg.name}.status.{self.node_id}", self._answer_status
        )
        self.membership.set_link(True, time.monotonic())
        self._link_lost_at = None
        self._backoff.reset()
        log.info("cluster %s: linked as %s (%s)", self.cfg.name, self.node_id, self.instance)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._nodes.follow(self._on_node_entry), name="cluster-watch")
                self.shared.start(tg)
                tg.create_task(self._heartbeat_loop(), name="cluster-heartbeat")
                tg.create_task(self._until_closed(), name="cluster-link")
        finally:
            await served.stop()

    async def _idle_until_closed(self) -> None:
        await self.engine.wait_closed()

    async def _until_closed(self) -> None:
        await self.engine.wait_closed()
        raise _LinkClosed

    async def _open_buckets(self) -> None:
        self._nodes = await self.engine.bucket(self._prefix("nodes"), ttl=NODES_TTL)
        self._claims = await self.engine.bucket(self._prefix("claims"), ttl=CLAIMS_TTL)
        await self.shared.open_buckets(
            await self.engine.bucket(self._prefix("silences"), ttl=None),
            await self.engine.bucket(self._prefix("acks"), ttl=ACKS_TTL),
        )

    # ------------------------------------------------------------------ identity, heartbeats

    def _doc(self, state: str) -> bytes:
        doc = dict(self._summary_fn())
        doc.update(
            node_id=self.node_id,
            instance=self.instance,
            state=state,
            sent_at=time.time(),
            heartbeat_interval=self.cfg.heartbeat_interval,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        self.membership.set_own_summary(doc)
        return json.dumps(doc, separators=(",", ":")).encode()

    async def _claim_identity(self) -> None:
        """Hold our key in the nodes bucket; NodeIdTaken when a live node holds it."""
        nodes = self._nodes
        assert nodes is not None
        for _ in range(5):
            entry = await nodes.get(self.node_id)
            try:
                if entry is None:
                    self._rev = await nodes.create(self.node_id, self._doc("up"))
                else:
                    holder = parse_doc(entry.value)
                    mine = holder.get("instance") == self.instance
                    if not mine and holder.get("state") != "left":
                        # Alive if its heartbeat moves within two of its own intervals.
                        interval = float(holder.get("heartbeat_interval") or 2.0)
                        if await self._moves(nodes, entry.revision, 2 * interval + 0.5):
                            raise NodeIdTaken(_holder_line(self.node_id, holder))
                    self._rev = await nodes.update(self.node_id, self._doc("up"), entry.revision)
            except KeyConflict:
                continue  # it moved under us: look again
            self.identity = "held"
            self._last_ack = time.monotonic()
            return
        raise ClusterError(f"could not claim node id {self.node_id!r}: it keeps changing")

    async def _moves(self, nodes: KvBucket, revision: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, within / 4))
            entry = await nodes.get(self.node_id)
            if entry is None or entry.revision != revision:
                return entry is not None
        return False

    def _lose_identity(self, why: str) -> None:
        self.identity = "lost"
        self._identity_problem = why
        log.error("cluster: %s; this node stops heartbeating", why)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_interval)
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        nodes = self._nodes
        assert nodes is not None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with completion, and a TaskGroup would then wait forever.
            async with asyncio.timeout(2 * self.cfg.heartbeat_interval):
                self._rev = await nodes.update(self.node_id, self._doc("up"), last=self._rev)
            self.heartbeats_sent += 1
            self._acknowledged()
        except KeyConflict:
            entry = await nodes.get(self.node_id)
            holder = parse_doc(entry.value) if entry is not None else {}
            if entry is not None and holder.get("instance") != self.instance:
                raise NodeIdTaken(_holder_line(self.node_id, holder)) from None
            self.identity = "pending"
            await self._claim_identity()  # expired or our own write raced: take it back
        except TimeoutError:
            self.heartbeat_failures += 1
            log.warning("cluster: heartbeat not acknowledged within %.1fs", self._hb_timeout())

    def _acknowledged(self) -> None:
        now = time.monotonic()
        self._last_ack = now
        if self._suspect and self.engine.connected:
            self._suspect = False
            self.membership.set_link(True, now)  # a fresh grace for every peer
            log.info("cluster: heartbeats acknowledged again; judging peers")

    def _check_own_heartbeat(self, now: float) -> None:
        ack = self._last_ack
        if self._suspect or not self.membership.link_up or ack is None:
            return
        if now - ack > self._ack_limit:
            self._suspect = True
            self.membership.set_link(False, now)
            log.warning(
                "cluster: own heartbeat not acknowledged for %.1fs; not judging peers", now - ack
            )

    def _hb_timeout(self) -> float:
        return 2 * self.cfg.heartbeat_interval

    def _on_node_entry(self, entry: KvEntry | None) -> None:
        if entry is None or entry.deleted:
            return
        doc = parse_doc(entry.value)
        if not doc:
            log.debug("cluster: unreadable heartbeat for %s ignored", entry.key)
            return
        change = self.membership.observe(
            entry.key, entry.revision, doc, time.monotonic(), time.time()
        )
        if change is not None:
            old = change.old.value if change.old is not None else "new"
            log.info("cluster: node %s %s -> %s", change.node_id, old, change.new.value)
            self._publish(change.node_id, old, change.new.value)

    async def _judge_loop(self) -> None:
        period = max(0.1, min(1.0, self.cfg.heartbeat_interval / 2))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            self._check_own_heartbeat(now)
            for change in self.membership.tick(now):
                log.warning(
                    "cluster: node %s is down (no heartbeat for %.1fs)",
                    change.node_id,
                    self.cfg.node_down_after,
                )
                self._publish(change.node_id, "up", "down")
            self._degraded_alert(now)

    def _publish(self, node_id: str, old: str, new: str) -> None:
        if self._on_change is not None:
            data = {"node_id": node_id, "from": old, "to": new, "observer": self.node_id}
            try:
                self._on_change(data)
            except Exception:  # a dashboard's trouble must not stop the membership
                log.exception("cluster event not published")

    def _degraded_alert(self, now: float) -> None:
        """A system alert while this node is out of the cluster for longer than a blip."""
        engine = getattr(self._alerting, "engine", None)
        if engine is None:
            return
        ttl = max(5.0, 3 * self.cfg.heartbeat_interval)
        if self.identity == "lost":
            engine.raise_external(
                "system_health",
                {"check": "cluster_identity"},
                Severity.CRITICAL,
                f"cluster: {self._identity_problem}",
                time.time(),
                ttl=ttl,
            )
        lost = self._link_lost_at
        if lost is not None and now - lost > self.cfg.node_down_after:
            reason = self.engine.statistics().last_error or "link down"
            engine.raise_external(
                "system_health",
                {"check": "cluster_engine"},
                Severity.WARNING,
                f"cluster engine unreachable for {now - lost:.0f}s ({reason}); serving alone",
                time.time(),
                ttl=ttl,
            )

    # ------------------------------------------------------------------ views

    def alert_fields(self, now: float) -> dict[str, Any]:
        peers = tuple((n, s, round(age, 3)) for n, s, age in self.membership.alert_peers(now))
        return {"peers": peers, "cluster_link_up": self.link_up and self.identity == "held"}

    def peer_states(self) -> dict[str, NodeState]:
        """Every peer's state as the membership judges it now (the spread counts the up)."""
        return {n: s for n, s, _age in self.membership.peers(time.monotonic())}

    def peer_summaries(self) -> dict[str, Mapping[str, Any]]:
        """Every node's last heartbeat summary (the spread's targets judge their health)."""
        return self.membership.summaries()

    def nodes(self) -> list[dict[str, Any]]:
        self.membership.set_own_summary({**self._summary_fn(), "version": _version()})
        return [v.as_dict() for v in self.membership.view(time.monotonic(), time.time())]

    async def _answer_status(self, payload: bytes) -> bytes:
        return json.dumps({"node_id": self.node_id, "status": self._status_fn()}).encode()

    async def status_all(self, timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Every node's ``status`` side by side; a node that does not answer says so."""
        rows: list[dict[str, Any]] = [
            {"node_id": self.node_id, "state": "up", "answered": True, "status": self._status_fn()}
        ]
        peers = self.membership.peers(time.monotonic())

        async def ask(node_id: str, state: NodeState) -> dict[str, Any]:
            row: dict[str, Any] = {"node_id": node_id, "state": state.value, "answered": False}
            if state is NodeState.LEFT:
                return {**row, "error": "left the cluster"}
            try:
                raw = await self.engine.request(f"{self.cfg.name}.status.{node_id}", b"", timeout)
                return {**row, "answered": True, "status": json.loads(raw)["status"]}
            except (ClusterError, ValueError, KeyError) as exc:
                return {**row, "error": str(exc)}

        rows.extend(await asyncio.gather(*(ask(n, s) for n, s, _ in peers)))
        return rows

    # ------------------------------------------------------------------ notification claims

    def scoped(self, view: Any) -> bool:
        return str(getattr(view, "alertname", "")) in CLUSTER_SCOPED

    def claim_key(self, view: Any) -> ClaimKey:
        """The fact ``view``'s notification is about, with the peer's episode as seen now."""
        peer = str(view.labels.get("peer", ""))
        return ClaimKey(
            view.fingerprint, view.alertname, view.state.value, self.membership.episode(peer)
        )

    async def claim(self, key: ClaimKey) -> bool | None:
        """True when this node sends the notification (see ``decide_claim``), False when
        another node does, None when the cluster could not be asked (no link, no answer):
        then nobody knows, and this node pages nothing about peers."""
        fingerprint, proposal, episode = key.fingerprint, key.proposal, key.episode
        cache_key = f"{fingerprint}.{proposal}.{episode}"
        cached = self._claim_cache.get(cache_key)
        if cached is not None:
            return cached
        claims = self._claims
        if claims is None or not self.link_up:
            self.claim_failures += 1
            return None
        try:
            async with asyncio.timeout(3 * CLAIM_TIMEOUT):
                won = await self._claim(claims, fingerprint, proposal, episode)
        except Exception as exc:
            self.claim_failures += 1
            log.warning("cluster: claim of %s failed (%r); not sending", cache_key, exc)
            return None
        if len(self._claim_cache) >= _CLAIM_CACHE_MAX:
            self._claim_cache.clear()
        self._claim_cache[cache_key] = won
        if won:
            self.claims_won += 1
        else:
            self.claims_lost += 1
            log.info("cluster: %s notice for %s sent elsewhere", proposal, fingerprint)
        return won

    async def _claim(self, claims: KvBucket, key: str, proposal: str, episode: str) -> bool:
        for _ in range(5):
            entry = await claims.get(key)
            current = parse_doc(entry.value) if entry is not None else None
            verdict = decide_claim(current, proposal, episode, self.node_id)
            if verdict is not ClaimVerdict.WRITE:
                return verdict is ClaimVerdict.WON
            record = {"state": proposal, "episode": episode, "node": self.node_id}
            raw = json.dumps(record, separators=(",", ":")).encode()
            try:
                if entry is None:
                    await claims.create(key, raw)
                else:
                    await claims.update(key, raw, last=entry.revision)
            except KeyConflict:
                continue  # another node moved the record first: judge again
            return True
        return False

    def statistics(self) -> ClusterStatistics:
        m = self.membership.statistics()
        return ClusterStatistics(
            engine=self.cfg.engine,
            link_up=self.link_up,
            identity=self.identity,
            nodes_up=m.up + 1,
            nodes_down=m.down,
            nodes_left=m.left,
            peer_heartbeat_age={n: a for n, _, a in self.membership.peers(time.monotonic())},
            heartbeats_sent=self.heartbeats_sent,
            heartbeat_failures=self.heartbeat_failures,
            claims_won=self.claims_won,
            claims_lost=self.claims_lost,
            claim_failures=self.claim_failures,
            engine_stats=self.engine.statistics(),
        )


def _holder_line(node_id: str, holder: dict[str, Any]) -> str:
    started = holder.get("started_at")
    since = (
        datetime.fromtimestamp(float(started), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if isinstance(started, int | float)
        else "?"
    )
    return (
        f"daemon.node_id {node_id!r} is held by a live node: pid {holder.get('pid', '?')} "
        f"on {holder.get('host', '?')}, gateway {holder.get('gateway', '?')}, up since {since}; "
        "give each node its own node_id"
    )


def _version() -> str:
    from wsgate.version import __version__

    return __version__
