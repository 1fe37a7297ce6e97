"""Log channel: one JSON line per notification on the ``wsgate.alerts`` logger."""

from __future__ import annotations

import json
import logging
from typing import Any

from wsgate.core.types import Severity
from wsgate.runtime.ops.notifiers.base import (
    DeliveryResult,
    NotificationPayload,
    Notifier,
    notification_title,
    payload_severity,
)

__all__ = ["LogNotifier", "log_record"]

alerts_log = logging.getLogger("wsgate.alerts")

_LEVELS = {Severity.CRITICAL: logging.ERROR, Severity.WARNING: logging.WARNING}


def log_record(payload: NotificationPayload) -> dict[str, Any]:
    """The structured line: enough to grep and to join with history, not the whole payload."""
    return {
        "event": "notification",
        "id": payload.get("id"),
        "kind": payload.get("kind", "alert"),
        "status": payload.get("status"),
        "receiver": payload.get("receiver"),
        "title": notification_title(payload),
        "alerts": [
            {
                "fingerprint": a.get("fingerprint"),
                "status": a.get("status"),
                "labels": a.get("labels", {}),
                "summary": a.get("annotations", {}).get("summary"),
            }
            for a in payload.get("alerts", [])
        ],
    }


class LogNotifier(Notifier):
    kind = "log"

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        severity = payload_severity(payload)
        resolved = payload.get("status") == "resolved"
        level = logging.INFO if resolved else _LEVELS.get(severity, logging.INFO)
        # json.dumps escapes newlines, so a label value can never split the line.
        line = json.dumps(log_record(payload), separators=(",", ":"), sort_keys=True)
        alerts_log.log(level, "%s", line)
        return self._result(payload)
