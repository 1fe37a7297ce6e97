"""What every notification channel shares: the config protocol, results, secrets, HTTP.

A notifier turns one notification (an Alertmanager webhook-v4 shaped dict plus the
wsgate extras ``id`` and ``kind``) into one delivery attempt. It does not retry:
the outbox owns retries, backoff, rate limits and the circuit breaker, and reads
``DeliveryError.retryable`` / ``retry_after`` to decide.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from wsgate.core.types import Severity
from wsgate.errors import DeliveryError

__all__ = [
    "ChannelConfig",
    "ChannelGone",
    "DeliveryResult",
    "HttpNotifier",
    "NotificationPayload",
    "Notifier",
    "RateConfig",
    "alert_count",
    "channel_wants",
    "compact_json",
    "notification_title",
    "payload_severity",
    "read_secret",
    "redact_url",
    "truncate",
]

log = logging.getLogger("wsgate.notify")

NotificationPayload = dict[str, Any]

ELLIPSIS = "…"


class RateConfig(Protocol):
    @property
    def count(self) -> int: ...
    @property
    def per(self) -> float: ...


class ChannelConfig(Protocol):
    """The attributes of the config's channel dataclass that notifiers read (duck-typed)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def min_severity(self) -> Any: ...
    @property
    def send_resolved(self) -> bool: ...
    @property
    def url(self) -> str | None: ...
    @property
    def url_env(self) -> str | None: ...
    @property
    def url_file(self) -> str | None: ...
    @property
    def secret_env(self) -> str | None: ...
    @property
    def secret_file(self) -> str | None: ...
    @property
    def smtp_host(self) -> str | None: ...
    @property
    def smtp_port(self) -> int | None: ...
    @property
    def security(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def password_file(self) -> str | None: ...
    @property
    def from_addr(self) -> str | None: ...
    @property
    def to_addrs(self) -> tuple[str, ...]: ...
    @property
    def rate(self) -> RateConfig | None: ...
    @property
    def timeout(self) -> float: ...


class ChannelGone(DeliveryError):
    """The destination says it no longer exists (Discord 404/401, Slack/webhook 410).

    Never retryable; ``disable_channel`` tells the outbox to stop using the channel,
    keep its queued rows and alert through the other channels.
    """

    disable_channel = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, retryable=False)
        self.status = status


@dataclass(frozen=True)
class DeliveryResult:
    """A notification the destination accepted (or deliberately skipped)."""

    channel: str
    notification_id: str
    status: int | None = None  # HTTP status or SMTP code when there is one
    detail: str = ""
    skipped: bool = False


class Notifier(ABC):
    """One configured channel. ``send`` makes exactly one attempt."""

    kind: str = ""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        """Deliver once; raise ``DeliveryError`` (or ``ChannelGone``) on failure."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most channels hold nothing
        """Release connections; the notifier must not be used afterwards."""

    def unavailable(self) -> str | None:
        """Why this channel cannot show or send anything right now (``None``: it can).

        Such a channel skips notifications (``DeliveryResult.skipped``) instead of claiming
        them delivered, and ``wsgate alerts channels`` says so.
        """
        return None

    def _result(self, payload: NotificationPayload, **kw: Any) -> DeliveryResult:
        return DeliveryResult(channel=self.name, notification_id=str(payload.get("id", "")), **kw)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind}>"


# -- payload helpers ---------------------------------------------------------------------------


def _severity(value: Any) -> Severity:
    try:
        return Severity(getattr(value, "value", value))
    except ValueError:
        return Severity.WARNING


def payload_severity(payload: NotificationPayload) -> Severity:
    """The highest severity among the payload's alerts (common labels as a fallback)."""
    found = [
        _severity(a.get("labels", {}).get("severity"))
        for a in payload.get("alerts", [])
        if a.get("labels", {}).get("severity") is not None
    ]
    if not found:
        return _severity(payload.get("commonLabels", {}).get("severity", "warning"))
    return max(found, key=lambda s: s.rank)


def alert_count(payload: NotificationPayload) -> int:
    """How many alerts carry the group's status (AM's ``[FIRING:N]``)."""
    status = payload.get("status", "firing")
    return sum(1 for a in payload.get("alerts", []) if a.get("status", status) == status)


def notification_title(payload: NotificationPayload) -> str:
    """`[FIRING:2] high_latency route=bitfinex`, `[RESOLVED:1] …`, `[FLAPPING:1] …`, `[TEST] …`."""
    kind = payload.get("kind", "alert")
    status = str(payload.get("status", "firing")).upper()
    if kind == "test":
        head = "[TEST]"
    elif kind == "flapping":
        head = f"[FLAPPING:{len(payload.get('alerts', []))}]"
    else:
        head = f"[{status}:{alert_count(payload)}]"
    labels: Mapping[str, Any] = payload.get("groupLabels") or payload.get("commonLabels") or {}
    alerts = payload.get("alerts") or [{}]
    name = labels.get("alertname") or alerts[0].get("labels", {}).get("alertname", "notification")
    pairs = " ".join(
        f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
    )
    return f"{head} {name}{' ' + pairs if pairs else ''}"


def channel_wants(config: ChannelConfig, payload: NotificationPayload) -> bool:
    """Whether the channel's ``enabled``/``min_severity``/``send_resolved`` let it through."""
    if payload.get("kind") == "test":
        return True
    if not config.enabled:
        return False
    if payload.get("status") == "resolved" and not config.send_resolved:
        return False
    return payload_severity(payload).rank >= _severity(config.min_severity).rank


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    return text[: limit - 1] + ELLIPSIS


# -- secrets and URLs --------------------------------------------------------------------------


def read_secret(env: str | None, file: str | None) -> str | None:
    """Read a secret at send time: env var first, then file (stripped). Never logged."""
    if env:
        value = os.environ.get(env)
        if value:
            return value
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise DeliveryError(f"cannot read secret file {file}: {exc.strerror}") from None
    return None


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/…``: webhook URLs embed their token in the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…"


def _retry_after_header(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class HttpNotifier(Notifier):
    """A channel that POSTs JSON to one URL. Subclasses build the body and read errors."""

    #: Status codes meaning "this destination is gone for good".
    gone_statuses: frozenset[int] = frozenset({410})

    def __init__(self, config: ChannelConfig, *, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config)
        self._own_client = client is None
        # No redirects: a moved webhook is a config problem, and following one leaks the body.
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    def target_url(self) -> str:
        url = self.config.url or read_secret(self.config.url_env, self.config.url_file)
        if not url:
            raise DeliveryError(
                f"alerts.channels.{self.name}: no url (set url, url_env or url_file)",
                retryable=False,
            )
        return url

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def post(
        self, url: str, body: bytes, payload: NotificationPayload, headers: Mapping[str, str]
    ) -> DeliveryResult:
        all_headers = {"Content-Type": "application/json", "User-Agent": "wsgate"}
        all_headers.update(headers)
        try:
            resp = await self._client.post(
                url, content=body, headers=all_headers, timeout=self.config.timeout
            )
        except httpx.TimeoutException:
            raise DeliveryError(f"{redact_url(url)}: timed out") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{redact_url(url)}: {type(exc).__name__}: {exc}") from None
        if 200 <= resp.status_code < 300:
            return self._result(payload, status=resp.status_code)
        raise self.classify(url, resp)

    def body_retry_after(self, resp: httpx.Response) -> float | None:
        """Rate-limit hint carried in a JSON body (Slack, Discord); ``None`` if absent."""
        try:
            data = resp.json()
        except (ValueError, UnicodeDecodeError):
            return None
        value = data.get("retry_after") if isinstance(data, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return max(0.0, float(value))
        return None

    def classify(self, url: str, resp: httpx.Response) -> DeliveryError:
        """Map an HTTP error response to the error the outbox acts on."""
        status = resp.status_code
        text = truncate(resp.text.strip().replace("\n", " "), 200)
        where = f"{redact_url(url)}: HTTP {status}{': ' + text if text else ''}"
        if status in self.gone_statuses:
            return ChannelGone(where, status=status)
        if status == 429 or status == 408 or status >= 500:
            retry_after = self.body_retry_after(resp) if status == 429 else None
            if retry_after is None:
                retry_after = _retry_after_header(resp.headers.get("retry-after"), time.time())
            return DeliveryError(where, retryable=True, retry_after=retry_after)
        return DeliveryError(where, retryable=False)


def compact_json(payload: NotificationPayload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
