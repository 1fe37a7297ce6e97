"""Default filesystem locations. Imported by the CLI, so it stays stdlib-only and tiny."""

from __future__ import annotations

import os

__all__ = ["default_control_socket", "default_state_dir"]


def default_control_socket() -> str:
    """`/run/wsgate/control.sock` for root, else under `$XDG_RUNTIME_DIR` (or /tmp per uid)."""
    if os.geteuid() == 0:
        return "/run/wsgate/control.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/wsgate-{os.geteuid()}"
    return os.path.join(runtime, "wsgate", "control.sock")


def default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/wsgate"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "wsgate")
