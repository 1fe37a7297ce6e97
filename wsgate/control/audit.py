"""Operator actions on connections, recorded as such.

A reconnect, disable, enable or drain an operator started is not a fault: the upstream
connection does not count it (see ``UpstreamConnection.operator_cycle``), and history and
the event bus show it as the operator's, so "why did bfx-1 reconnect at 14:02" has an
answer that is not an alert.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from wsgate.control.server import Caller

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView

__all__ = ["operator_action"]


def operator_action(d: DaemonView, action: str, conn: Any, caller: Caller) -> None:
    """Record a connection transition an operator started: history (``wsgate alerts
    history``) and the event bus show it as the operator's, not as a fault."""
    data = {
        "action": action,
        "connection": conn.id,
        "route": conn.settings.route,
        "by": f"uid {caller.uid} pid {caller.pid}",
    }
    d.store.add_event(time.time(), "operator_action", data, conn.settings.route, conn.id)
    d.events.publish("operator", data)
