"""Generic webhook: the notification JSON as is, HMAC-signed, with a stable delivery id."""

from __future__ import annotations

import hashlib
import hmac

from wsgate.runtime.ops.notifiers.base import (
    DeliveryResult,
    HttpNotifier,
    NotificationPayload,
    compact_json,
    read_secret,
)

__all__ = ["DELIVERY_HEADER", "SIGNATURE_HEADER", "WebhookNotifier", "sign"]

SIGNATURE_HEADER = "X-Wsgate-Signature-256"
DELIVERY_HEADER = "X-Wsgate-Delivery"


def sign(secret: str, body: bytes) -> str:
    """GitHub-style ``sha256=<hex>`` over the exact raw body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookNotifier(HttpNotifier):
    kind = "webhook"

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        url = self.target_url()
        body = compact_json(payload)
        # The delivery id is the notification id, identical on every retry and after a
        # restart, so a receiver that keys on it sees each notification once.
        headers = {DELIVERY_HEADER: str(payload.get("id", ""))}
        secret = read_secret(self.config.secret_env, self.config.secret_file)
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        return await self.post(url, body, payload, headers)
