"""What an operator asks of the alert engine: short fingerprints, checked silences, and
why an alert is in its state (``wsgate alerts explain``). Pure functions over the engine's
records, so the engine stays the one owner of state.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from wsgate.core.alerts.causes import TRAILING_COUNT_TYPES, why
from wsgate.core.alerts.routing import GroupState
from wsgate.core.alerts.rules import ALERT_TYPES, LABEL_NAMES, RuleSpec
from wsgate.core.alerts.silences import Matcher
from wsgate.core.alerts.state import AlertRecord, AlertState
from wsgate.core.alerts.units import format_value
from wsgate.errors import AlertError

__all__ = [
    "cause_name",
    "check_matchers",
    "describe",
    "effect",
    "explain_record",
    "resolve_prefix",
    "where",
]

_HEX = re.compile(r"[0-9a-f]{1,16}")
_LIVE = (AlertState.PENDING, AlertState.FIRING)


def where(labels: Mapping[str, str]) -> str:
    """The identifying part of an alert's labels: ``bfx-c1`` or ``route=bfx issue=...``."""
    if "connection" in labels:
        return labels["connection"]
    skip = ("alertname", "severity", "node", "type")
    return " ".join(f"{k}={v}" for k, v in labels.items() if k not in skip)


def effect(rec: AlertRecord) -> str:
    """One "also affected" entry: name, where, and the value with its unit."""
    value = format_value(rec.alertname, rec.labels, rec.value)
    return f"{rec.alertname} {where(rec.labels)} ({value})".replace(" ()", "")


def describe(rec: AlertRecord) -> str:
    where = " ".join(
        f"{k}={v}" for k, v in rec.labels.items() if k not in ("alertname", "severity", "node")
    )
    return f"{rec.fingerprint} {rec.alertname} {rec.state.value}{' ' + where if where else ''}"


def cause_name(
    fp: str, records: Mapping[str, AlertRecord], suspects: Mapping[str, Mapping[str, str]]
) -> str:
    """ "connection_failure bfx-c1 (firing)", or "(suspected)" for a cause not yet an alert."""
    rec = records.get(fp)
    if rec is None:
        labels = suspects.get(fp, {})
        return f"{labels.get('alertname', '?')} {where(labels)} (suspected)".replace("  ", " ")
    return f"{rec.alertname} {where(rec.labels)} ({rec.state.value})".replace("  ", " ")


def resolve_prefix(
    records: Mapping[str, AlertRecord],
    prefix: str,
    states: tuple[AlertState, ...] | None = None,
) -> str:
    """The one fingerprint starting with ``prefix`` (amtool-style short ids).

    Raises :class:`AlertError` when nothing matches, or when several alerts do: then the
    error lists them (``candidates``) so the operator can pick more digits.
    """
    p = prefix.strip().lower()
    if not _HEX.fullmatch(p):
        raise AlertError(f"a fingerprint is 1 to 16 hex digits, got {prefix!r}")
    hits = [
        rec
        for fp, rec in records.items()
        if fp.startswith(p) and (states is None or rec.state in states)
    ]
    if len(hits) == 1:
        return hits[0].fingerprint
    what = "pending or firing alert" if states else "alert"
    if not hits:
        raise AlertError(f"no {what} with fingerprint {prefix!r}; see `wsgate alerts`")
    hits.sort(key=lambda r: r.fingerprint)
    candidates = tuple(describe(r) for r in hits)
    raise AlertError(
        f"fingerprint prefix {prefix!r} matches {len(hits)} alerts; give more digits: "
        + "; ".join(candidates),
        candidates=candidates,
    )


def check_matchers(
    matchers: Sequence[Matcher | str],
    rules: Mapping[str, RuleSpec],
    records: Mapping[str, AlertRecord],
) -> tuple[Matcher, ...]:
    """Parse matchers; refuse a label name no alert carries and an unknown alert type.

    Known label names: every one a rule can produce (:data:`LABEL_NAMES`), the ones rules
    are configured to add, and any a current alert carries (external alerts).
    """
    parsed = tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers)
    names = set(LABEL_NAMES)
    for spec in rules.values():
        names.update(k for k, _ in spec.labels)
    for rec in records.values():
        names.update(rec.labels)
    label_names = frozenset(names)
    alert_names = {*ALERT_TYPES, *(r.alertname for r in records.values())}
    for m in parsed:
        if m.name not in label_names:
            close = difflib.get_close_matches(m.name, sorted(label_names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise AlertError(
                f"no alert carries a label {m.name!r}; {hint}"
                f"label names: {', '.join(sorted(label_names))}"
            )
        if m.name == "alertname" and m.op == "=" and m.value not in alert_names:
            close = difflib.get_close_matches(m.value, sorted(alert_names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise AlertError(f"no alert type {m.value!r}; {hint}types: {', '.join(ALERT_TYPES)}")
    return parsed


def explain_record(
    rec: AlertRecord,
    spec: RuleSpec | None,
    records: Mapping[str, AlertRecord],
    suspects: Mapping[str, Mapping[str, str]],
    group: GroupState | None,
    cause_hold: float,
    now: float,
) -> dict[str, Any]:
    """Why an alert is in its state: the rule, its recent inputs, its transitions,
    what inhibits it and what it inhibits (``wsgate alerts explain FP``)."""
    fp = rec.fingerprint
    labels = rec.labels

    def fmt(v: float | None) -> str:
        return format_value(rec.alertname, labels, v)

    rule: dict[str, Any] = {"external": rec.external_until is not None}
    if spec is not None and rec.external_until is None:
        worse = "≥" if spec.fire >= spec.clear else "≤"
        better = "≤" if spec.fire >= spec.clear else "≥"
        text = (
            f"fires at {fmt(spec.fire)} ({worse}; {spec.pending_samples} of the last "
            f"{spec.window} samples), clears at {fmt(spec.clear)} ({better})"
        )
        if spec.keep_firing_for:
            text += f", keeps firing {spec.keep_firing_for:g}s after the last breach"
        rule.update(spec.to_dict(), text=text)

    def other(o_fp: str, *, as_cause: bool) -> dict[str, Any]:
        o = records.get(o_fp)
        o_labels = o.labels if o is not None else suspects.get(o_fp, {})
        src, dst = (o_labels, labels) if as_cause else (labels, o_labels)
        return {
            "fingerprint": o_fp,
            "alertname": o_labels.get("alertname", "?"),
            "state": o.state.value if o is not None else "suspected",
            "summary": o.summary if o is not None else "",
            "why": why(src, dst),
        }

    inhibits = [
        other(o_fp, as_cause=False)
        for o_fp, o in records.items()
        if fp in o.inhibited_by and o.state in _LIVE
    ]
    held = None
    if rec.inhibited_by and rec.cause_cleared_at is not None:
        held = {
            "causes_resolved_at": rec.cause_cleared_at,
            "held_until": rec.cause_cleared_at + cause_hold,
            "pages_if": "it still breaches after that"
            + (" and its count grew" if rec.alertname in TRAILING_COUNT_TYPES else ""),
        }
    return {
        "fingerprint": fp,
        "alertname": rec.alertname,
        "state": rec.state.value,
        "severity": rec.severity.value,
        "labels": dict(labels),
        "summary": rec.summary,
        "value": rec.value,
        "value_text": fmt(rec.value),
        "rule": rule,
        "inputs": [
            {"at": t, "value": v, "value_text": fmt(v), "breaching": b, "clear": c}
            for t, v, b, c in rec.inputs
        ],
        "transitions": [{"at": t, "from": o, "to": n} for t, o, n in rec.changes],
        "inhibited_by": [other(c, as_cause=True) for c in rec.inhibited_by],
        "held": held,
        "inhibits": inhibits,
        "silenced_by": list(rec.silenced_by),
        "acknowledged_by": rec.ack.by if rec.ack is not None else None,
        "flapping": rec.flapping,
        "notified": (
            {ch: e.sent_at for ch, e in group.nflog.items() if fp in e.firing}
            if group is not None
            else {}
        ),
        "now": now,
    }
