"""Control methods for alerts: list, history, ack, silences, channel test and health.

``alerts``, ``alerts.history``, ``alerts.silences`` and ``alerts.channels`` are reads;
``alerts.ack``, ``alerts.silence``, ``alerts.unsilence`` and ``alerts.test`` change state
(or send something) and are mutating, so the server logs them with the caller's pid/uid.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from wsgate.control import wire
from wsgate.control.schema import (
    NO_PARAMS,
    Schema,
    duration,
    integer,
    parse_duration,
    string,
    strings,
)
from wsgate.control.server import Caller, Handler
from wsgate.errors import AlertError, ControlError, DeliveryError
from wsgate.runtime.ops.alerting import Alerting, alert_dict, caller_name

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView

__all__ = ["build_alert_handlers", "parse_duration"]

MAX_HISTORY = 10_000  # events per alerts.history reply


def _alerting(d: DaemonView) -> Alerting:
    if d.alerting is None:
        raise ControlError(wire.CONFLICT, "alerting is not running yet")
    return d.alerting


def _silence_dict(s: Any, now: float) -> dict[str, Any]:
    return {**s.to_dict(), "state": s.state(now)}


def _alert_error(exc: AlertError, code: str) -> ControlError:
    """An ambiguous fingerprint prefix is a usage error that lists the candidates."""
    if exc.candidates:
        return ControlError(
            wire.INVALID_PARAMS,
            str(exc),
            details=[{"candidate": c} for c in exc.candidates],
        )
    return ControlError(code, str(exc))


def build_alert_handlers(d: DaemonView) -> dict[str, Handler]:
    async def h_alerts(params: dict[str, Any], caller: Caller) -> Any:
        if d.alerting is None:
            return {"alerts": []}
        return {"alerts": d.alerting.active()}

    async def h_history(params: dict[str, Any], caller: Caller) -> Any:
        since = params.get("since")
        since_ts = time.time() - since if since is not None else None
        events = _alerting(d).history(
            since_ts, params.get("type"), params.get("route"), params["limit"]
        )
        return {"events": events}

    async def h_ack(params: dict[str, Any], caller: Caller) -> Any:
        fp, comment = params["fingerprint"], params["comment"]
        try:
            ack = _alerting(d).ack(fp, caller_name(caller.uid, caller.pid), comment)
        except AlertError as exc:
            raise _alert_error(exc, wire.NOT_FOUND) from None
        return {"ack": ack.to_dict()}

    async def h_silence(params: dict[str, Any], caller: Caller) -> Any:
        matchers = params.get("matchers") or []
        fingerprint = params.get("fingerprint")
        if not matchers and not fingerprint:
            raise ControlError(
                wire.INVALID_PARAMS, "a silence needs a fingerprint or --match key=value (repeat)"
            )
        by = caller_name(caller.uid, caller.pid)
        try:
            sil, matches = _alerting(d).silence(
                matchers,
                params["duration"],
                params["comment"],
                by,
                fingerprint=fingerprint,
            )
        except AlertError as exc:
            raise _alert_error(exc, wire.INVALID_PARAMS) from None
        result: dict[str, Any] = {
            "silence": _silence_dict(sil, time.time()),
            "matches": [alert_dict(v) for v in matches],
        }
        if not matches:
            result["warning"] = (
                "the silence matches no pending or firing alert right now; "
                "it will apply to matching alerts that fire before it ends"
            )
        return result

    async def h_explain(params: dict[str, Any], caller: Caller) -> Any:
        try:
            return _alerting(d).explain(params["fingerprint"])
        except AlertError as exc:
            raise _alert_error(exc, wire.NOT_FOUND) from None

    async def h_silences(params: dict[str, Any], caller: Caller) -> Any:
        now = time.time()
        return {"silences": [_silence_dict(s, now) for s in _alerting(d).silences()]}

    async def h_unsilence(params: dict[str, Any], caller: Caller) -> Any:
        sid = params["id"]
        try:
            sil = _alerting(d).unsilence(sid, caller_name(caller.uid, caller.pid))
        except AlertError as exc:
            raise ControlError(wire.NOT_FOUND, str(exc)) from None
        return {"silence": _silence_dict(sil, time.time())}

    async def h_test(params: dict[str, Any], caller: Caller) -> Any:
        channel = params["channel"]
        try:
            res = await _alerting(d).test(channel)
        except AlertError as exc:
            raise ControlError(wire.NOT_FOUND, str(exc)) from None
        except DeliveryError as exc:
            # The receiver's answer is the point of the command: report it, fail the exit code.
            raise ControlError(
                wire.INTERNAL,
                f"channel {channel}: delivery failed: {exc}",
                details=[{"channel": channel, "error": str(exc)}],
            ) from None
        return {
            "channel": res.channel,
            "notification_id": res.notification_id,
            "status": res.status,
            "detail": res.detail,
            "skipped": res.skipped,
            "ok": True,
        }

    async def h_channels(params: dict[str, Any], caller: Caller) -> Any:
        return {"channels": _alerting(d).channels()}

    return {
        "alerts": Handler(h_alerts, params=NO_PARAMS),
        "alerts.history": Handler(
            h_history,
            params=Schema(
                since=duration(),
                type=string(max_len=64),
                route=string(),
                limit=integer(1, MAX_HISTORY, default=200),
            ),
        ),
        "alerts.ack": Handler(
            h_ack,
            mutating=True,
            params=Schema(
                fingerprint=string(required=True),
                comment=string(default="", max_len=1000, allow_empty=True),
            ),
        ),
        "alerts.silence": Handler(
            h_silence,
            mutating=True,
            params=Schema(
                matchers=strings(),
                fingerprint=string(max_len=16),
                duration=duration(1.0, required=True),
                comment=string(required=True, max_len=1000),
            ),
        ),
        "alerts.explain": Handler(
            h_explain, params=Schema(fingerprint=string(required=True, max_len=16))
        ),
        "alerts.silences": Handler(h_silences, params=NO_PARAMS),
        "alerts.unsilence": Handler(
            h_unsilence, mutating=True, params=Schema(id=string(required=True))
        ),
        "alerts.test": Handler(h_test, mutating=True, params=Schema(channel=string(required=True))),
        "alerts.channels": Handler(h_channels, params=NO_PARAMS),
    }
