"""Email through aiosmtplib: explicit STARTTLS / implicit TLS / none, text/plain body."""

from __future__ import annotations

import email.utils
import re
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from wsgate.errors import DeliveryError
from wsgate.runtime.ops.notifiers.base import (
    DeliveryResult,
    NotificationPayload,
    Notifier,
    notification_title,
    read_secret,
)

__all__ = ["EmailNotifier", "build_message", "message_id", "smtp_kwargs"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def message_id(notification_id: str, from_addr: str) -> str:
    """A Message-ID that is the same on every retry, so mail clients show one message."""
    domain = from_addr.rpartition("@")[2] or "wsgate.invalid"
    return f"<wsgate.{_UNSAFE.sub('_', notification_id)}@{domain}>"


def render_text(payload: NotificationPayload) -> str:
    lines = [notification_title(payload), ""]
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        ann = alert.get("annotations", {})
        lines.append(f"[{alert.get('status', 'firing')}] {labels.get('alertname', '?')}")
        for key in ("summary", "description"):
            if ann.get(key):
                lines.append(f"  {ann[key]}")
        for k, v in sorted(labels.items()):
            lines.append(f"  {k} = {v}")
        lines.append(
            f"  since {alert.get('startsAt', '?')}  fingerprint {alert.get('fingerprint', '?')}"
        )
        lines.append("")
    if payload.get("externalURL"):
        lines.append(str(payload["externalURL"]))
    lines.append(f"notification {payload.get('id', '')} ({payload.get('kind', 'alert')})")
    return "\n".join(lines) + "\n"


def build_message(
    payload: NotificationPayload, from_addr: str, to_addrs: tuple[str, ...]
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = notification_title(payload)
    msg["From"] = from_addr
    msg["To"] = ", ".join(to_addrs)
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = message_id(str(payload.get("id", "")), from_addr)
    if payload.get("groupKey"):
        # One thread per alert group in clients that honour it.
        msg["X-Wsgate-Group"] = str(payload["groupKey"]).replace("\n", " ")
    msg.set_content(render_text(payload))
    return msg


def smtp_kwargs(security: str) -> dict[str, Any]:
    """STARTTLS is required, never opportunistic: a MITM could strip it (alerting.md §3.4)."""
    if security == "tls":
        return {"use_tls": True, "start_tls": False}
    if security == "starttls":
        return {"use_tls": False, "start_tls": True}
    if security == "none":
        return {"use_tls": False, "start_tls": False}
    raise DeliveryError(f"unknown smtp security {security!r}", retryable=False)


class EmailNotifier(Notifier):
    kind = "email"

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        cfg = self.config
        if not cfg.smtp_host or not cfg.from_addr or not cfg.to_addrs:
            raise DeliveryError(
                f"alerts.channels.{self.name}: smtp_host, from_addr and to_addrs are required",
                retryable=False,
            )
        port = cfg.smtp_port or {"tls": 465, "starttls": 587}.get(cfg.security, 25)
        msg = build_message(payload, cfg.from_addr, cfg.to_addrs)
        password = read_secret(cfg.password_env, cfg.password_file) if cfg.username else None
        where = f"smtp://{cfg.smtp_host}:{port}"
        try:
            _, reply = await aiosmtplib.send(
                msg,
                hostname=cfg.smtp_host,
                port=port,
                username=cfg.username or None,
                password=password,
                timeout=cfg.timeout,
                **smtp_kwargs(cfg.security),
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"{where}: recipients refused: {exc}", retryable=False) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx is transient by RFC 5321; 5xx (bad auth, bad sender) will not heal by itself.
            retryable = 400 <= exc.code < 500
            raise DeliveryError(f"{where}: {exc.code} {exc.message}", retryable=retryable) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from None
        return self._result(payload, status=250, detail=reply)
