"""The `wsgate` entry point: a typer-free fast path for the read commands scripts poll.

`wsgate status --json` in a monitoring loop should cost little more than a bare
socket client, so the few read commands whose arguments are simple (`status`,
`connections`, `alerts`, each with `--json` and optionally `--socket`/`--config`) are
answered here with the stdlib control client; every other command line — and any
argument this parser does not know — goes to the full Typer CLI, which prints the
same JSON for the same call.
"""

from __future__ import annotations

import json
import sys

__all__ = ["main", "try_fast"]

_FAST = ("status", "connections", "alerts", "clients")
_FAST_SUB = {("cluster", "nodes"): "cluster.nodes"}  # two-word commands -> control method
_VALUE_OPTS = {"--socket": "socket", "--config": "config", "-c": "config"}


def _parse(argv: list[str]) -> dict[str, str | None] | None:
    sub = _FAST_SUB.get((argv[0], argv[1])) if len(argv) > 1 else None
    if not argv or (argv[0] not in _FAST and sub is None) or "--json" not in argv:
        return None
    opts: dict[str, str | None] = {"socket": None, "config": None, "method": sub or argv[0]}
    i = 2 if sub else 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--json":
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if name in _VALUE_OPTS and eq:
            opts[_VALUE_OPTS[name]] = value
            i += 1
            continue
        if arg in _VALUE_OPTS and i + 1 < len(argv):
            opts[_VALUE_OPTS[arg]] = argv[i + 1]
            i += 2
            continue
        return None  # --help, --route, a subcommand...: the full CLI handles it
    return opts


def try_fast(argv: list[str]) -> int | None:
    """Run ``argv`` on the fast path and return the exit code, or None to fall back."""
    opts = _parse(argv)
    if opts is None:
        return None
    from wsgate.control.client import ControlClient, resolve_socket_path
    from wsgate.control.wire import exit_code
    from wsgate.errors import ControlError

    try:
        path = resolve_socket_path(opts["socket"], opts["config"])
        result = ControlClient(path, timeout=30.0).call(str(opts["method"]), {})
    except ControlError as err:
        print(f"wsgate: {err.message}", file=sys.stderr)
        return exit_code(err.code)
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(result, indent=indent, default=str) + "\n")
    return 0


def main() -> None:
    from wsgate.cli.errors import guarded, strip_debug, strip_wide

    argv, debug = strip_debug(strip_wide(sys.argv[1:]))
    if argv == ["--version"]:
        from wsgate.version import __version__

        print(f"wsgate {__version__}")
        sys.exit(0)
    code = None if debug else try_fast(argv)  # --debug: the full path shows the traceback
    if code is not None:
        sys.exit(code)

    def full() -> None:
        from wsgate.cli.app import main as full_main

        sys.argv[1:] = argv
        full_main()

    sys.exit(guarded(full, debug=debug))
