"""Helpers shared by the CLI modules: option types, the control call, JSON output.

Stdlib plus typer only: every CLI invocation imports this.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer

from wsgate.control.client import ControlClient, resolve_socket_path

__all__ = ["ConfigOpt", "JsonOpt", "SocketOpt", "call", "emit_json", "fail"]

SocketOpt = Annotated[
    str | None, typer.Option("--socket", help="Control socket path (else $WSGATE_SOCKET).")
]
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Config file (its daemon.control_socket).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly the control result as JSON.")]


def fail(err: BaseException) -> NoReturn:
    """Hand an error to the one error handler (wsgate/cli/errors.py): it prints one line
    (a traceback only with --debug) and exits with the README's code."""
    raise err


def call(socket: str | None, config: str | None, method: str, **params: Any) -> Any:
    """One control call; a ControlError goes to the one error handler."""
    path = resolve_socket_path(socket, config)
    return ControlClient(path, timeout=30.0).call(method, params)


def emit_json(result: Any) -> None:
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(result, indent=indent, default=str) + "\n")
