"""Grouping, per-channel routing and notification timing (Alertmanager semantics).

A group is keyed by the values of ``group_by`` labels. Its first flush happens ``group_wait``
after it is created, then it ticks every ``group_interval``; a tick notifies a channel only if
the channel's view changed (new firing alerts, newly resolved ones) or ``repeat_interval``
passed since the last notification and not every firing alert is acknowledged. Because
groups only ever flush on their ticks, two notifications of one group to one channel are
always at least ``group_interval`` apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsgate.core.alerts.state import AlertState, AlertView, iso_time
from wsgate.core.types import Severity

__all__ = [
    "ChannelRoute",
    "GroupState",
    "GroupTimers",
    "NflogEntry",
    "Notification",
    "channel_accepts",
    "flush_group",
    "group_key_for",
]


@dataclass(frozen=True, slots=True)
class ChannelRoute:
    """Which alerts a channel receives: at least ``min_severity``, and all ``matchers`` equal."""

    name: str
    min_severity: Severity = Severity.INFO
    matchers: tuple[tuple[str, str], ...] = ()
    send_resolved: bool = True


def channel_accepts(channel: ChannelRoute, view: AlertView) -> bool:
    if view.severity.rank < channel.min_severity.rank:
        return False
    labels = view.labels
    return all(labels.get(k, "") == v for k, v in channel.matchers)


@dataclass(frozen=True, slots=True)
class GroupTimers:
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 14400.0
    send_resolved: bool = True


def group_key_for(labels: Mapping[str, str], group_by: Sequence[str]) -> tuple[str, dict[str, str]]:
    """(group key, group labels); the key reads like Alertmanager's ``{a="x",b="y"}``."""
    group_labels = {name: labels.get(name, "") for name in group_by}
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items()))
    return "{" + inner + "}", group_labels


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel. ``id`` is stable and unique: receivers dedupe on it."""

    id: str
    channel: str
    group_key: str
    status: str  # "firing" | "resolved"
    alerts: tuple[AlertView, ...]
    kind: str = "alert"  # "alert" | "flapping" | "test"
    group_labels: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    created_at: float = 0.0
    external_url: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Alertmanager webhook v4 shape, plus a ``wsgate`` block with our own fields."""
        alerts = [a.to_webhook_dict() for a in self.alerts]
        common_labels = _common([a["labels"] for a in alerts])
        common_annotations = _common([a["annotations"] for a in alerts])
        return {
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": 0,
            "status": self.status,
            "receiver": self.channel,
            "groupLabels": dict(self.group_labels),
            "commonLabels": common_labels,
            "commonAnnotations": common_annotations,
            "externalURL": self.external_url,
            "notification_reason": self.reason,
            "alerts": alerts,
            "wsgate": {
                "id": self.id,
                "kind": self.kind,
                "channel": self.channel,
                "created_at": self.created_at,
                "created": iso_time(self.created_at),
                "alerts": [a.to_dict() for a in self.alerts],
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Notification:
        """Rebuild from :meth:`to_dict` output (e.g. a notification outbox row)."""
        ext = d["wsgate"]
        return cls(
            id=str(ext["id"]),
            channel=str(ext["channel"]),
            group_key=str(d["groupKey"]),
            status=str(d["status"]),
            alerts=tuple(AlertView.from_dict(a) for a in ext["alerts"]),
            kind=str(ext["kind"]),
            group_labels=tuple((str(k), str(v)) for k, v in d["groupLabels"].items()),
            reason=str(d.get("notification_reason", "")),
            created_at=float(ext["created_at"]),
            external_url=str(d.get("externalURL", "")),
        )

    def __repr__(self) -> str:
        return (
            f"<Notification {self.id} {self.kind} {self.status} to {self.channel} "
            f"alerts={len(self.alerts)} reason={self.reason!r}>"
        )


def _common(dicts: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


@dataclass(slots=True)
class NflogEntry:
    """What a channel was last told about a group (Alertmanager's notification log)."""

    sent_at: float
    firing: frozenset[str]

    def to_dict(self) -> dict[str, Any]:
        return {"sent_at": self.sent_at, "firing": sorted(self.firing)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NflogEntry:
        return cls(float(d["sent_at"]), frozenset(str(x) for x in d["firing"]))


@dataclass(slots=True)
class GroupState:
    """One aggregation group: members (fingerprints), its tick timer and its nflog."""

    key: str
    labels: dict[str, str]
    created_at: float
    next_flush_at: float
    members: set[str] = field(default_factory=set)
    nflog: dict[str, NflogEntry] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "labels": dict(self.labels),
            "created_at": self.created_at,
            "next_flush_at": self.next_flush_at,
            "members": sorted(self.members),
            "nflog": {ch: e.to_dict() for ch, e in sorted(self.nflog.items())},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupState:
        return cls(
            key=str(d["key"]),
            labels={str(k): str(v) for k, v in d["labels"].items()},
            created_at=float(d["created_at"]),
            next_flush_at=float(d["next_flush_at"]),
            members={str(x) for x in d["members"]},
            nflog={str(ch): NflogEntry.from_dict(e) for ch, e in d["nflog"].items()},
        )


def flush_group(
    group: GroupState,
    views: Mapping[str, AlertView],
    channels: Sequence[ChannelRoute],
    timers: GroupTimers,
    now: float,
    next_id: Callable[[str, str], str],
    external_url: str = "",
) -> list[Notification]:
    """Decide, per channel, whether this tick notifies; update the nflog. ``views`` holds the
    group's members; ``next_id(channel, group_key)`` returns a fresh notification id."""
    out: list[Notification] = []
    for channel in channels:
        eligible = [v for v in views.values() if not v.flapping and channel_accepts(channel, v)]
        last = group.nflog.get(channel.name)
        last_firing = last.firing if last is not None else frozenset()
        # An alert acknowledged before this channel heard of it is not news to anyone: the
        # ack (say, during group_wait) stops its first notification, not only the repeats.
        firing = {
            v.fingerprint: v
            for v in eligible
            if v.state is AlertState.FIRING
            and not v.suppressed
            and (not v.acknowledged or v.fingerprint in last_firing)
        }
        # Resolved alerts this channel was told were firing: told again even if silenced since.
        resolved = {
            v.fingerprint: v
            for v in eligible
            if v.state is AlertState.RESOLVED and v.fingerprint in last_firing
        }
        send_resolved = timers.send_resolved and channel.send_resolved
        reason = ""
        if last is None:
            reason = "first notification" if firing else ""
        elif firing.keys() - last_firing:
            reason = "new alerts added"
        elif resolved and not firing:
            reason = "all alerts resolved"
        elif resolved:
            reason = "some alerts resolved"
        elif (
            firing
            and now - last.sent_at >= timers.repeat_interval
            and not all(v.acknowledged for v in firing.values())
        ):
            reason = "repeat interval elapsed"
        if not reason:
            continue
        if reason.endswith("resolved") and not send_resolved:
            # Forget the resolved ones without sending, so a re-fire counts as new (AM #1063).
            assert last is not None
            last.firing = last.firing - resolved.keys()
            continue
        shown = list(firing.values()) + (list(resolved.values()) if send_resolved else [])
        shown.sort(key=lambda v: (v.status, v.fingerprint))
        group.nflog[channel.name] = NflogEntry(now, frozenset(firing))
        out.append(
            Notification(
                id=next_id(channel.name, group.key),
                channel=channel.name,
                group_key=group.key,
                status="firing" if firing else "resolved",
                alerts=tuple(shown),
                kind="alert",
                group_labels=tuple(sorted(group.labels.items())),
                reason=reason,
                created_at=now,
                external_url=external_url,
            )
        )
    return out
