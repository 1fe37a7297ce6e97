"""Helpers shared by the CLI modules: option types, the control call, JSON output.

Stdlib plus typer only: every CLI invocation imports this.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer

from wsgate.control.client import ControlClient, resolve_socket_path
from wsgate.errors import ControlError

__all__ = ["ConfigOpt", "JsonOpt", "SocketOpt", "call", "emit_json", "fail"]

SocketOpt = Annotated[
    str | None, typer.Option("--socket", help="Control socket path (else $WSGATE_SOCKET).")
]
ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Config file (its daemon.control_socket).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly the control result as JSON.")]


def fail(err: ControlError) -> NoReturn:
    """Print a control error (with every config problem it carries) and exit with its code."""
    from wsgate.control.wire import exit_code

    print(f"wsgate: {err.message}", file=sys.stderr)
    if isinstance(err.details, list):
        for item in err.details:
            if isinstance(item, dict) and "message" in item:
                line = f" (line {item['line']})" if item.get("line") else ""
                hint = f" (hint: {item['hint']})" if item.get("hint") else ""
                print(f"  {item.get('path', '')}{line}: {item['message']}{hint}", file=sys.stderr)
            else:
                print(f"  {item}", file=sys.stderr)
    raise typer.Exit(exit_code(err.code))


def call(socket: str | None, config: str | None, method: str, **params: Any) -> Any:
    path = resolve_socket_path(socket, config)
    try:
        return ControlClient(path, timeout=30.0).call(method, params)
    except ControlError as err:
        fail(err)


def emit_json(result: Any) -> None:
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(result, indent=indent, default=str) + "\n")
