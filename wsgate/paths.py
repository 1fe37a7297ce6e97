"""Default filesystem locations. Imported by the CLI, so it stays stdlib-only and tiny."""

from __future__ import annotations

import os

__all__ = ["client_control_socket", "default_control_socket", "default_state_dir"]


def default_control_socket() -> str:
    """`/run/wsgate/control.sock` for root, else under `$XDG_RUNTIME_DIR` (or /tmp per uid)."""
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/wsgate-{os.geteuid()}"
    return os.path.join(runtime, "wsgate", "control.sock")


SYSTEM_SOCKET = "/run/wsgate/control.sock"


def client_control_socket() -> str:
    """Where the CLI looks without --socket/$WSGATE_SOCKET/--config.

    An operator (not root) usually talks to the system daemon under systemd, whose
    socket is /run/wsgate/control.sock; a personal daemon (`make run`) lives under
    $XDG_RUNTIME_DIR. Prefer whichever exists, the personal one first.
    """
    mine = default_control_socket()
    if os.path.exists(mine) or not os.path.exists(SYSTEM_SOCKET):
        return mine
    return SYSTEM_SOCKET


def default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/wsgate"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "wsgate")
