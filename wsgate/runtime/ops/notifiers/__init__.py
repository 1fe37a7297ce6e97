"""Notification channels: one class per kind, built from config by ``build_notifier``."""

from __future__ import annotations

import httpx

from wsgate.runtime.ops.notifiers.base import (
    ChannelConfig,
    ChannelGone,
    DeliveryResult,
    HttpNotifier,
    NotificationPayload,
    Notifier,
    channel_wants,
    notification_title,
)
from wsgate.runtime.ops.notifiers.console import ConsoleNotifier
from wsgate.runtime.ops.notifiers.discord import DiscordNotifier
from wsgate.runtime.ops.notifiers.email import EmailNotifier
from wsgate.runtime.ops.notifiers.log import LogNotifier
from wsgate.runtime.ops.notifiers.slack import SlackNotifier
from wsgate.runtime.ops.notifiers.webhook import WebhookNotifier

__all__ = [
    "ChannelConfig",
    "ChannelGone",
    "ConsoleNotifier",
    "DeliveryResult",
    "DiscordNotifier",
    "EmailNotifier",
    "LogNotifier",
    "NotificationPayload",
    "Notifier",
    "SlackNotifier",
    "WebhookNotifier",
    "build_notifier",
    "channel_wants",
    "notification_title",
]

_HTTP: dict[str, type[HttpNotifier]] = {
    "webhook": WebhookNotifier,
    "slack": SlackNotifier,
    "discord": DiscordNotifier,
}


def build_notifier(
    channel_cfg: ChannelConfig, *, demo: bool, http_client: httpx.AsyncClient | None = None
) -> Notifier:
    """The notifier for one ``[alerts.channels.<name>]`` table.

    ``http_client`` lets the daemon share one connection pool among HTTP channels (the
    caller then owns and closes it); by default each HTTP channel owns its client.
    """
    kind = channel_cfg.kind
    if kind in _HTTP:
        return _HTTP[kind](channel_cfg, client=http_client)
    if kind == "email":
        return EmailNotifier(channel_cfg)
    if kind == "log":
        return LogNotifier(channel_cfg)
    if kind == "console":
        return ConsoleNotifier(channel_cfg, demo=demo)
    known = ", ".join(sorted([*_HTTP, "email", "log", "console"]))
    raise ValueError(f"alerts.channels.{channel_cfg.name}.kind: unknown {kind!r} (one of {known})")
