"""Prometheus metrics of the bot side: sessions, refused handshakes, drops, subscriptions.

==================================================  =====================================
``wsgate_sessions_open``                            open bot sessions {route}
``wsgate_handshakes_rejected_total``                refused WebSocket handshakes {reason}
                                                    (not_found, forbidden, unauthorized,
                                                    capacity, bad_request, too_many: a
                                                    client over its max_sessions, ...)
``wsgate_messages_dropped_total``                   frames not delivered {route, reason}:
                                                    unrouted (an old channel after a move
                                                    or unsubscribe race), duplicate (a
                                                    trade or frame the sessions already
                                                    have: a move's overlap), upstream_send
                                                    (a bot's frame the upstream send queue
                                                    could not take)
``wsgate_sessions_by_client``                       open bot sessions {route, client}: the
                                                    ``[[gateway.clients]]`` name the session
                                                    connected as, ``anonymous`` for every
                                                    session without one (a route token, or
                                                    none); the config bounds the values,
                                                    nothing a bot sends becomes a label
``wsgate_client_sessions_open``                     open sessions of each ``[[gateway.clients]]``
                                                    identity {client} (names come from the
                                                    config: bounded)
``wsgate_client_subscriptions``                     subscriptions held across a client's
                                                    sessions on shared routes {client}
``wsgate_client_refused_total``                     a client turned away {client, reason=
                                                    route|max_sessions|max_subscriptions}
``wsgate_sessions_slow_closed_total``               sessions closed as slow consumers {route}
``wsgate_session_subscriptions``                    subscriptions held by the route's
                                                    sessions {route, stat=sum|max}
``wsgate_trade_resumes_total``                      trade channels resumed after an upstream
                                                    change {route, outcome}: bridged (the
                                                    missed trades sent once as updates) or
                                                    announced (a gap, sent as a snapshot)
``wsgate_trades_bridged_total``                     trades sent by bridged resumes {route}
``wsgate_cluster_share_keys``                       keys of a ``share = "cluster"`` route
                                                    {route, role=owned|followed|alone}
``wsgate_cluster_share_frames_total``               frames between nodes {route,
                                                    direction=published|received|dropped}
``wsgate_cluster_share_events_total``               {route, event=gap|takeover|fallback|
                                                    handed_over|taken_over|linked|move_out|
                                                    move_in|lease_watch}: a follower's gaps
                                                    (announced by one snapshot), keys taken
                                                    over from a lost owner, keys subscribed
                                                    alone for lack of a cluster link; hand-overs
                                                    without a gap (given, taken, followed
                                                    on), spread moves, lease watch
                                                    entries received
==================================================  =====================================

The counters come from the route hubs and the gateway, which only count up; a route
removed by a reload takes its series with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Protocol

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wsgate.config.clients import ANONYMOUS
from wsgate.runtime.downstream.gateway import Gateway
from wsgate.runtime.routing.routes import RouteRuntime

__all__ = ["BotSideCollector", "rejection_reason"]

_CLIENT_HELP = " The client label is a [[gateway.clients]] name, as configured."

_REASONS = {
    HTTPStatus.NOT_FOUND: "not_found",
    HTTPStatus.FORBIDDEN: "forbidden",
    HTTPStatus.UNAUTHORIZED: "unauthorized",
    HTTPStatus.SERVICE_UNAVAILABLE: "capacity",
    HTTPStatus.BAD_REQUEST: "bad_request",
    HTTPStatus.TOO_MANY_REQUESTS: "too_many",  # a client over its max_sessions
}


def rejection_reason(status: int) -> str:
    """A stable label for a refused handshake's HTTP status."""
    try:
        return _REASONS.get(HTTPStatus(status), f"http_{status}")
    except ValueError:
        return f"http_{status}"


class BotSide(Protocol):
    """What the collector reads (the daemon provides it)."""

    @property
    def gateway(self) -> Gateway: ...
    @property
    def routes(self) -> dict[str, RouteRuntime]: ...


class BotSideCollector(Collector):
    def __init__(self, daemon: BotSide) -> None:
        self.d = daemon

    def collect(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("wsgate_sessions_open", "Open bot sessions.", labels=["route"])
        rejected = CounterMetricFamily(
            "wsgate_handshakes_rejected", "Refused bot handshakes by reason.", labels=["reason"]
        )
        dropped = CounterMetricFamily(
            "wsgate_messages_dropped",
            "Frames not delivered, by reason (unrouted, duplicate, upstream_send).",
            labels=["route", "reason"],
        )
        slow = CounterMetricFamily(
            "wsgate_sessions_slow_closed",
            "Sessions closed as slow consumers (send buffer full).",
            labels=["route"],
        )
        subs = GaugeMetricFamily(
            "wsgate_session_subscriptions",
            "Subscriptions held by the route's sessions: stat=sum over them, stat=max of one.",
            labels=["route", "stat"],
        )
        resumes = CounterMetricFamily(
            "wsgate_trade_resumes",
            "Trade channels resumed after an upstream change, by outcome: bridged (missed "
            "trades sent once as updates) or announced (a gap, sent as a snapshot).",
            labels=["route", "outcome"],
        )
        bridged = CounterMetricFamily(
            "wsgate_trades_bridged",
            "Trades the sessions had missed, sent as updates by bridged resumes.",
            labels=["route"],
        )
        by_client = GaugeMetricFamily(
            "wsgate_sessions_by_client",
            "Open bot sessions by client: its [[gateway.clients]] name, anonymous for "
            "sessions without one.",
            labels=["route", "client"],
        )
        share_keys = GaugeMetricFamily(
            "wsgate_cluster_share_keys",
            'Keys of a share = "cluster" route by role: owned (this node subscribes for the '
            "cluster), followed (fed by the owner), alone (no cluster link or no answer).",
            labels=["route", "role"],
        )
        share_frames = CounterMetricFamily(
            "wsgate_cluster_share_frames",
            "Frames between nodes: published by this owner, received as a follower, dropped "
            "(the publish queue was full or the link was down).",
            labels=["route", "direction"],
        )
        share_events = CounterMetricFamily(
            "wsgate_cluster_share_events",
            "Data plane events: gap (a follower refetched the owner's state), takeover (a "
            "key taken over from a lost owner), fallback (subscribed alone, link lost), "
            "handed_over/taken_over/linked (a hand-over without a gap: given, taken, "
            "followed on), move_out/move_in (spread moves).",
            labels=["route", "event"],
        )
        yield from _identities(self.d.gateway)
        # Labelled by configured identity only: a header a bot chooses (User-Agent) would
        # let any bot mint series.
        per_client: dict[tuple[str, str], int] = {}
        for session in list(self.d.gateway.sessions):
            client = session.client
            key = (session.route, client.name if client is not None else ANONYMOUS)
            per_client[key] = per_client.get(key, 0) + 1
        for (route, name), n in sorted(per_client.items()):
            by_client.add_metric([route, name], n)
        by_reason: dict[str, int] = {}
        for status, n in self.d.gateway.rejected.items():
            reason = rejection_reason(status)
            by_reason[reason] = by_reason.get(reason, 0) + n
        for reason, n in sorted(by_reason.items()):
            rejected.add_metric([reason], n)
        for rt in list(self.d.routes.values()):
            sessions.add_metric([rt.name], len(rt.sessions))
            hub = rt.hub
            if hub is None:
                continue
            st = hub.statistics()
            dropped.add_metric([rt.name, "unrouted"], st.dropped_unrouted)
            dropped.add_metric([rt.name, "duplicate"], st.duplicates_dropped)
            dropped.add_metric([rt.name, "upstream_send"], st.dropped_sends)
            slow.add_metric([rt.name], st.slow_consumers_closed)
            for outcome, n in sorted(st.trade_resumes.items()):
                resumes.add_metric([rt.name, outcome], n)
            bridged.add_metric([rt.name], st.trades_bridged)
            share = hub.share.statistics() if hub.share is not None else None
            if share is not None and rt.cfg.share == "cluster":
                for role, n in (
                    ("owned", share.owned),
                    ("followed", share.followed),
                    ("alone", share.local),
                ):
                    share_keys.add_metric([rt.name, role], n)
                for direction, n in (
                    ("published", share.published),
                    ("received", share.received),
                    ("dropped", share.publish_dropped),
                ):
                    share_frames.add_metric([rt.name, direction], n)
                for event, n in (
                    ("gap", share.gaps),
                    ("takeover", share.takeovers),
                    ("fallback", share.fallbacks),
                    ("handed_over", share.handed_over),
                    ("taken_over", share.taken_over),
                    ("linked", share.linked),
                    ("move_out", share.moves_out),
                    ("move_in", share.moves_in),
                    ("lease_watch", share.lease_events),
                ):
                    share_events.add_metric([rt.name, event], n)
            counts = [len(m.subs) for m in hub.intents.members.values()]
            subs.add_metric([rt.name, "sum"], sum(counts))
            subs.add_metric([rt.name, "max"], max(counts, default=0))
        yield from (sessions, by_client, rejected, dropped, slow, subs, resumes, bridged)
        yield from (share_keys, share_frames, share_events)


def _identities(gateway: Gateway) -> Iterator[Metric]:
    """One series per configured client (the config bounds the label values)."""
    sessions = GaugeMetricFamily(
        "wsgate_client_sessions_open", "Open sessions per client." + _CLIENT_HELP, labels=["client"]
    )
    subs = GaugeMetricFamily(
        "wsgate_client_subscriptions",
        "Subscriptions held across a client's sessions on shared routes." + _CLIENT_HELP,
        labels=["client"],
    )
    refused = CounterMetricFamily(
        "wsgate_client_refused",
        "Handshakes and subscribe requests refused to a client, by reason (route: not one "
        "of its routes; max_sessions; max_subscriptions)." + _CLIENT_HELP,
        labels=["client", "reason"],
    )
    for st in gateway.clients.statistics():
        sessions.add_metric([st.name], st.sessions)
        subs.add_metric([st.name], st.subscriptions)
        for reason, n in st.refused.items():
            refused.add_metric([st.name, reason], n)
    yield from (sessions, subs, refused)
