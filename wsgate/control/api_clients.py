"""Control commands about the ``[[gateway.clients]]`` identities: `clients` (read) and
`clients.disconnect` (admin: close one client's open sessions, e.g. after revoking its
token, since a reload never closes what is open)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from wsgate.control.schema import NO_PARAMS, Schema, string
from wsgate.control.server import Caller, Handler
from wsgate.errors import ControlError

if TYPE_CHECKING:
    from wsgate.control.view import DaemonView

__all__ = ["build_client_handlers"]

# Policy violation: the bot's access was withdrawn; reconnecting with the old token fails.
DISCONNECT_CODE = 1008


def build_client_handlers(d: DaemonView) -> dict[str, Handler]:
    async def h_clients(params: dict[str, Any], caller: Caller) -> Any:
        return [dataclasses.asdict(c) for c in d.gateway.clients.statistics()]

    async def h_disconnect(params: dict[str, Any], caller: Caller) -> Any:
        name: str = params["name"]
        known = [c.name for c in d.gateway.clients.statistics()]
        if name not in known:
            raise ControlError(
                "not_found",
                f"no client {name!r} (clients: {', '.join(known) or 'none configured'})",
            )
        reason = f"client {name} disconnected by the operator"
        closed = d.gateway.disconnect_client(name, DISCONNECT_CODE, reason)
        data = {
            "action": "disconnect",
            "client": name,
            "sessions": closed,
            "by": f"uid {caller.uid} pid {caller.pid}",
        }
        d.store.add_event(time.time(), "operator_action", data, None, None)
        d.events.publish("operator", data)
        return {"name": name, "closed": closed, "code": DISCONNECT_CODE}

    return {
        "clients": Handler(h_clients, params=NO_PARAMS),
        "clients.disconnect": Handler(
            h_disconnect, mutating=True, params=Schema(name=string(required=True))
        ),
    }
