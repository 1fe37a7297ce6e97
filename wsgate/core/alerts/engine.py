"""The alert engine facade: snapshot in, transitions and due notifications out.

Pure: the runtime passes ``now`` and the snapshot, persists what comes back (``export_state``
after each call, silences and acks on change) and hands notifications to the channels.
Nothing here awaits, sleeps or reads a clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wsgate.core.alerts.causes import DEFAULT_INHIBIT_RULES, SOURCE_TYPES, persists
from wsgate.core.alerts.inputs import AlertInputs
from wsgate.core.alerts.operator import (
    cause_name,
    check_matchers,
    effect,
    explain_record,
    resolve_prefix,
)
from wsgate.core.alerts.routing import (
    ChannelRoute,
    GroupState,
    GroupTimers,
    Notification,
    channel_accepts,
    flush_group,
    group_key_for,
)
from wsgate.core.alerts.rules import (
    DEFAULT_RULES,
    RuleSpec,
    iter_observations,
)
from wsgate.core.alerts.silences import (
    Ack,
    InhibitRule,
    Matcher,
    Silence,
    inhibitions,
    make_silence,
)
from wsgate.core.alerts.state import AlertRecord, AlertState, AlertView, Transition, fingerprint
from wsgate.core.types import Severity
from wsgate.errors import AlertError

__all__ = ["AlertEngine", "EngineStatistics", "EvalResult"]

log = logging.getLogger("wsgate.alerts")

_STATE_VERSION = 1
_LIVE = (AlertState.PENDING, AlertState.FIRING)
_FP_CACHE_MAX = 200_000


@dataclass(frozen=True, slots=True)
class EvalResult:
    """What one evaluation changed and what must be sent now."""

    transitions: tuple[Transition, ...]
    notifications: tuple[Notification, ...]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    evaluations: int
    observations: int  # in the last evaluation
    pending: int
    firing: int
    resolved: int  # resolved alerts still retained (for flap detection / resolved notices)
    acknowledged: int
    silenced: int
    inhibited: int
    flapping: int
    groups: int
    silences: int
    notifications_total: int
    last_evaluation_at: float | None


class AlertEngine:
    """Owns every alert's state machine, silences, acks, groups and their timers.

    ``rules`` is merged over :data:`DEFAULT_RULES` (disable a type with ``enabled=False``).
    """

    def __init__(
        self,
        rules: Mapping[str, RuleSpec],
        channels: Sequence[ChannelRoute],
        *,
        group_wait: float = 30.0,
        group_interval: float = 300.0,
        repeat_interval: float = 14400.0,
        send_resolved: bool = True,
        flap_threshold: int = 4,
        flap_window: float = 600.0,
        group_by: Sequence[str] = ("alertname", "route"),
        inhibit_rules: Sequence[InhibitRule] = DEFAULT_INHIBIT_RULES,
        external_url: str = "",
        node_id: str = "",
        cause_hold: float = 60.0,
    ) -> None:
        self._records: dict[str, AlertRecord] = {}
        self._groups: dict[str, GroupState] = {}
        self._silences: dict[str, Silence] = {}
        self._fp_cache: dict[tuple[tuple[str, str], ...], str] = {}
        self._buffered: list[Transition] = []  # from tick()/raise_external(), for evaluate()
        self._suspects: dict[str, Mapping[str, str]] = {}  # not-yet-firing causes, by fp
        self._effects: dict[str, tuple[str, ...]] = {}  # cause fp -> its consequences
        self._cause_hold = float(cause_hold)
        self._seq = 0
        self._silence_seq = 0
        self._evaluations = 0
        self._observations = 0
        self._notifications_total = 0
        self._last_eval: float | None = None
        self._node_id = node_id
        self._external_url = external_url
        self._group_by = tuple(group_by)
        self._inhibit_rules = tuple(inhibit_rules)
        self._rules: dict[str, RuleSpec] = {}
        self._channels: tuple[ChannelRoute, ...] = ()
        self._timers = GroupTimers()
        self._flap_threshold = flap_threshold
        self._flap_window = flap_window
        self.reconfigure(
            rules,
            channels,
            group_wait=group_wait,
            group_interval=group_interval,
            repeat_interval=repeat_interval,
            send_resolved=send_resolved,
            flap_threshold=flap_threshold,
            flap_window=flap_window,
        )

    # ------------------------------------------------------------------ configuration

    def reconfigure(
        self,
        rules: Mapping[str, RuleSpec],
        channels: Sequence[ChannelRoute],
        *,
        group_wait: float | None = None,
        group_interval: float | None = None,
        repeat_interval: float | None = None,
        send_resolved: bool | None = None,
        flap_threshold: int | None = None,
        flap_window: float | None = None,
        cause_hold: float | None = None,
    ) -> None:
        """Apply new rules/channels/timers keeping every alert whose fingerprint is unchanged.

        Alerts of disabled or relabelled rules resolve at the next evaluation; group timers
        keep running, so a reload does not re-notify (Alertmanager #627).
        """
        t = self._timers
        self._timers = GroupTimers(
            group_wait=t.group_wait if group_wait is None else float(group_wait),
            group_interval=t.group_interval if group_interval is None else float(group_interval),
            repeat_interval=(
                t.repeat_interval if repeat_interval is None else float(repeat_interval)
            ),
            send_resolved=t.send_resolved if send_resolved is None else send_resolved,
        )
        if flap_threshold is not None:
            self._flap_threshold = flap_threshold
        if flap_window is not None:
            self._flap_window = float(flap_window)
        if cause_hold is not None:
            self._cause_hold = float(cause_hold)
        self._rules = {**DEFAULT_RULES, **rules}
        self._channels = tuple(channels)
        for rec in self._records.values():
            spec = self._rules.get(rec.alertname)
            if spec is not None:
                rec.resize(spec.window)
        names = {c.name for c in self._channels}
        for group in self._groups.values():
            for gone in [ch for ch in group.nflog if ch not in names]:
                del group.nflog[gone]

    @property
    def rules(self) -> Mapping[str, RuleSpec]:
        return dict(self._rules)

    @property
    def channels(self) -> tuple[ChannelRoute, ...]:
        return self._channels

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, inputs: AlertInputs) -> EvalResult:
        """Run every enabled rule over the snapshot, step each alert, flush due groups."""
        now = inputs.now
        self._node_id = inputs.node_id
        self._evaluations += 1
        self._last_eval = now
        transitions = self._buffered
        self._buffered = []
        records = self._records
        rules = self._rules
        fp_cache = self._fp_cache
        if len(fp_cache) > _FP_CACHE_MAX:
            fp_cache.clear()
        seen: set[str] = set()
        suspects: dict[str, Mapping[str, str]] = {}
        count = 0
        for alertname, labels, value, breaching, ok, summary, severity in iter_observations(
            inputs, rules
        ):
            count += 1
            # Rules build labels in a fixed order, so the item tuple is a cheap cache key.
            key = tuple(labels.items())
            fp = fp_cache.get(key)
            if fp is None:
                fp = fp_cache[key] = fingerprint(labels)
            rec = records.get(fp)
            if not ok and not breaching and value is not None and alertname in SOURCE_TYPES:
                suspects[fp] = labels  # a cause on its way: hold its consequences
            if rec is None:
                if not breaching:
                    continue  # nothing known and nothing wrong: the common case, kept cheap
                spec = rules[alertname]
                rec = AlertRecord(fp, alertname, labels, severity, spec.window)
                records[fp] = rec
            else:
                spec = rules[alertname]
            seen.add(fp)
            rec.value = value
            if summary:
                rec.summary = summary
            moved = rec.observe(breaching, ok, now, spec.pending_samples, spec.keep_firing_for)
            if moved is not None:
                self._after_move(rec, moved, now, transitions)
            if rec.state is AlertState.INACTIVE:
                del records[fp]
        self._observations = count
        self._suspects = suspects
        for fp, rec in list(records.items()):
            if fp in seen or rec.external_until is not None:
                continue
            # The watched thing is gone (connection removed, rule disabled): resolve or forget.
            if rec.state is AlertState.FIRING:
                rec.summary = f"{rec.summary} (no longer observed)"
                self._after_move(rec, rec.move(AlertState.RESOLVED, now), now, transitions)
            elif rec.state is AlertState.PENDING:
                del records[fp]
        notifications = self._housekeeping(now, transitions)
        return EvalResult(tuple(transitions), tuple(notifications))

    def tick(self, now: float) -> list[Notification]:
        """Run group timers (and silence/external expiry) between evaluations."""
        return self._housekeeping(now, self._buffered)

    def _housekeeping(self, now: float, transitions: list[Transition]) -> list[Notification]:
        for rec in self._records.values():
            until = rec.external_until
            if until is not None and now >= until and rec.state is AlertState.FIRING:
                self._after_move(rec, rec.move(AlertState.RESOLVED, now), now, transitions)
        self._end_flapping(now)
        self._refresh_flags(now)
        out = self._flap_notices(now)
        out.extend(self._flush_due(now))
        self._collect(now)
        self._notifications_total += len(out)
        return out

    def _after_move(
        self, rec: AlertRecord, moved: Transition, now: float, out: list[Transition]
    ) -> None:
        out.append(moved)
        if moved.new is AlertState.FIRING:
            self._join_group(rec, now)
        if moved.new in (AlertState.FIRING, AlertState.RESOLVED):
            horizon = now - self._flap_window
            while rec.transitions and rec.transitions[0] < horizon:
                rec.transitions.popleft()
            if not rec.flapping and len(rec.transitions) >= self._flap_threshold:
                rec.flapping = True
                rec.flap_notified = False
                log.info(
                    "alert %s %s is flapping (%d changes in %.0fs); notices held",
                    rec.alertname,
                    rec.fingerprint,
                    len(rec.transitions),
                    self._flap_window,
                )

    def _end_flapping(self, now: float) -> None:
        for rec in self._records.values():
            if rec.flapping and (
                not rec.transitions or now - rec.transitions[-1] >= self._flap_window
            ):
                rec.flapping = False
                rec.flap_notified = False
                log.info("alert %s %s is stable again", rec.alertname, rec.fingerprint)
                if rec.state in (AlertState.FIRING, AlertState.RESOLVED):
                    self._join_group(rec, now)  # its current state is notified normally again

    def _join_group(self, rec: AlertRecord, now: float) -> None:
        key, labels = group_key_for(rec.labels, self._group_by)
        rec.group_key = key
        group = self._groups.get(key)
        if group is None:
            group = GroupState(key, labels, now, now + self._timers.group_wait)
            self._groups[key] = group
        group.members.add(rec.fingerprint)

    def _refresh_flags(self, now: float) -> None:
        """Silences, and causal inhibition (see :mod:`wsgate.core.alerts.causes`).

        Sources are live alerts (pending or firing) and the last evaluation's suspects. A
        consequence stays muted while a cause is live; once every cause resolved it stays
        muted for ``cause_hold`` seconds, and after that only while it does not persist
        (no breach since the hold ended; for trailing counters, no growth). A consequence
        whose causes never fired (only pending or suspected) is released at once: no page
        covered it.
        """
        active = [s for s in self._silences.values() if s.is_active(now)]
        sources: list[tuple[str, Mapping[str, str]]] = list(self._suspects.items())
        candidates: list[tuple[str, Mapping[str, str]]] = []
        records = self._records
        for fp, rec in records.items():
            rec.silenced_by = tuple(s.id for s in active if s.matches(rec.labels))
            candidates.append((fp, rec.labels))
            # A consequence still held after its own cause resolved explains nothing: it is
            # a leftover (a trailing count, a hysteresis band), not a live cause.
            if rec.state in _LIVE and rec.cause_cleared_at is None:
                sources.append((fp, rec.labels))
        inhibited = inhibitions(sources, candidates, self._inhibit_rules) if sources else {}
        effects: dict[str, list[str]] = {}
        for fp, rec in records.items():
            causes = inhibited.get(fp, ())
            if rec.state not in _LIVE:
                rec.inhibited_by, rec.caused_by = (), ()
                rec.cause_fired, rec.cause_cleared_at = False, None
                continue
            if causes:
                rec.inhibited_by = causes
                rec.caused_by = tuple(cause_name(c, records, self._suspects) for c in causes)
                rec.cause_cleared_at = None
                if any(
                    (src := records.get(c)) is not None and src.state is AlertState.FIRING
                    for c in causes
                ):
                    rec.cause_fired = True
                for c in causes:
                    effects.setdefault(c, []).append(effect(rec))
            elif rec.inhibited_by and rec.cause_fired and not persists(rec, now, self._cause_hold):
                continue  # held: its cause's page covered it, and it has not outlived it
            else:
                rec.inhibited_by, rec.caused_by = (), ()
                rec.cause_fired, rec.cause_cleared_at = False, None
        self._effects = {fp: tuple(sorted(set(names))) for fp, names in effects.items()}

    def _view(self, rec: AlertRecord) -> AlertView:
        view = rec.view()
        effects = self._effects.get(rec.fingerprint)
        return dataclasses.replace(view, also_affected=effects) if effects else view

    def _next_id(self, channel: str, group_key: str) -> str:
        self._seq += 1
        return f"{channel}/{group_key}/{self._seq}"

    def _flap_notices(self, now: float) -> list[Notification]:
        out: list[Notification] = []
        for rec in self._records.values():
            if not rec.flapping or rec.flap_notified:
                continue
            rec.flap_notified = True
            view = self._view(rec)
            if view.suppressed:
                continue
            key, labels = group_key_for(rec.labels, self._group_by)
            for channel in self._channels:
                if channel_accepts(channel, view):
                    out.append(
                        Notification(
                            id=self._next_id(channel.name, key),
                            channel=channel.name,
                            group_key=key,
                            status="firing",
                            alerts=(view,),
                            kind="flapping",
                            group_labels=tuple(sorted(labels.items())),
                            reason="flapping",
                            created_at=now,
                            external_url=self._external_url,
                        )
                    )
        return out

    def _flush_due(self, now: float) -> list[Notification]:
        out: list[Notification] = []
        records = self._records
        for key, group in list(self._groups.items()):
            if now < group.next_flush_at:
                continue
            # Late ticks push the cadence back rather than catching up, so two notifications
            # of a group are never closer than group_interval.
            group.next_flush_at = now + self._timers.group_interval
            group.members.intersection_update(records)
            if not group.members:
                del self._groups[key]
                continue
            views = {fp: self._view(records[fp]) for fp in group.members}
            out.extend(
                flush_group(
                    group,
                    views,
                    self._channels,
                    self._timers,
                    now,
                    self._next_id,
                    self._external_url,
                )
            )
            for fp, view in views.items():
                if view.state is AlertState.RESOLVED and not view.flapping:
                    group.members.discard(fp)
        return out

    def _collect(self, now: float) -> None:
        """Forget resolved alerts once notified and older than the flap window."""
        for fp, rec in list(self._records.items()):
            if rec.state is not AlertState.RESOLVED or rec.flapping:
                continue
            group = self._groups.get(rec.group_key)
            if group is not None and fp in group.members:
                continue
            if rec.resolved_at is None or now - rec.resolved_at >= self._flap_window:
                del self._records[fp]

    # ------------------------------------------------------------------ operator actions

    def resolve_fingerprint(self, prefix: str, *, live_only: bool = False) -> str:
        """The one fingerprint starting with ``prefix`` (amtool-style short ids).

        Raises :class:`AlertError` when nothing matches, or when several alerts do: then the
        error lists them (``candidates``) so the operator can pick more digits.
        """
        return resolve_prefix(self._records, prefix, _LIVE if live_only else None)

    def ack(self, fingerprint: str, by: str, comment: str, now: float) -> Ack:
        """Acknowledge a pending or firing alert (any unique fingerprint prefix): repeats stop
        until it resolves, and an ack before the first notification prevents it."""
        fp = self.resolve_fingerprint(fingerprint, live_only=True)
        rec = self._records[fp]
        if not by.strip():
            raise AlertError("an acknowledgement needs a name in 'by'")
        rec.ack = Ack(fp, by, comment, now)
        log.info("alert %s %s acknowledged by %s", rec.alertname, fp, by)
        return rec.ack

    def check_matchers(self, matchers: Sequence[Matcher | str]) -> tuple[Matcher, ...]:
        """Parse matchers and refuse label names no alert carries (a typo silences nothing)."""
        return check_matchers(matchers, self._rules, self._records)

    def unack(self, fingerprint: str) -> bool:
        rec = self._records.get(fingerprint)
        if rec is None or rec.ack is None:
            return False
        rec.ack = None
        return True

    def matching(self, matchers: Sequence[Matcher], now: float) -> list[AlertView]:
        """The pending and firing alerts every matcher matches right now."""
        del now  # the answer depends on the alerts only; kept for a uniform call shape
        return [v for v in self.active() if all(m.matches(v.labels) for m in matchers)]

    def acks(self) -> list[Ack]:
        return [r.ack for r in self._records.values() if r.ack is not None]

    def silence(
        self,
        matchers: Sequence[Matcher | str],
        *,
        created_by: str,
        comment: str,
        now: float,
        starts_at: float | None = None,
        ends_at: float | None = None,
        duration: float | None = None,
    ) -> Silence:
        """Create a silence from ``starts_at`` (default now) to ``ends_at`` or for ``duration``."""
        start = now if starts_at is None else starts_at
        matchers = self.check_matchers(matchers)
        if ends_at is None:
            if duration is None:
                raise AlertError("a silence needs ends_at or a duration")
            ends_at = start + duration
        self._silence_seq += 1
        digest = hashlib.sha256(
            f"{self._silence_seq}|{now!r}|{created_by}|{matchers!r}".encode()
        ).hexdigest()[:12]
        sil = make_silence(
            f"{self._silence_seq:x}-{digest}",
            matchers,
            starts_at=start,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            now=now,
        )
        self._silences[sil.id] = sil
        self._refresh_flags(now)
        log.info("silence %s created by %s: %s", sil.id, created_by, comment)
        return sil

    def add_silence(self, silence: Silence) -> None:
        """Insert an existing silence (e.g. loaded from the store)."""
        self._silences[silence.id] = silence

    def unsilence(self, silence_id: str, now: float | None = None) -> Silence:
        """Remove a silence; returns it, expired at ``now`` if given (for the store)."""
        sil = self._silences.pop(silence_id, None)
        if sil is None:
            raise AlertError(f"no silence with id {silence_id!r}")
        if now is not None:
            self._refresh_flags(now)
            if now < sil.ends_at:
                sil = Silence(
                    sil.id,
                    sil.matchers,
                    min(sil.starts_at, now),
                    now,
                    sil.created_by,
                    sil.comment,
                    now,
                )
        return sil

    def expire_silences(self, now: float) -> list[Silence]:
        """Drop silences whose end has passed; returns them so the store can delete them."""
        gone = [s for s in self._silences.values() if s.ends_at <= now]
        for sil in gone:
            del self._silences[sil.id]
        if gone:
            self._refresh_flags(now)
        return gone

    def silences(self) -> list[Silence]:
        return sorted(self._silences.values(), key=lambda s: (s.starts_at, s.id))

    def raise_external(
        self,
        alertname: str,
        labels: Mapping[str, str],
        severity: Severity,
        summary: str,
        now: float,
        *,
        ttl: float = 3600.0,
    ) -> AlertView:
        """Fire a one-off alert the runtime detected (e.g. a channel disabled after HTTP 404).

        It fires at once (no pending window) and resolves after ``ttl`` unless raised again.
        """
        full = {"alertname": alertname, "severity": severity.value, **labels}
        if self._node_id:
            full.setdefault("node", self._node_id)
        fp = fingerprint(full)
        rec = self._records.get(fp)
        if rec is None:
            rec = AlertRecord(fp, alertname, full, severity, 1)
            self._records[fp] = rec
        rec.summary = summary
        rec.value = None
        rec.external_until = now + ttl
        rec.last_breach_at = now
        if rec.state is not AlertState.FIRING:
            self._after_move(rec, rec.move(AlertState.FIRING, now), now, self._buffered)
        self._refresh_flags(now)
        return self._view(rec)

    def explain(self, prefix: str, now: float) -> dict[str, Any]:
        """Why an alert is in its state: the rule, its recent inputs, its transitions,
        what inhibits it and what it inhibits (``wsgate alerts explain FP``)."""
        rec = self._records[self.resolve_fingerprint(prefix)]
        return explain_record(
            rec,
            self._rules.get(rec.alertname),
            self._records,
            self._suspects,
            self._groups.get(rec.group_key),
            self._cause_hold,
            now,
        )

    # ------------------------------------------------------------------ queries

    def active(self, *, include_resolved: bool = False) -> list[AlertView]:
        """Pending and firing alerts (and retained resolved ones if asked), worst first."""
        order = {AlertState.FIRING: 0, AlertState.PENDING: 1, AlertState.RESOLVED: 2}
        views = [
            self._view(r)
            for r in self._records.values()
            if r.state in _LIVE or (include_resolved and r.state is AlertState.RESOLVED)
        ]
        views.sort(key=lambda v: (order[v.state], -v.severity.rank, v.alertname, v.fingerprint))
        return views

    def get(self, fingerprint: str) -> AlertView | None:
        rec = self._records.get(fingerprint)
        return self._view(rec) if rec is not None else None

    def statistics(self) -> EngineStatistics:
        recs = self._records.values()
        return EngineStatistics(
            evaluations=self._evaluations,
            observations=self._observations,
            pending=sum(r.state is AlertState.PENDING for r in recs),
            firing=sum(r.state is AlertState.FIRING for r in recs),
            resolved=sum(r.state is AlertState.RESOLVED for r in recs),
            acknowledged=sum(r.ack is not None for r in recs),
            silenced=sum(bool(r.silenced_by) for r in recs if r.state in _LIVE),
            inhibited=sum(bool(r.inhibited_by) for r in recs if r.state in _LIVE),
            flapping=sum(r.flapping for r in recs),
            groups=len(self._groups),
            silences=len(self._silences),
            notifications_total=self._notifications_total,
            last_evaluation_at=self._last_eval,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<AlertEngine rules={sum(r.enabled for r in self._rules.values())} "
            f"channels={len(self._channels)} firing={s.firing} pending={s.pending} "
            f"groups={s.groups} silences={s.silences}>"
        )

    # ------------------------------------------------------------------ persistence

    def export_state(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as JSON-able data."""
        return {
            "version": _STATE_VERSION,
            "seq": self._seq,
            "silence_seq": self._silence_seq,
            "node_id": self._node_id,
            "records": [r.to_dict() for r in self._records.values()],
            "acks": [a.to_dict() for a in self.acks()],
            "silences": [s.to_dict() for s in self._silences.values()],
            "groups": [g.to_dict() for g in self._groups.values()],
        }

    def restore_state(self, state: Mapping[str, Any], now: float) -> None:
        """Replace the engine's state with an :meth:`export_state` document.

        Group timers and the notification log come back too, so firing alerts are not
        re-notified; flags (silences, inhibition) are recomputed at ``now`` before any flush.
        """
        version = state.get("version")
        if version != _STATE_VERSION:
            raise AlertError(f"cannot restore alert state version {version!r}")
        self._seq = int(state.get("seq", 0))
        self._silence_seq = int(state.get("silence_seq", 0))
        self._node_id = str(state.get("node_id", self._node_id))
        self._records = {}
        for d in state.get("records", ()):
            rec = AlertRecord.from_dict(d)
            spec = self._rules.get(rec.alertname)
            if spec is not None and rec.external_until is None:
                rec.resize(spec.window)
            self._records[rec.fingerprint] = rec
        for d in state.get("acks", ()):
            ack = Ack.from_dict(d)
            acked = self._records.get(ack.fingerprint)
            if acked is not None and acked.state in _LIVE:
                acked.ack = ack
        self._silences = {}
        for d in state.get("silences", ()):
            sil = Silence.from_dict(d)
            self._silences[sil.id] = sil
        self._groups = {}
        for d in state.get("groups", ()):
            group = GroupState.from_dict(d)
            self._groups[group.key] = group
        self._refresh_flags(now)
        log.info(
            "alert state restored: %d alerts, %d silences, %d groups",
            len(self._records),
            len(self._silences),
            len(self._groups),
        )
