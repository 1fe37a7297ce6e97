"""The bot sessions of a hub: read their messages, execute their codecs' intents.

A :class:`~wsgate.dialects.base.SessionCodec` turns each client message into intents
(subscribe, unsubscribe, reply, conf flags, auth, close); :class:`SessionIntents` executes
them against the subscription registry, the placement and the fan-out lists, and answers
the session (acks, errors, snapshots, exchange notices) in its own protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from wsgate.core.backoff import TokenBucket
from wsgate.core.subscriptions import Subscription, SubscriptionRegistry, SubState
from wsgate.dialects import base as d
from wsgate.runtime.downstream.session import Session
from wsgate.runtime.routing.fanout import FanOut, Member
from wsgate.runtime.routing.placement import Placement
from wsgate.runtime.routing.seams import HubRoute
from wsgate.runtime.upstream.uplink import Uplink

__all__ = ["SessionIntents"]

log = logging.getLogger("wsgate.hub")


def _no_subscriptions() -> int:
    return 0


class SessionIntents:
    def __init__(
        self,
        route: HubRoute,
        dialect: d.Dialect,
        registry: SubscriptionRegistry,
        placement: Placement,
        fanout: FanOut,
        ups: dict[str, Uplink],
        clock: Callable[[], float],
        client_rate: Callable[[], float],
        subscription_cap: Callable[[], int] = lambda: 1024,
    ) -> None:
        self.route = route
        self.dialect = dialect
        self.registry = registry
        self.placement = placement
        self.fanout = fanout
        self.ups = ups
        self.clock = clock
        self.client_rate = client_rate  # client messages per second per session (reloadable)
        self.subscription_cap = subscription_cap  # subscriptions per session (reloadable)
        self.refused_over_cap = 0
        self.members: dict[int, Member] = {}  # session id -> member
        self.upstream_flags = dialect.upstream_flags_for([])
        self.slow_closed = 0
        # Errors sessions caused, by kind (unknown symbol, bad request, rate limit): they
        # count against the sessions, never against an upstream connection.
        self.session_errors: dict[str, int] = {}

    # ---------------------------------------------------------------- the session loop
    async def serve(self, ws: ServerConnection, session: Session, path: str, query: str) -> None:
        codec = self.dialect.open_session(path, query)
        m = Member(session, codec, ws, bucket=TokenBucket(self.client_rate(), 1.0, self.clock()))
        session.on_slow = self._on_slow
        session.subscription_count = m.subs.__len__  # the client's limit counts these
        self.members[session.id] = m
        try:
            for intent in self._within_cap(m, codec.on_open(self.clock())):
                if await self._intent(m, intent):
                    return
            async for msg in ws:
                session.messages_in += 1
                now = self.clock()
                assert m.bucket is not None
                if not m.bucket.try_acquire(now):
                    self.session_error((session.id,), "rate_limited")
                    await session.close(1008, "too many messages")
                    return
                intents = codec.on_client_message(msg, time.time())  # pong ts: epoch
                for intent in self._within_cap(m, intents):
                    if await self._intent(m, intent):
                        return
        except ConnectionClosed:
            pass
        finally:
            self._leave(m)

    def _within_cap(self, m: Member, intents: list[d.Intent]) -> list[d.Intent]:
        """The intents of one message, or its refusal when it would pass the session's cap
        or its client's ``max_subscriptions`` (counted across all the client's sessions).

        A request is refused as a whole, in the venue's own error form (Binance: one error
        with the request's id instead of its ``result``); nothing of it reaches upstream.
        """
        asked = {i.key for i in intents if isinstance(i, d.Subscribe) and i.key not in m.subs}
        if not asked:
            return intents
        cap = self.subscription_cap()
        client = m.session.client
        client_cap = client.cfg.max_subscriptions if client is not None else None
        code, msg = d.refusal(self.dialect, d.Refusal.LIMIT)
        if len(m.subs) + len(asked) > cap:
            self.session_error((m.session.id,), "subscription_cap")
            msg = f"{msg} ({cap} per session)"
        elif client is not None and client_cap is not None:
            held = client.subscriptions()
            if held + len(asked) <= client_cap:
                return intents
            client.refused["max_subscriptions"] += 1
            self.session_error((m.session.id,), "client_subscription_cap")
            msg = f"{msg} (client {client.name}: {client_cap} across its sessions, {held} held)"
        else:
            return intents
        self.refused_over_cap += 1
        out: list[d.Intent] = []
        sent: set[str] = set()
        for intent in intents:
            if isinstance(intent, d.Subscribe):
                frame = m.codec.render_subscribe_error(intent, code, msg)
                if frame is not None and frame not in sent:  # one per request id
                    sent.add(frame)
                    m.session.push_text(frame)
            elif not isinstance(intent, d.Reply):  # the refused request's own answer goes
                out.append(intent)
        self._drop_withdrawn(m)  # none of the request was executed: nothing to release
        return out

    def _on_slow(self, session: Session) -> None:
        self.slow_closed += 1
        m = self.members.get(session.id)
        if m is not None:
            for key in m.acked:  # stop spending fan-out work on it at once
                self.fanout.remove(self.registry.get(key), m)

    async def _intent(self, m: Member, intent: d.Intent) -> bool:
        """Execute one intent; True when the session must end."""
        if isinstance(intent, d.Subscribe):
            self._subscribe(m, intent)
        elif isinstance(intent, d.Unsubscribe):
            self._unsubscribe(m, intent)
        elif isinstance(intent, d.Error):
            self.session_error((m.session.id,), f"bad_request_{intent.code}")
            m.session.push_text(intent.frame)
        elif isinstance(intent, d.Reply):
            m.session.push_text(intent.frame)
        elif isinstance(intent, d.Conf):
            m.flags = intent.flags
            self.update_upstream_flags()
        elif isinstance(intent, d.Auth):
            return await self._authenticate(m, intent)
        elif isinstance(intent, d.Relay):
            self.session_error((m.session.id,), "not_authenticated")
            m.session.push_text(
                d.compact({"event": "error", "msg": "not authenticated", "code": 10100})
            )
        elif isinstance(intent, d.Close):
            await m.session.close(intent.code, intent.reason)
            return True
        return False

    def _subscribe(self, m: Member, req: d.Subscribe) -> None:
        now = self.clock()
        key = req.key
        m.subs[key] = req
        cadence = self.route.cadence(key, self.dialect.cadence(key))
        sub, new = self.registry.acquire(key, m.session.id, now, cadence)
        if new:
            self.fanout.channel(sub)
            self.placement.place(sub)
        elif sub.state is SubState.CONFIRMED:
            self.ack_waiting(sub)

    def _unsubscribe(self, m: Member, req: d.Unsubscribe) -> None:
        key = req.key
        m.subs.pop(key, None)
        m.held.pop(key, None)
        was_acked = key in m.acked
        m.acked.discard(key)
        self.fanout.remove(self.registry.get(key), m)
        self.registry.release(key, m.session.id, self.clock())
        sub = self.registry.get(key)
        if was_acked:
            gw = (
                req.gateway_chan_id
                if req.gateway_chan_id is not None
                else (sub.gw_id if sub else 0)
            )
            frame = m.codec.render_unsubscribed(gw)
            if frame is not None:
                m.session.push_text(frame)
        if m.held:  # withdrawing a stream may have completed the request holding others
            self._release_held(m)

    def _leave(self, m: Member) -> None:
        self.members.pop(m.session.id, None)
        m.session.subscription_count = _no_subscriptions
        for key in list(m.subs):
            self.fanout.remove(self.registry.get(key), m)
        self.registry.release_all(m.session.id, self.clock())
        if m.flags:
            self.update_upstream_flags()

    def update_upstream_flags(self) -> None:
        flags = self.dialect.upstream_flags_for([x.flags for x in self.members.values()])
        if flags == self.upstream_flags:
            return
        self.upstream_flags = flags
        for u in self.ups.values():
            if u.codec is not None:
                # The new codec's hello() is the conf frame. Frames already in flight keep the
                # old framing: the codec switches on the exchange's conf reply (ConfAck).
                hello = self.dialect.open_upstream(flags).hello()
                if hello:
                    u.confs.append(flags)
                for frame in hello:
                    u.send(frame)

    async def _authenticate(self, m: Member, intent: d.Auth) -> bool:
        """Authenticated sessions get a dedicated upstream and a 1:1 relay from now on."""
        route = self.route
        if not route.cfg.type.authenticated:
            m.session.push_text(
                d.compact(
                    {
                        "event": "auth",
                        "status": "FAILED",
                        "code": 10100,
                        "msg": f"route {route.name} is {route.cfg.type.value}: "
                        "use a user_data or trading route for auth",
                    }
                )
            )
            await m.session.close(1008, "auth not allowed on a market data route")
            return True
        # Leave the shared world: this session's traffic is now private.
        self._leave(m)
        await route.relay_after_auth(m.ws, m.session, intent.frame, intent.upstream_path)
        return True

    # ---------------------------------------------------------------- answers
    def ack_waiting(self, sub: Subscription) -> None:
        """The subscription is live: ack every session waiting for it, with a snapshot.

        A session whose codec holds the key (its request waits for other streams) joins
        the fan-out when the request is answered, with the request's other streams.
        """
        key = sub.key
        for sid in list(sub.sessions):
            m = self.members.get(sid)
            if m is None or key in m.acked or key in m.held:
                continue
            req = m.subs.get(key)
            if req is None:
                continue
            ack = m.codec.render_subscribed(req, sub.gw_id)
            if ack is not None:
                m.session.push_text(ack)
            m.held[key] = None
            self._release_held(m)

    def _release_held(self, m: Member) -> None:
        """Join every live key of ``m`` its codec no longer holds, in the order they came."""
        for key in [k for k in m.held if not m.codec.holds(k)]:
            del m.held[key]
            sub = self.registry.get(key)
            if sub is None or m.session.id not in sub.sessions or key not in m.subs:
                continue
            m.acked.add(key)
            self.fanout.members(sub).append(m)
            self.fanout.send_snapshot(m, sub)

    def _drop_withdrawn(self, m: Member) -> None:
        """Release the keys a refused request took back, telling the session nothing more
        (the request's error said it all)."""
        for key in m.codec.withdrawn():
            if m.subs.pop(key, None) is None:
                continue
            m.held.pop(key, None)
            m.acked.discard(key)
            self.fanout.remove(self.registry.get(key), m)
            self.registry.release(key, m.session.id, self.clock())

    def session_error(self, session_ids: Iterable[int], kind: str) -> None:
        """Count an error against the sessions that caused it (and the route's tally)."""
        self.session_errors[kind] = self.session_errors.get(kind, 0) + 1
        for sid in session_ids:
            m = self.members.get(sid)
            if m is not None:
                m.session.on_error(kind)

    def fail(self, sub: Subscription, code: int, msg: str) -> None:
        """The exchange refused the subscription for good: tell every waiting session."""
        sessions = self.registry.fail(sub, msg, self.clock())
        log.warning("route %s: subscription %s failed: %s", self.route.name, sub.key, msg)
        for sid in sessions:
            m = self.members.get(sid)
            if m is None:
                continue
            req = m.subs.pop(sub.key, None)
            m.acked.discard(sub.key)
            m.held.pop(sub.key, None)
            if req is not None:
                frame = m.codec.render_subscribe_error(req, code, msg)
                if frame is not None:
                    m.session.push_text(frame)
                self._drop_withdrawn(m)

    def refuse_waiting(self, sub: Subscription, why: d.Refusal) -> None:
        """Answer every session still waiting for ``sub`` with the venue's error for ``why``."""
        self.refuse(sub, self.registry.take_waiting(sub), why)

    def refuse(self, sub: Subscription, sessions: Iterable[int], why: d.Refusal) -> None:
        """Tell ``sessions`` their subscribe failed and release them from ``sub``."""
        code, msg = d.refusal(self.dialect, why)
        now = self.clock()
        told = 0
        for sid in sessions:
            m = self.members.get(sid)
            req = m.subs.pop(sub.key, None) if m is not None else None
            self.registry.release(sub.key, sid, now)
            if m is None or req is None:
                continue
            m.held.pop(sub.key, None)
            frame = m.codec.render_subscribe_error(req, code, msg)
            if frame is not None:
                m.session.push_text(frame)
                told += 1
            self._drop_withdrawn(m)
        if told:
            self.session_errors[why.value] = self.session_errors.get(why.value, 0) + told
            log.info(
                "route %s: %s refused to %d session(s): %s", self.route.name, sub.key, told, msg
            )

    def broadcast(self, frame: str) -> None:
        for m in self.members.values():
            m.session.push_text(frame)
