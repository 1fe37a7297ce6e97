"""Control methods for alerts: list, history, ack, silences, channel test and health.

``alerts``, ``alerts.history``, ``alerts.silences`` and ``alerts.channels`` are reads;
``alerts.ack``, ``alerts.silence``, ``alerts.unsilence`` and ``alerts.test`` change state
(or send something) and are mutating, so the server logs them with the caller's pid/uid.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wsgate.control import wire
from wsgate.control.server import Caller, Handler
from wsgate.errors import AlertError, ControlError, DeliveryError
from wsgate.runtime.alerting import Alerting, caller_name

if TYPE_CHECKING:
    from wsgate.daemon import Daemon

__all__ = ["build_alert_handlers", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_duration(text: Any) -> float:
    """``90``, ``45s``, ``15m``, ``2h``, ``1d12h`` → seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2) or "s"]
        pos = m.end()
    if not s or pos != len(s):
        raise ControlError(
            wire.INVALID_PARAMS, f"cannot parse duration {text!r}; use e.g. 90, 45s, 15m, 2h, 1d"
        )
    return total


def _alerting(d: Daemon) -> Alerting:
    if d.alerting is None:
        raise ControlError(wire.CONFLICT, "alerting is not running yet")
    return d.alerting


def _silence_dict(s: Any, now: float) -> dict[str, Any]:
    return {**s.to_dict(), "state": s.state(now)}


def _str(params: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = params.get(key)
    if value is None or (required and not str(value).strip()):
        if required:
            raise ControlError(wire.INVALID_PARAMS, f"missing parameter {key!r}")
        return ""
    return str(value)


def build_alert_handlers(d: Daemon) -> dict[str, Handler]:
    async def h_alerts(params: dict[str, Any], caller: Caller) -> Any:
        if d.alerting is None:
            return {"alerts": []}
        return {"alerts": d.alerting.active()}

    async def h_history(params: dict[str, Any], caller: Caller) -> Any:
        since = params.get("since")
        since_ts = time.time() - parse_duration(since) if since not in (None, "") else None
        limit = int(params.get("limit") or 200)
        events = _alerting(d).history(
            since_ts, params.get("type") or None, params.get("route") or None, limit
        )
        return {"events": events}

    async def h_ack(params: dict[str, Any], caller: Caller) -> Any:
        fp = _str(params, "fingerprint")
        comment = _str(params, "comment", required=False)
        try:
            ack = _alerting(d).ack(fp, caller_name(caller.uid, caller.pid), comment)
        except AlertError as exc:
            raise ControlError(wire.NOT_FOUND, str(exc)) from None
        return {"ack": ack.to_dict()}

    async def h_silence(params: dict[str, Any], caller: Caller) -> Any:
        matchers = params.get("matchers") or []
        if isinstance(matchers, str) or not isinstance(matchers, list) or not matchers:
            raise ControlError(wire.INVALID_PARAMS, "a silence needs --match key=value (repeat)")
        duration = parse_duration(params.get("duration", ""))
        comment = _str(params, "comment")
        by = caller_name(caller.uid, caller.pid)
        try:
            sil = _alerting(d).silence([str(m) for m in matchers], duration, comment, by)
        except AlertError as exc:
            raise ControlError(wire.INVALID_PARAMS, str(exc)) from None
        return {"silence": _silence_dict(sil, time.time())}

    async def h_silences(params: dict[str, Any], caller: Caller) -> Any:
        now = time.time()
        return {"silences": [_silence_dict(s, now) for s in _alerting(d).silences()]}

    async def h_unsilence(params: dict[str, Any], caller: Caller) -> Any:
        sid = _str(params, "id")
        try:
            sil = _alerting(d).unsilence(sid, caller_name(caller.uid, caller.pid))
        except AlertError as exc:
            raise ControlError(wire.NOT_FOUND, str(exc)) from None
        return {"silence": _silence_dict(sil, time.time())}

    async def h_test(params: dict[str, Any], caller: Caller) -> Any:
        channel = _str(params, "channel")
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
        "alerts": Handler(h_alerts),
        "alerts.history": Handler(h_history),
        "alerts.ack": Handler(h_ack, mutating=True),
        "alerts.silence": Handler(h_silence, mutating=True),
        "alerts.silences": Handler(h_silences),
        "alerts.unsilence": Handler(h_unsilence, mutating=True),
        "alerts.test": Handler(h_test, mutating=True),
        "alerts.channels": Handler(h_channels),
    }
