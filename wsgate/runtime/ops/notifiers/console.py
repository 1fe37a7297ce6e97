"""Console channel: a Rich panel on stderr, for a human watching a terminal (or the demo)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from wsgate.core.types import Severity
from wsgate.runtime.ops.notifiers.base import (
    ChannelConfig,
    DeliveryResult,
    NotificationPayload,
    Notifier,
    notification_title,
    payload_severity,
)

__all__ = ["ConsoleNotifier"]

SKIP_REASON = "no terminal"  # stderr is not a TTY (systemd, a pipe): nothing would be seen

_STYLES = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


class ConsoleNotifier(Notifier):
    kind = "console"

    def __init__(
        self, config: ChannelConfig, *, demo: bool = False, console: Console | None = None
    ) -> None:
        super().__init__(config)
        self._console = console or Console(stderr=True)
        # Under systemd stderr goes to the journal: panels there are noise, the log channel
        # already carries the facts.
        self.active = demo or console is not None or sys.stderr.isatty()

    def render(self, payload: NotificationPayload) -> Panel:
        severity = payload_severity(payload)
        resolved = payload.get("status") == "resolved"
        style = "green" if resolved else _STYLES[severity]
        body = Text()
        for alert in payload.get("alerts", []):
            labels: dict[str, Any] = alert.get("labels", {})
            summary = alert.get("annotations", {}).get("summary", "")
            where = " ".join(
                f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity")
            )
            body.append(f"[{alert.get('status', 'firing')}] ", style=style)
            body.append(f"{labels.get('alertname', '?')} {where}\n")
            if summary:
                body.append(f"  {summary}\n", style="dim")
        return Panel(body, title=notification_title(payload), border_style=style, expand=False)

    def unavailable(self) -> str | None:
        return None if self.active else SKIP_REASON

    async def send(self, payload: NotificationPayload) -> DeliveryResult:
        if not self.active:
            return self._result(payload, skipped=True, detail=SKIP_REASON)
        self._console.print(self.render(payload))
        return self._result(payload)
