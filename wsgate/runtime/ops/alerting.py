"""Alerts in the running daemon: the pure engine, the SQLite store and the outbox, wired up.

Every ``jobs.alert_check_interval`` the daemon's ``alerts`` job calls :meth:`Alerting.evaluate`:
live statistics become an :class:`~wsgate.core.alerts.AlertInputs` snapshot
(:mod:`wsgate.runtime.ops.alert_inputs`), the engine steps every alert, transitions go to the
history table and the event bus, notifications go to the outbox. A 1 s tick runs the group
timers in between, so ``group_wait`` is honoured to the second, not to the check interval.

Crash safety: a notification is committed to the outbox *before* the engine state that
records it as sent, so a crash between the two re-sends (same group, possibly the same id,
which receivers dedupe) rather than losing it. Acks and silences are written through at
once; on start the engine state, acks and silences are restored and the outbox replays
whatever a previous run left queued.

Rule parameters (``RuleSpec.params``: anomaly warm-up, loop-lag thresholds...) come from
``[alerts.rules.<type>.params]`` in the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pwd
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from wsgate.core.alerts import (
    Ack,
    AlertEngine,
    AlertView,
    ChannelRoute,
    Notification,
    RuleSpec,
    Silence,
    Transition,
    rule_spec_from,
)
from wsgate.core.alerts.units import format_value
from wsgate.core.types import Severity
from wsgate.errors import AlertError
from wsgate.runtime.ops.alert_inputs import AlertSource, AnomalySettings, InputBuilder
from wsgate.runtime.ops.claims import RETRY, ClaimSettler
from wsgate.runtime.ops.notifiers import DeliveryResult, Notifier, build_notifier
from wsgate.runtime.ops.outbox import Outbox
from wsgate.runtime.persistence.store import Store
from wsgate.runtime.system.faults import Faults, every

__all__ = [
    "Alerting",
    "AlertingStatistics",
    "alert_dict",
    "build_engine",
    "caller_name",
    "channel_routes",
    "rule_specs",
]

log = logging.getLogger("wsgate.alerts")

TICK = 1.0
DB_NAME = "wsgate.db"
CHANNEL_GONE_ALERT = "system_health"  # an external alert: labels check=notification_channel


def rule_specs(alerts_cfg: Any) -> dict[str, RuleSpec]:
    return {spec.type: spec for spec in (rule_spec_from(rule) for rule in alerts_cfg.rules)}


def channel_routes(alerts_cfg: Any) -> list[ChannelRoute]:
    return [
        ChannelRoute(
            name=ch.name,
            min_severity=ch.min_severity,
            matchers=tuple(ch.matchers),
            send_resolved=ch.send_resolved,
        )
        for ch in alerts_cfg.channels
        if ch.enabled
    ]


def _timers(alerts_cfg: Any) -> dict[str, Any]:
    return {
        "group_wait": alerts_cfg.group_wait,
        "group_interval": alerts_cfg.group_interval,
        "repeat_interval": alerts_cfg.repeat_interval,
        "send_resolved": alerts_cfg.send_resolved,
        "flap_threshold": alerts_cfg.flap_threshold,
        "flap_window": alerts_cfg.flap_window,
        "cause_hold": alerts_cfg.cause_hold,
    }


def build_engine(alerts_cfg: Any, node_id: str) -> AlertEngine:
    return AlertEngine(
        rule_specs(alerts_cfg),
        channel_routes(alerts_cfg),
        node_id=node_id,
        **_timers(alerts_cfg),
    )


def alert_dict(v: AlertView) -> dict[str, Any]:
    """One row of ``wsgate alerts --json``."""
    return {
        "fingerprint": v.fingerprint,
        "alertname": v.alertname,
        "labels": dict(v.labels),
        "severity": v.severity.value,
        "state": v.state.value,
        "started_at": v.started_at,
        "fired_at": v.fired_at,
        "value": v.value,
        "acknowledged": v.acknowledged,
        "acked_by": v.acked_by,
        "silenced": bool(v.silenced_by),
        "silenced_by": list(v.silenced_by),
        "inhibited": bool(v.inhibited_by),
        "flapping": v.flapping,
        "summary": v.summary,
        "value_text": format_value(v.alertname, v.labels, v.value),
    }


async def _join(task: asyncio.Task[Any], limit: float) -> None:
    """Wait up to ``limit`` for ``task`` to end (cancelled when it does not).

    ``asyncio.timeout``, not 3.11's ``wait_for`` (which can swallow a cancellation that
    races with the task's end); ``task``'s own cancellation is not ours and is absorbed,
    the caller's is re-raised so a shutdown never hangs here.
    """
    try:
        async with asyncio.timeout(limit):
            await task
    except TimeoutError:
        pass
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


def caller_name(uid: int, pid: int) -> str:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
    return f"{name} (uid {uid}, pid {pid})"


def notification_payload(n: Notification) -> dict[str, Any]:
    """The outbox/notifier payload: Alertmanager webhook v4 plus the stable id and kind."""
    payload = n.to_dict()
    payload["id"] = n.id
    payload["kind"] = n.kind
    return payload


@dataclasses.dataclass(frozen=True)
class AlertingStatistics:
    evaluations: int
    last_evaluation_seconds: float | None
    notifications_enqueued: int
    notifications_deduplicated: int
    transitions: int
    restored_alerts: int
    replayed_rows: int
    channels_disabled: tuple[str, ...]


class AlertingHost(AlertSource, Protocol):
    """The daemon as alerting sees it: the alert inputs' view plus what alerting uses.

    ``events`` (the bus), ``cluster`` (claims and shared acks) and ``faults`` are optional
    attributes, read when present.
    """

    @property
    def store(self) -> Store | None: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def demo(self) -> bool: ...


class Alerting:
    """Owned by the :class:`~wsgate.daemon.Daemon` as ``daemon.alerting``.

    Opens ``<state_dir>/wsgate.db`` itself when the host has no store yet.
    Call :meth:`start` inside the daemon's TaskGroup and :meth:`close` on shutdown.
    """

    def __init__(self, daemon: AlertingHost, *, clock: Callable[[], float] = time.time) -> None:
        self.daemon = daemon
        self.faults: Faults = getattr(daemon, "faults", None) or Faults()
        self._clock = clock
        store = daemon.store
        if store is None:
            store = Store(Path(daemon.config.daemon.state_dir) / DB_NAME)
        self.store: Store = store
        self._tg: asyncio.TaskGroup | None = None  # the owner's group, from start()
        cfg = daemon.config
        self.engine = build_engine(cfg.alerts, cfg.daemon.node_id)
        self.inputs = InputBuilder(
            AnomalySettings.from_rule(self.engine.rules.get("anomaly_detected")),
            perf_warmup=self.engine.rules["performance_degradation"].param("warmup"),
        )
        self._alerts_cfg = cfg.alerts
        self._notifiers: dict[str, Notifier] = {}
        self.outbox = self._new_outbox(cfg.alerts)
        self.claims = ClaimSettler(
            self.store, self.outbox, notification_payload, self._clock, self._spawn
        )
        self._outbox_stop = asyncio.Event()
        self._outbox_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._claims_task: asyncio.Task[None] | None = None
        self._disabled: dict[str, str] = {}
        self._evaluations = 0
        self._last_cost: float | None = None
        self._enqueued = 0
        self._deduped = 0
        self._transitions = 0
        self._restored = 0
        self._replayed = 0
        self._saved_acks: set[str] = set()
        self._saved_silences: set[str] = set()
        self._claiming: set[asyncio.Future[None]] = set()
        self._shared_acks: dict[str, dict[str, Any]] = {}  # from other nodes, by fingerprint

    def __repr__(self) -> str:
        return f"<Alerting {self.engine!r} {self.outbox!r}>"

    # ------------------------------------------------------------------ construction

    def _new_outbox(self, alerts_cfg: Any) -> Outbox:
        notifiers: dict[str, Notifier] = {}
        for ch in alerts_cfg.channels:
            if not ch.enabled:
                continue
            try:
                notifiers[ch.name] = build_notifier(ch, demo=bool(self.daemon.demo))
            except ValueError as exc:
                log.error("alert channel %s not started: %s", ch.name, exc)
        self._notifiers = notifiers
        return Outbox(
            self.store,
            notifiers,
            rng=self.daemon.rng,
            clock=self._clock,
            on_channel_disabled=self._on_channel_disabled,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self, tg: asyncio.TaskGroup) -> None:
        """Restore state, then run the outbox (replaying old rows) and the group-timer tick."""
        self._restore(self._clock())
        self._replayed = len(self.store.outbox_rows())
        if self._replayed:
            log.info("outbox: %d undelivered notification(s) from a previous run", self._replayed)
        self._tg = tg
        self._outbox_task = tg.create_task(self.outbox.run(self._outbox_stop), name="outbox")
        self._tick_task = tg.create_task(self._tick_loop(), name="alerts-tick")
        # Cluster notifications a previous run held and never settled (a crash between
        # queueing and claiming) are asked for again, as are claims NATS did not answer.
        self._claims_task = tg.create_task(
            every(RETRY, self._retry_claims, self.faults, "alerts.claims"), name="alerts-claims"
        )

    def _restore(self, now: float) -> None:
        state = self.store.load_engine_state()
        silences = self.store.load_silences()
        acks = self.store.load_acks()
        if state is None and not silences and not acks:
            return
        doc: dict[str, Any] = dict(state or {"version": 1, "records": [], "groups": []})
        # Write-through rows win over the periodic snapshot: they are never older.
        merged_sil = {s["id"]: s for s in doc.get("silences", ())}
        merged_sil.update(silences)
        doc["silences"] = list(merged_sil.values())
        merged_acks = {a["fingerprint"]: a for a in doc.get("acks", ())}
        merged_acks.update(acks)
        doc["acks"] = list(merged_acks.values())
        try:
            self.engine.restore_state(doc, now)
        except (AlertError, KeyError, TypeError, ValueError) as exc:
            log.error("alert state in %s not restored (%s); starting clean", self.store.path, exc)
            return
        self._restored = len(self.engine.active(include_resolved=True))
        self._saved_acks = set(acks)
        self._saved_silences = set(silences)

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109 - the bound is the API
        """Stop the tick, persist, flush due deliveries and release, all within ``timeout`` s.

        A delivery still in flight at the bound (a receiver that never answers) is cancelled;
        its row stays in the outbox and goes out after the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for task in (self._tick_task, self._claims_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._persist()
        self._outbox_stop.set()
        delivered = await self.outbox.flush(max(0.0, deadline - loop.time()))
        if self._outbox_task is not None:
            await _join(self._outbox_task, max(0.0, deadline - loop.time()))
        with contextlib.suppress(TimeoutError):
            # Closing HTTP clients is quick, but it must not stretch the bound either.
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                await self.outbox.aclose()
        left = len(self.store.outbox_rows())
        log.info("alerting stopped: %d delivered at shutdown, %d left queued", delivered, left)

    async def _tick_loop(self) -> None:
        # One bad tick must not end the group timers for good (runtime.faults policy).
        await every(TICK, self.tick, self.faults, "alerts.tick")

    def tick(self) -> None:
        now = self._clock()
        for sil in self.engine.expire_silences(now):
            self.store.delete_silence(sil.id)
            self._saved_silences.discard(sil.id)
            self._share("silence_removed", sil.id)
        notes = self.engine.tick(now)
        if notes:
            self._deliver(notes)
            self._persist()

    # ------------------------------------------------------------------ evaluation

    async def evaluate(self) -> None:
        """One alerts-job run."""
        start = time.perf_counter()
        now = self._clock()
        inputs = self.inputs.build(self.daemon, now, time.monotonic())
        result = self.engine.evaluate(inputs)
        self._apply_shared_acks(now)
        self._record(result.transitions, now)
        self._deliver(result.notifications)
        self._persist()
        self._evaluations += 1
        self._last_cost = time.perf_counter() - start

    def _record(self, transitions: Sequence[Transition], now: float) -> None:
        bus = getattr(self.daemon, "events", None)
        publish = getattr(bus, "publish", None)
        for t in transitions:
            self._transitions += 1
            view = self.engine.get(t.fingerprint)
            labels = dict(t.labels or (view.labels if view is not None else {}))
            alertname = t.alertname or labels.get("alertname", "?")
            value = t.value if t.labels is not None else (view.value if view else None)
            data = {
                "fingerprint": t.fingerprint,
                "alertname": alertname,
                "from": t.old.value,
                "to": t.new.value,
                "at": t.at if t.at is not None else now,
                "labels": labels,
                "severity": labels.get("severity"),
                "summary": t.summary or (view.summary if view is not None else ""),
                "value": value,
                "value_text": format_value(alertname, labels, value),
            }
            log.info("alert %s %s: %s -> %s", alertname, t.fingerprint, t.old.value, t.new.value)
            self.store.add_event(
                now,
                f"alert.{alertname}",
                data,
                route=labels.get("route"),
                connection=labels.get("connection"),
            )
            if callable(publish):
                try:
                    publish("alert", data)
                except Exception:
                    log.exception("event bus rejected an alert event")

    def _deliver(self, notes: Sequence[Notification]) -> None:
        cluster = getattr(self.daemon, "cluster", None)
        for n in notes:
            if n.channel not in self._notifiers:
                continue  # a channel removed by a reload a moment ago
            # A fact about the cluster is paged once cluster-wide, by the node that claims
            # it; it is queued (held) before the claim is asked for (runtime/ops/claims.py).
            held = self.claims.hold(cluster, n) if cluster is not None else None
            if held is None:
                self._enqueue(n)
            elif held:
                self._enqueued += 1
            else:
                self._deduped += 1

    def _enqueue(self, n: Notification) -> None:
        if self.outbox.enqueue(n.channel, notification_payload(n)):
            self._enqueued += 1
        else:
            self._deduped += 1

    def _retry_claims(self) -> None:
        cluster = getattr(self.daemon, "cluster", None)
        if cluster is not None:
            self.claims.retry(cluster)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tg is None:  # not started (a unit test driving evaluate() by hand)
            coro.close()
            raise RuntimeError("Alerting.start() first: cluster claims need its TaskGroup")
        task = self._tg.create_task(coro)
        self._claiming.add(task)
        task.add_done_callback(self._claiming.discard)

    def _share(self, what: str, arg: Any) -> None:
        shared = getattr(getattr(self.daemon, "cluster", None), "shared", None)
        if shared is not None:
            getattr(shared, what)(arg)

    def _persist(self) -> None:
        self.store.save_engine_state(self.engine.export_state())
        acks = {a.fingerprint: a for a in self.engine.acks()}
        for fp in self._saved_acks - acks.keys():
            self.store.delete_ack(fp)  # cleared when its alert resolved
            self._share("ack_cleared", fp)
            self._shared_acks.pop(fp, None)
        self._saved_acks = set(acks)

    def _on_channel_disabled(self, channel: str, reason: str) -> None:
        """A Discord 404 / Slack 410: tell the operator through every other channel."""
        self._disabled[channel] = reason
        now = self._clock()
        self.engine.raise_external(
            CHANNEL_GONE_ALERT,
            {"check": "notification_channel", "channel": channel},
            Severity.CRITICAL,
            f"alert channel {channel} disabled: {reason}",
            now,
            ttl=86400.0,
        )
        self._persist()
        self.store.add_event(now, "channel_disabled", {"channel": channel, "reason": reason})

    # ------------------------------------------------------------------ reload

    @property
    def alerts_config(self) -> Any:
        """The ``[alerts]`` config the engine and the channels run with now."""
        return self._alerts_cfg

    async def reconfigure(self, new_cfg: Any, channels_changed: Sequence[str]) -> None:
        """Apply ``config.alerts`` after a reload; channels restart only if they changed."""
        self._alerts_cfg = new_cfg.alerts
        self.engine.reconfigure(
            rule_specs(new_cfg.alerts),
            channel_routes(new_cfg.alerts),
            **_timers(new_cfg.alerts),
        )
        self.inputs.set_anomaly(
            AnomalySettings.from_rule(self.engine.rules.get("anomaly_detected"))
        )
        self.inputs.perf_warmup = self.engine.rules["performance_degradation"].param("warmup")
        if not channels_changed:
            return
        old_outbox, old_stop, old_task = self.outbox, self._outbox_stop, self._outbox_task
        old_stop.set()
        if old_task is not None:
            await _join(old_task, 5.0)
        await old_outbox.aclose()
        for name in channels_changed:
            self._disabled.pop(name, None)
        self.outbox = self._new_outbox(new_cfg.alerts)
        self.claims.outbox = self.outbox
        self._outbox_stop = asyncio.Event()
        if self._tg is not None:
            self._outbox_task = self._tg.create_task(
                self.outbox.run(self._outbox_stop), name="outbox"
            )
        log.info("alert channels reloaded: %s", ", ".join(channels_changed))

    # ------------------------------------------------------------------ operator actions

    def active(self) -> list[dict[str, Any]]:
        return [alert_dict(v) for v in self.engine.active()]

    def explain(self, fingerprint: str) -> dict[str, Any]:
        return self.engine.explain(fingerprint, self._clock())

    def ack(self, fingerprint: str, by: str, comment: str) -> Ack:
        ack = self.engine.ack(fingerprint, by, comment, self._clock())
        self.store.put_ack(fingerprint, ack.to_dict())
        self._saved_acks.add(fingerprint)
        self._persist()
        self.store.add_event(ack.at, "alert_ack", ack.to_dict())
        self._share("ack_made", ack.to_dict())
        return ack

    def silence(
        self,
        matchers: Sequence[str],
        duration: float,
        comment: str,
        created_by: str,
        *,
        fingerprint: str | None = None,
    ) -> tuple[Silence, list[AlertView]]:
        """Create a silence; returns it and the alerts it matches now.

        With ``fingerprint`` (any unique prefix) the silence matches that alert's labels
        exactly, plus any extra ``matchers``.
        """
        if not duration > 0:
            raise AlertError(f"a silence needs a positive duration, got {duration:g}s")
        all_matchers = list(matchers)
        if fingerprint:
            fp = self.engine.resolve_fingerprint(fingerprint)
            view = self.engine.get(fp)
            assert view is not None
            all_matchers = [f'{k}="{v}"' for k, v in sorted(view.labels.items())] + all_matchers
        now = self._clock()
        sil = self.engine.silence(
            all_matchers,
            created_by=created_by,
            comment=comment,
            now=now,
            duration=duration,
        )
        self.store.put_silence(sil.id, sil.to_dict())
        self._saved_silences.add(sil.id)
        self._persist()
        self.store.add_event(self._clock(), "silence_created", sil.to_dict())
        self._share("silence_made", sil.to_dict())
        return sil, self.engine.matching(sil.matchers, now)

    def unsilence(self, silence_id: str, by: str) -> Silence:
        sil = self.engine.unsilence(silence_id, self._clock())
        self.store.delete_silence(silence_id)
        self._saved_silences.discard(silence_id)
        self._persist()
        self.store.add_event(self._clock(), "silence_expired", {**sil.to_dict(), "by": by})
        self._share("silence_removed", silence_id)
        return sil

    def silences(self) -> list[Silence]:
        return self.engine.silences()

    def expire_silences(self, now: float) -> list[Silence]:
        """For the cleanup job; the 1 s tick does the same."""
        gone = self.engine.expire_silences(now)
        for sil in gone:
            self.store.delete_silence(sil.id)
            self._saved_silences.discard(sil.id)
            self._share("silence_removed", sil.id)
        return gone

    # ------------------------------------------------------------------ cluster state

    def apply_shared_silence(self, doc: dict[str, Any]) -> bool:
        """A silence made on another node (or replayed): honour it and keep a local copy."""
        sil = Silence.from_dict(doc)
        if sil.ends_at <= self._clock() or any(s.id == sil.id for s in self.engine.silences()):
            return False
        self.engine.add_silence(sil)
        self.store.put_silence(sil.id, sil.to_dict())
        self._saved_silences.add(sil.id)
        log.info("silence %s from the cluster (by %s)", sil.id, sil.created_by)
        return True

    def apply_shared_unsilence(self, silence_id: str) -> bool:
        if not any(s.id == silence_id for s in self.engine.silences()):
            return False
        self.engine.unsilence(silence_id, self._clock())
        self.store.delete_silence(silence_id)
        self._saved_silences.discard(silence_id)
        return True

    def apply_shared_ack(self, doc: dict[str, Any]) -> bool:
        """An ack made on another node; applied now or when this node sees the alert."""
        self._shared_acks[str(doc.get("fingerprint", ""))] = doc
        return self._apply_shared_acks(self._clock()) > 0

    def _apply_shared_acks(self, now: float) -> int:
        applied = 0
        for fp, doc in list(self._shared_acks.items()):
            view = self.engine.get(fp)
            if now - float(doc.get("at", now)) > 86400.0:
                del self._shared_acks[fp]
                continue
            # An ack belongs to one firing: never to a later one with the same fingerprint.
            if view is None or view.acknowledged:
                continue
            if float(doc.get("at", 0)) < (view.started_at or 0.0) - 30:
                continue
            try:
                ack = self.engine.ack(fp, str(doc.get("by", "?")), str(doc.get("comment", "")), now)
            except AlertError:
                continue  # resolved here already
            self.store.put_ack(fp, ack.to_dict())
            self._saved_acks.add(fp)
            applied += 1
        return applied

    def history(
        self,
        since: float | None,
        alert_type: str | None,
        route: str | None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        kind = f"alert.{alert_type}" if alert_type else None
        fetch = limit if kind else limit * 5
        rows = self.store.events(since=since, kind=kind, route=route, limit=fetch)
        out = [
            {**e.data, "event_id": e.id, "ts": e.ts, "kind": e.kind, "route": e.route}
            for e in rows
            if e.kind.startswith("alert.") or (kind is None and e.kind in _OPERATOR_KINDS)
        ]
        return out[:limit]

    async def test(self, channel: str) -> DeliveryResult:
        if channel not in self._notifiers:
            known = ", ".join(sorted(self._notifiers)) or "none enabled"
            raise AlertError(f"no enabled alert channel {channel!r} (channels: {known})")
        return await self.outbox.send_test(channel)

    def channels(self) -> list[dict[str, Any]]:
        stats = {c.channel: c for c in self.outbox.statistics().channels}
        out = []
        for ch in self._alerts_cfg.channels:
            s = stats.get(ch.name)
            out.append(
                {
                    "name": ch.name,
                    "kind": ch.kind,
                    "enabled": ch.enabled,
                    "min_severity": ch.min_severity.value,
                    "queued": s.queued if s else 0,
                    "delivered": s.delivered if s else 0,
                    "failures": s.failed if s else 0,
                    "last_success": s.last_success if s else None,
                    "last_error": s.last_error if s else None,
                    "breaker": s.breaker.value if s else None,
                    "disabled": bool(s and s.disabled),
                    "disabled_reason": s.disabled_reason if s else None,
                    "skipped": s.skipped if s else 0,
                    "skip_reason": s.skip_reason if s else None,
                    "status": _channel_status(ch.enabled, s),
                }
            )
        return out

    def statistics(self) -> AlertingStatistics:
        return AlertingStatistics(
            evaluations=self._evaluations,
            last_evaluation_seconds=self._last_cost,
            notifications_enqueued=self._enqueued,
            notifications_deduplicated=self._deduped,
            transitions=self._transitions,
            restored_alerts=self._restored,
            replayed_rows=self._replayed,
            channels_disabled=tuple(sorted(self._disabled)),
        )


def _channel_status(enabled: bool, s: Any) -> str:
    """One word (or phrase) an operator reads first in ``wsgate alerts channels``."""
    if not enabled:
        return "off"
    if s is None:
        return "not started"
    if s.disabled:
        return f"disabled: {s.disabled_reason}"
    if s.unavailable:
        return f"skipped ({s.unavailable})"
    return str(s.breaker.value)


_OPERATOR_KINDS = frozenset(
    {
        "alert_ack",
        "silence_created",
        "silence_expired",
        "channel_disabled",
        "notification_dropped",
        "notification_sent_elsewhere",
        "notification_unclaimed",
        "operator_action",
    }
)
