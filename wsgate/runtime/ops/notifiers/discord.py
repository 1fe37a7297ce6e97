"""Discord execute-webhook: one embed coloured by severity, cut to Discord's limits."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from wsgate.core.types import Severity
from wsgate.runtime.ops.notifiers.base import (
    ChannelGone,
    DeliveryResult,
    HttpNotifier,
    NotificationPayload,
    compact_json,
    notification_title,
    payload_severity,
    truncate,
)

__all__ = ["COLOURS", "LIMITS", "ChannelGone", "DiscordNotifier", "embed_size", "render_discord"]

COLOURS = {Severity.CRITICAL: 0xD00000, Severity.WARNING: 0xDAA038, Severity.INFO: 0x2EB886}
RESOLVED_COLOUR = 0x2EB886

# developers/resources/message.mdx (alerting.md §3.2); a request over any of them is a 400.
LIMITS = {
    "content": 2000,
    "title": 256,
    "description": 4096,
    "fields": 25,
    "field_name": 256,
    "field_value": 1024,
    "footer": 2048,
    "total": 6000,
}


def embed_size(embed: dict[str, Any]) -> int:
    """Characters Discord counts towards the 6000 total of one embed."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += len(embed.get("footer", {}).get("text", ""))
    size += len(embed.get("author", {}).get("name", ""))
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
    return size


def _field(alert: dict[str, Any]) -> dict[str, Any]:
    labels = alert.get("labels", {})
    ann = alert.get("annotations", {})
    name = f"[{alert.get('status', 'firing')}] {labels.get('alertname', '?')}"
    where = " ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )
    value = ann.get("summary") or ann.get("description") or "-"
    value = f"{value}\n{where}" if where else value
    return {
        "name": truncate(name, LIMITS["field_name"]),
        "value": truncate(str(value), LIMITS["field_value"]) or "-",
        "inline": False,
    }


def render_discord(payload: NotificationPayload) -> dict[str, Any]:
    title = notification_title(payload)
    severity = payload_severity(payload)
    resolved = payload.get("status") == "resolved"
    alerts = payload.get("alerts", [])
    description = "\n".join(
        str(a.get("annotations", {}).get("description") or a.get("annotations", {}).get("summary"))
        for a in alerts
        if a.get("annotations")
    )
    embed: dict[str, Any] = {
        "title": truncate(title, LIMITS["title"]),
        "description": truncate(description, LIMITS["description"]),
        "color": RESOLVED_COLOUR if resolved else COLOURS[severity],
        "fields": [_field(a) for a in alerts[: LIMITS["fields"]]],
        "footer": {"text": truncate(f"wsgate · {payload.get('id', '')}", LIMITS["footer"])},
    }
    _fit_total(embed, len(alerts))
    return {
        "content": truncate(title, LIMITS["content"]),
        "embeds": [embed],
        # Label values are untrusted text: never let them ping @everyone.
        "allowed_mentions": {"parse": []},
    }


def _fit_total(embed: dict[str, Any], n_alerts: int) -> None:
    """Shrink the embed to the 6000-char total: description first, then trailing fields."""
    over = embed_size(embed) - LIMITS["total"]
    if over > 0 and embed["description"]:
        keep = max(0, len(embed["description"]) - over)
        embed["description"] = truncate(embed["description"], keep)
    fields: list[dict[str, Any]] = embed["fields"]
    dropped = n_alerts - len(fields)
    while embed_size(embed) > LIMITS["total"] and fields:
        fields.pop()
        dropped += 1
    if dropped:
        note = f"{dropped} more alert(s) not shown"
        footer = embed["footer"]["text"]
        room = LIMITS["total"] - embed_size(embed)
        footer = truncate(f"{footer} · {note}", min(LIMITS["footer"], len(footer) + room))
        embed["footer"]["text"] = footer


def _with_wait(url: str) -> str:
    # wait=true makes Discord answer only once the message is saved: a 2xx means delivered.
    parts = urlsplit(url)
    if "wait=" in parts.query:
        return url
    query = f"{parts.query}&wait=true" if parts.query else "wait=true"
    return urlunsplit(parts._replace(query=query))


class DiscordNotifier(HttpNotifier):
    kind = "discord"
    # "If a webhook returns a 404 status you should not attempt to use it again."
    gone_statuses = frozenset({401, 404})

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        url = _with_wait(self.target_url())
        return await self.post(url, compact_json(render_discord(payload)), payload, {})

    def body_retry_after(self, resp: httpx.Response) -> float | None:
        value = super().body_retry_after(resp)
        if value is None:
            reset = resp.headers.get("x-ratelimit-reset-after")
            try:
                return max(0.0, float(reset)) if reset else None
            except ValueError:
                return None
        return value
