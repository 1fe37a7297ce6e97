"""The per-alert state machine: inactive → pending → firing → resolved.

One :class:`AlertRecord` per fingerprint. Its state changes only in :meth:`AlertRecord.move`.
Pending is an M-of-N window (``pending_samples`` breaching samples among the last ``window``),
so one good sample does not reset it, unlike Prometheus' ``for``. Firing holds while the value
sits between the clear and fire thresholds, and for ``keep_firing_for`` after the last breach.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from wsgate.core.alerts.silences import Ack
from wsgate.core.alerts.units import format_value
from wsgate.core.types import Severity

__all__ = [
    "AlertRecord",
    "AlertState",
    "AlertView",
    "Transition",
    "fingerprint",
    "iso_time",
]

log = logging.getLogger("wsgate.alerts")


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Transition(NamedTuple):
    """One state change. Carries the alert's name, labels, summary and value as they were at
    the change, so history and logs can name an alert that no longer exists (pending ->
    inactive deletes the record in the same evaluation)."""

    fingerprint: str
    old: AlertState
    new: AlertState
    alertname: str = ""
    labels: Mapping[str, str] | None = None
    summary: str = ""
    value: float | None = None
    at: float | None = None


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of a label set: sha256 over sorted ``name\xffvalue\xff``, 16 hex chars."""
    text = "".join([f"{name}\xff{labels[name]}\xff" for name in sorted(labels)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end time"
INPUT_MEMORY = 30  # samples an alert remembers for `wsgate alerts explain`
CHANGE_MEMORY = 20


def iso_time(ts: float | None) -> str:
    """Epoch seconds to RFC 3339 UTC (converting a given time, not reading the clock)."""
    if ts is None:
        return _ZERO_TIME
    text = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AlertView:
    """A read-only picture of one alert, for notifications, ``active()`` and the CLI."""

    fingerprint: str
    alertname: str
    state: AlertState
    severity: Severity
    labels: Mapping[str, str]
    summary: str
    value: float | None
    started_at: float | None
    fired_at: float | None
    resolved_at: float | None
    acknowledged: bool = False
    acked_by: str = ""
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    flapping: bool = False
    group_key: str = ""
    # Its causes, as "connection_failure bfx-c1 firing" (while inhibited, or held after
    # they resolved), and the consequences it explains (the "also affected" list).
    caused_by: tuple[str, ...] = ()
    also_affected: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """Notification status: ``firing`` or ``resolved``."""
        return "resolved" if self.state is AlertState.RESOLVED else "firing"

    @property
    def suppressed(self) -> bool:
        return bool(self.silenced_by or self.inhibited_by)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "state": self.state.value,
            "severity": self.severity.value,
            "labels": dict(self.labels),
            "summary": self.summary,
            "value": self.value,
            "started_at": self.started_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "acknowledged": self.acknowledged,
            "acked_by": self.acked_by,
            "silenced_by": list(self.silenced_by),
            "inhibited_by": list(self.inhibited_by),
            "flapping": self.flapping,
            "group_key": self.group_key,
            "caused_by": list(self.caused_by),
            "also_affected": list(self.also_affected),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertView:
        return cls(
            fingerprint=str(d["fingerprint"]),
            alertname=str(d["alertname"]),
            state=AlertState(d["state"]),
            severity=Severity(d["severity"]),
            labels={str(k): str(v) for k, v in d["labels"].items()},
            summary=str(d.get("summary", "")),
            value=d.get("value"),
            started_at=d.get("started_at"),
            fired_at=d.get("fired_at"),
            resolved_at=d.get("resolved_at"),
            acknowledged=bool(d.get("acknowledged", False)),
            acked_by=str(d.get("acked_by", "")),
            silenced_by=tuple(d.get("silenced_by", ())),
            inhibited_by=tuple(d.get("inhibited_by", ())),
            flapping=bool(d.get("flapping", False)),
            group_key=str(d.get("group_key", "")),
            caused_by=tuple(str(x) for x in d.get("caused_by", ())),
            also_affected=tuple(str(x) for x in d.get("also_affected", ())),
        )

    def to_webhook_dict(self) -> dict[str, Any]:
        """One entry of an Alertmanager v4 webhook ``alerts`` list.

        The summary carries "also affected: …" when this alert is the cause of others, so
        every channel (all render the summary) shows the consequences inside the page.
        """
        summary = self.summary
        if self.also_affected and self.state is not AlertState.RESOLVED:
            summary = f"{summary}; also affected: {', '.join(self.also_affected)}"
        annotations = {"summary": summary}
        if self.also_affected:
            annotations["also_affected"] = "; ".join(self.also_affected)
        if self.value is not None:
            annotations["value"] = format_value(self.alertname, self.labels, self.value)
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": annotations,
            "startsAt": iso_time(self.fired_at if self.fired_at is not None else self.started_at),
            "endsAt": iso_time(self.resolved_at if self.state is AlertState.RESOLVED else None),
            "fingerprint": self.fingerprint,
        }


class AlertRecord:
    """Mutable state of one alert instance, owned by the engine."""

    __slots__ = (
        "ack",
        "alertname",
        "cause_cleared_at",
        "cause_fired",
        "caused_by",
        "changes",
        "external_until",
        "fingerprint",
        "fired_at",
        "flap_notified",
        "flapping",
        "group_key",
        "inhibited_by",
        "inputs",
        "labels",
        "last_breach_at",
        "resolved_at",
        "samples",
        "severity",
        "silenced_by",
        "started_at",
        "state",
        "summary",
        "transitions",
        "value",
        "value_at_clear",
    )

    def __init__(
        self, fp: str, alertname: str, labels: Mapping[str, str], severity: Severity, window: int
    ) -> None:
        self.fingerprint = fp
        self.alertname = alertname
        self.labels: dict[str, str] = dict(labels)
        self.severity = severity
        self.state = AlertState.INACTIVE
        self.summary = ""
        self.value: float | None = None
        self.samples: deque[bool] = deque(maxlen=window)
        self.started_at: float | None = None
        self.fired_at: float | None = None
        self.resolved_at: float | None = None
        self.last_breach_at: float | None = None
        self.transitions: deque[float] = deque()  # times of moves into firing/resolved
        self.flapping = False
        self.flap_notified = False
        self.ack: Ack | None = None
        self.silenced_by: tuple[str, ...] = ()
        self.inhibited_by: tuple[str, ...] = ()
        self.external_until: float | None = None
        self.group_key = ""
        # Causal inhibition: the causes' descriptions; whether one of them fired (then a
        # page covered this alert); when they all resolved, and this alert's value then.
        self.caused_by: tuple[str, ...] = ()
        self.cause_fired = False
        self.cause_cleared_at: float | None = None
        self.value_at_clear: float | None = None
        # For `wsgate alerts explain`: recent inputs (time, value, breaching, clear) and
        # state changes (time, old, new).
        self.inputs: deque[tuple[float, float | None, bool, bool]] = deque(maxlen=INPUT_MEMORY)
        self.changes: deque[tuple[float, str, str]] = deque(maxlen=CHANGE_MEMORY)

    def resize(self, window: int) -> None:
        if self.samples.maxlen != window:
            self.samples = deque(self.samples, maxlen=window)

    def move(self, new: AlertState, now: float) -> Transition:
        """The one place an alert's state changes."""
        old = self.state
        self.state = new
        self.changes.append((now, old.value, new.value))
        if new is AlertState.PENDING:
            self.started_at = now
        elif new is AlertState.FIRING:
            if old is not AlertState.PENDING:
                self.started_at = now
            self.fired_at = now
            self.resolved_at = None
            self.transitions.append(now)
        elif new is AlertState.RESOLVED:
            self.resolved_at = now
            self.samples.clear()
            self.ack = None  # an ack covers one firing episode only
            self.transitions.append(now)
        log.debug("alert %s %s: %s -> %s", self.alertname, self.fingerprint, old.value, new.value)
        return Transition(
            self.fingerprint, old, new, self.alertname, self.labels, self.summary, self.value, now
        )

    def observe(
        self,
        breaching: bool,
        clear: bool,
        now: float,
        pending_samples: int,
        keep_firing_for: float,
    ) -> Transition | None:
        """Feed one sample; returns the transition it caused, if any."""
        self.samples.append(breaching)
        self.inputs.append((now, self.value, breaching, clear))
        if breaching:
            self.last_breach_at = now
        state = self.state
        if state is AlertState.FIRING:
            if breaching or not clear:
                return None  # still bad, or between thresholds: hold
            last = self.last_breach_at
            if keep_firing_for > 0 and last is not None and now - last < keep_firing_for:
                return None
            return self.move(AlertState.RESOLVED, now)
        enough = sum(self.samples) >= pending_samples
        if state is AlertState.PENDING:
            if enough:
                return self.move(AlertState.FIRING, now)
            if clear and not any(self.samples):
                return self.move(AlertState.INACTIVE, now)
            return None
        if breaching:  # inactive or resolved
            return self.move(AlertState.FIRING if enough else AlertState.PENDING, now)
        return None

    def view(self) -> AlertView:
        ack = self.ack
        return AlertView(
            fingerprint=self.fingerprint,
            alertname=self.alertname,
            state=self.state,
            severity=self.severity,
            labels=self.labels,
            summary=self.summary,
            value=self.value,
            started_at=self.started_at,
            fired_at=self.fired_at,
            resolved_at=self.resolved_at,
            acknowledged=ack is not None,
            acked_by=ack.by if ack is not None else "",
            silenced_by=self.silenced_by,
            inhibited_by=self.inhibited_by,
            flapping=self.flapping,
            group_key=self.group_key,
            caused_by=self.caused_by if self.inhibited_by else (),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "labels": dict(self.labels),
            "severity": self.severity.value,
            "state": self.state.value,
            "summary": self.summary,
            "value": self.value,
            "samples": list(self.samples),
            "window": self.samples.maxlen,
            "started_at": self.started_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "last_breach_at": self.last_breach_at,
            "transitions": list(self.transitions),
            "flapping": self.flapping,
            "flap_notified": self.flap_notified,
            "external_until": self.external_until,
            "group_key": self.group_key,
            "caused_by": list(self.caused_by),
            "inhibited_by": list(self.inhibited_by),
            "cause_fired": self.cause_fired,
            "cause_cleared_at": self.cause_cleared_at,
            "value_at_clear": self.value_at_clear,
            "inputs": [list(x) for x in self.inputs],
            "changes": [list(x) for x in self.changes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertRecord:
        rec = cls(
            str(d["fingerprint"]),
            str(d["alertname"]),
            {str(k): str(v) for k, v in d["labels"].items()},
            Severity(d["severity"]),
            int(d.get("window") or 1),
        )
        rec.state = AlertState(d["state"])
        rec.summary = str(d.get("summary", ""))
        rec.value = d.get("value")
        rec.samples.extend(bool(x) for x in d.get("samples", ()))
        rec.started_at = d.get("started_at")
        rec.fired_at = d.get("fired_at")
        rec.resolved_at = d.get("resolved_at")
        rec.last_breach_at = d.get("last_breach_at")
        rec.transitions.extend(float(t) for t in d.get("transitions", ()))
        rec.flapping = bool(d.get("flapping", False))
        rec.flap_notified = bool(d.get("flap_notified", False))
        rec.external_until = d.get("external_until")
        rec.group_key = str(d.get("group_key", ""))
        rec.caused_by = tuple(str(x) for x in d.get("caused_by", ()))
        rec.inhibited_by = tuple(str(x) for x in d.get("inhibited_by", ()))
        rec.cause_fired = bool(d.get("cause_fired", False))
        rec.cause_cleared_at = d.get("cause_cleared_at")
        rec.value_at_clear = d.get("value_at_clear")
        rec.inputs.extend((float(t), v, bool(b), bool(c)) for t, v, b, c in d.get("inputs", ()))
        rec.changes.extend((float(t), str(o), str(n)) for t, o, n in d.get("changes", ()))
        return rec

    def __repr__(self) -> str:
        flags = "".join(
            f" {name}"
            for name, on in (
                ("acked", self.ack is not None),
                ("silenced", bool(self.silenced_by)),
                ("inhibited", bool(self.inhibited_by)),
                ("flapping", self.flapping),
            )
            if on
        )
        return (
            f"<AlertRecord {self.alertname} {self.fingerprint} {self.state.value} "
            f"value={self.value}{flags}>"
        )
