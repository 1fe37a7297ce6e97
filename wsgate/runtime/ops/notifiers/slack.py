"""Slack incoming webhook: a ``text`` fallback plus one attachment coloured by severity."""

from __future__ import annotations

from typing import Any

from wsgate.core.types import Severity
from wsgate.runtime.ops.notifiers.base import (
    ChannelConfig,
    DeliveryResult,
    HttpNotifier,
    NotificationPayload,
    compact_json,
    notification_title,
    payload_severity,
    truncate,
)

__all__ = ["COLOURS", "RESOLVED_COLOUR", "SlackNotifier", "render_slack"]

COLOURS = {Severity.CRITICAL: "#d00000", Severity.WARNING: "#daa038", Severity.INFO: "#2eb886"}
RESOLVED_COLOUR = "#2eb886"

# Limits from the reference (alerting.md §3.1): AM truncates the title at 1024; a section
# text holds 3000 chars; the fallback text is what phones show, keep it short.
TEXT_LIMIT = 3000
TITLE_LIMIT = 1024
FALLBACK_LIMIT = 3000
FIELD_LIMIT = 300
MAX_FIELDS = 10


def _alert_line(alert: dict[str, Any]) -> str:
    labels = alert.get("labels", {})
    ann = alert.get("annotations", {})
    summary = ann.get("summary") or ann.get("description") or ""
    where = " ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )
    state = alert.get("status", "firing")
    return f"• [{state}] {labels.get('alertname', '?')} {where}: {summary}".rstrip(": ")


def render_slack(payload: NotificationPayload) -> dict[str, Any]:
    title = notification_title(payload)
    severity = payload_severity(payload)
    resolved = payload.get("status") == "resolved"
    colour = RESOLVED_COLOUR if resolved else COLOURS[severity]
    text = "\n".join(_alert_line(a) for a in payload.get("alerts", []))
    common = payload.get("commonLabels", {})
    fields = [
        {
            "title": truncate(str(k), FIELD_LIMIT),
            "value": truncate(str(v), FIELD_LIMIT),
            "short": True,
        }
        for k, v in sorted(common.items())
        if k != "alertname"
    ][:MAX_FIELDS]
    attachment: dict[str, Any] = {
        "color": colour,
        "title": truncate(title, TITLE_LIMIT),
        "text": truncate(text, TEXT_LIMIT),
        "fields": fields,
        "footer": truncate(f"wsgate · {payload.get('id', '')}", FIELD_LIMIT),
        "mrkdwn_in": ["text"],
    }
    if payload.get("externalURL"):
        attachment["title_link"] = payload["externalURL"]
    fallback = f"{title} ({'resolved' if resolved else severity.value})"
    return {"text": truncate(fallback, FALLBACK_LIMIT), "attachments": [attachment]}


class SlackNotifier(HttpNotifier):
    kind = "slack"
    # 404 channel_not_found / 410 channel_is_archived: posting again can never work.
    gone_statuses = frozenset({404, 410})

    def __init__(self, config: ChannelConfig, **kw: Any) -> None:
        super().__init__(config, **kw)

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        url = self.target_url()
        return await self.post(url, compact_json(render_slack(payload)), payload, {})
