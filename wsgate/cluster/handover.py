"""Hand-over of a cluster-shared key from a live owner, without a gap, and ownership spread.

The protocol (see :mod:`wsgate.core.leases` for the follower's side):

1. The successor holds the lease, naming the stream it continues (``from``: the old
   owner's epoch). It got there because the owner released it (graceful stop, its bots
   left) or offered it (:func:`spread` asked it, :func:`answer_take`).
2. It subscribes upstream while the old owner's frames still feed its sessions; the new
   subscription's frames are held (:mod:`wsgate.runtime.routing.cluster_bridge`).
3. Once the new stream runs, it asks the old owner to cut (:func:`take_over`): the old
   owner stops publishing, flushes, and answers with its last sequence ``at``; from the
   next frame its own sessions follow the successor, and it unsubscribes upstream: the
   exchange sees the new subscribe before the old unsubscribe.
4. When its sessions have every frame up to ``at``, the successor publishes the link
   ``[epoch, start, old epoch, at]`` and switches: the held frames continue the state its
   sessions have, and what its sessions get is what every follower gets next.

An owner that cannot answer (killed) makes step 3 fail: the successor switches at once,
publishes a link with ``at = -1`` (followers fetch its state: one announced gap), and its
own sessions continue through the channel's own bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from wsgate.cluster.engine import KvEntry
from wsgate.cluster.share_state import Followed, parse_doc
from wsgate.core.cluster import NodeState
from wsgate.core.leases import SpreadMove, SpreadPolicy, plan_spread, route_health, target_unfit
from wsgate.errors import KeyConflict, NoResponders

# The route's wsgate.cluster.data_plane.RouteShare, which calls into this module (and an
# import back would be a cycle).
RouteShare = Any

__all__ = [
    "HAND_OVER_EXTRA",
    "answer_cut",
    "answer_take",
    "check_followed",
    "leaving",
    "on_lease",
    "spread",
    "take_over",
]

log = logging.getLogger("wsgate.cluster")

BRIDGE_WAIT = 2.0  # a quiet channel's new subscription may send nothing: cut anyway
CUT_TIMEOUT = 2.0
CATCH_UP = 2.0  # the cut's last frames reach the successor within this
LINK_WAIT = 5.0  # a successor named in the lease links its stream to ours within this
HAND_OVER_EXTRA = BRIDGE_WAIT + CUT_TIMEOUT  # a graceful stop waits this beyond the TTL
POLICY = SpreadPolicy()


async def take_over(share: RouteShare, key: Any, fol: Followed) -> None:
    """The successor's steps 2-4 (the lease is ours, the upstream subscribe is sent)."""
    own = share.owned.get(key)
    at = -1
    try:
        started = share.bridge_started.get(key)
        if started is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BRIDGE_WAIT):
                    await started.wait()
        ask = json.dumps({"cut": fol.epoch, "by": share.node_id}).encode()
        try:
            reply = parse_doc(
                await share.engine.request(share._subject("mds", key), ask, CUT_TIMEOUT)
            )
            if reply.get("epoch") == fol.epoch:
                at = int(reply.get("at", -1))
        except Exception as exc:
            log.info("route %s: the owner of %s did not cut (%r)", share.route, key, exc)
        if at >= 0:
            deadline = time.monotonic() + CATCH_UP
            while fol.tracker.seq < at and share.followed.get(key) is fol:
                if time.monotonic() > deadline:
                    log.warning("route %s: %s: frames up to the cut missing", share.route, key)
                    at = -1
                    break
                await asyncio.sleep(0.002)
    finally:
        share.bridge_started.pop(key, None)
        if share.followed.get(key) is fol:
            share.followed.pop(key, None)
            if fol.served is not None:
                await fol.served.stop()
    if own is None or share.owned.get(key) is not own:
        share.hub.cluster_bridge_done(key)  # lost the lease meanwhile: the rules go on
        return
    with contextlib.suppress(Exception):
        await share.serve_state(key, own)
    share.queue(share._subject("md", key), [share.epoch, own.seq, fol.epoch, at])
    own.publishing = True
    share.local.add(key)
    share.hub.cluster_bridge_done(key)
    if at >= 0:
        share.taken_over += 1
        log.info("route %s: took %s over from %s at %d, no gap", share.route, key, fol.owner, at)
    else:
        share.takeovers += 1
        log.warning(
            "route %s: took %s over from %s (its stream ended)", share.route, key, fol.owner
        )


async def answer_cut(share: RouteShare, key: Any, req: dict[str, Any]) -> bytes | None:
    """The old owner's step 3: stop publishing, flush, answer the last sequence."""
    own = share.owned.get(key)
    if own is None or req.get("cut") != share.epoch:
        return None  # not ours to cut (another node's answer, if any, wins)
    if own.cut is None:
        own.cut = own.seq
        await share.flushed(1.0)
        successor = str(req.get("by", "?"))
        share.owned.pop(key, None)
        share._handing.pop(key, None)
        share.local.discard(key)
        sub = share.hub.registry.get(key)
        if sub is not None and sub.sessions and not share._closing:
            fol = Followed(successor, share.epoch, ready=True)
            fol.tracker.start(share.epoch, own.cut)
            share.followed[key] = fol
            fol.served = await share.engine.serve(
                share._subject("md", key), share.frame_handler(key, fol)
            )
        share.hub.cluster_handed(key, successor)
        share.handed_over += 1
        log.info("route %s: %s handed over to %s at %d", share.route, key, successor, own.cut)
        if own.served is not None and share._tg is not None:
            share._tg.create_task(own.served.stop())
    return json.dumps({"epoch": share.epoch, "at": own.cut}).encode()


async def answer_take(share: RouteShare, payload: bytes) -> bytes | None:
    """A spread move offered to us: take the lease if we follow that very stream."""
    req = parse_doc(payload)
    key = share._by_token.get(str(req.get("token", "")))
    fol = share.followed.get(key) if key is not None else None
    bucket = share._bucket
    no = json.dumps({"ok": False}).encode()
    if key is None or fol is None or not fol.ready or bucket is None or share._closing:
        return no
    if fol.epoch != req.get("epoch") or key in share.owned:
        return no
    lease = share._lease_key(key)
    try:
        async with asyncio.timeout(share.ttl / 2):
            entry = await bucket.get(lease)
            if entry is None or parse_doc(entry.value).get("epoch") != fol.epoch:
                return no
            rev = await bucket.update(lease, share._lease_doc(fol.epoch), entry.revision)
    except (KeyConflict, TimeoutError):
        return no
    share.moves_in += 1
    share.moved_at[key] = time.monotonic()
    if share._tg is not None:  # answer now: the offer's bound must not include the subscribe
        share._tg.create_task(share._own(key, rev), name=f"share-{share.route}-take")
    return json.dumps({"ok": True}).encode()


def on_lease(share: RouteShare, entry: KvEntry | None) -> None:
    """The route's lease watch: a release, a new owner, a successor continuing our stream."""
    if entry is None:
        share._caught_up = True
        return
    share.lease_events += 1
    tok = entry.key.rsplit(".", 1)[-1]
    key = share._by_token.get(tok)
    fol = share.followed.get(key) if key is not None else None
    # Subscribed here alone while the link is up (a decision that gave up while the lease
    # kept changing): every lease event for the key is a chance to share it again.
    alone = key is not None and fol is None and key in share.local and key not in share.owned
    if entry.deleted:
        share._owners.pop(tok, None)
        if (fol is not None or alone) and key not in share.owned:
            share._redecide(key)  # released: a successor takes it, make-before-break
        return
    doc = parse_doc(entry.value)
    epoch = str(doc.get("epoch", ""))
    share._owners[tok] = (str(doc.get("node", "")), epoch, time.monotonic())
    if alone and epoch != share.epoch:
        share._redecide(key)
        return
    if fol is None or not fol.ready or epoch == fol.epoch or key in share.owned:
        return
    if doc.get("from") == fol.epoch:
        if fol.successor_since is None:
            fol.successor_since = time.monotonic()  # its link to our stream follows
        return
    share._redecide(key)


def leaving(share: RouteShare) -> None:
    """Graceful stop: tell the owner of every key we follow that we go. It stops counting
    us (a node it may hand keys to, a node owning none), or a spread would move a key
    for a node that is leaving, double the exchange's subscribes for nothing."""
    for key in share.followed:
        body = {"node": share.node_id, "notice": True, "leaving": True}
        share.queue(share._subject("mds", key), body)


def check_followed(share: RouteShare, now: float, poll: float) -> None:
    """A lease nobody renews any more (its owner died) lapses: look at it again."""
    if not share._caught_up:
        return
    for key, fol in list(share.followed.items()):
        if not fol.ready or key in share.owned:
            continue
        seen = share._owners.get(share._token(key))
        waited = fol.successor_since is not None and now - fol.successor_since > LINK_WAIT
        if seen is None or now - seen[2] > share.ttl + poll or waited:
            fol.successor_since = None
            share._redecide(key)


def spread(share: RouteShare, now: float) -> None:
    """Owning far more keys than the cluster's mean: offer some to their followers."""
    if not share.owned or share._tg is None:
        return
    if share.spread_checked is not None and now - share.spread_checked < POLICY.interval:
        return
    share.spread_checked = now
    for k, at in list(share.moved_at.items()):
        if now - at > POLICY.hold:
            del share.moved_at[k]
    live: frozenset[str] | None = None
    if share.peer_states is not None:
        # A follower killed with kill -9 says nothing: the membership's word decides. A
        # node we have not heard of yet is no target, but stays a follower.
        states = share.peer_states()
        live = frozenset(n for n, s in states.items() if s is NodeState.UP) | {share.node_id}
        for gone in (n for n, s in states.items() if s is not NodeState.UP):
            _forget(share, gone)
    owned = {
        k: tuple(own.followers)
        for k, own in share.owned.items()
        if own.publishing and own.cut is None and k not in share._handing
    }
    loads: dict[str, int] = {}
    for node, _epoch, seen in share._owners.values():
        if now - seen <= share.ttl + 1:
            loads[node] = loads.get(node, 0) + 1
    for followers in owned.values():
        for node in followers:
            loads.setdefault(node, 0)
    loads[share.node_id] = len(share.owned)
    unfit, health = _fitness(share, loads, now)
    moves = plan_spread(
        share.node_id,
        owned,
        loads,
        now,
        last_round=share.spread_round,
        moved_at=share.moved_at,
        policy=POLICY,
        live=live,
        unfit=unfit,
        health=health,
        rng=share.rng,
    )
    if moves:
        share.spread_round = now
    for mv in moves:
        share._handing[mv.key] = now  # no renewal: the target takes the lease over
        share._tg.create_task(_offer(share, mv), name=f"share-{share.route}-move")


def _fitness(
    share: RouteShare, nodes: dict[str, int], now: float
) -> tuple[dict[str, str], dict[str, float]]:
    """Who takes no key of this route now (with the reason), and every node's upstream
    health on it, from the heartbeat summaries (:func:`target_unfit`)."""
    if share.peer_summaries is None:
        return {}, {}
    summaries = share.peer_summaries()
    health: dict[str, float] = {}
    for node in nodes:
        summary = summaries.get(node)
        health[node] = route_health(summary, share.route)
        share.targets.observe(node, target_unfit(summary, share.route, POLICY), now)
    unfit = share.targets.unfit(now)
    for node, why in unfit.items():
        if share.unfit.get(node) != why:
            log.info("route %s: %s takes no key for now (%s)", share.route, node, why)
    for node in set(share.unfit) - set(unfit):
        log.info("route %s: %s may take keys again", share.route, node)
    share.unfit = unfit
    return unfit, health


async def _offer(share: RouteShare, mv: SpreadMove) -> None:
    key = mv.key
    ask = json.dumps({"token": share._token(key), "epoch": share.epoch}).encode()
    subject = f"{share.cfg.name}.mdt.{share.route}.{mv.target}"
    ok = False
    try:
        ok = parse_doc(await share.engine.request(subject, ask, CUT_TIMEOUT)).get("ok") is True
    except NoResponders:
        log.info("route %s: %s is gone, no longer a follower", share.route, mv.target)
        _forget(share, mv.target)
    except Exception as exc:
        log.info("route %s: %s did not take %s (%r)", share.route, mv.target, key, exc)
    own = share.owned.get(key)
    if not ok:
        share._handing.pop(key, None)
        if own is not None:
            own.followers.pop(mv.target, None)
        return
    share.moves_out += 1
    share.moved_at[key] = time.monotonic()
    move = {"route": share.route, "key": str(key), "from": share.node_id, "to": mv.target}
    share.last_move = {**move, "why": mv.why, "at": time.time()}
    log.info("route %s: moving %s to %s (%s)", share.route, key, mv.target, mv.why)
    if share.on_event is not None:
        with contextlib.suppress(Exception):
            share.on_event({**move, "why": mv.why})


def _forget(share: RouteShare, node: str) -> None:
    """``node`` is down (or answers nothing): it follows none of our keys any more."""
    for own in share.owned.values():
        own.followers.pop(node, None)
