"""The one error handler of the `wsgate` command: every failure becomes one line on stderr.

Every CLI command and the daemon in the foreground run under :func:`guarded`. An error
prints ``wsgate: <what failed, naming the key, address or file>`` and exits with the
README's code (0 ok, 1 failed, 2 usage, 3 daemon not running, 4 permission denied,
130 interrupted); a config error prints each problem on its own line. Only ``--debug``
(anywhere on the command line) or ``WSGATE_DEBUG=1`` adds the Python traceback.

Stdlib only: the fast path imports it on every call.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["describe", "guarded", "strip_debug", "strip_wide"]

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def strip_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` from ``argv``; it is global and may stand anywhere."""
    debug = "--debug" in argv or os.environ.get("WSGATE_DEBUG", "") not in ("", "0")
    return [a for a in argv if a != "--debug"], debug


def strip_wide(argv: list[str]) -> list[str]:
    """Remove ``--wide`` (never truncate table cells); the renderer reads $WSGATE_WIDE."""
    if "--wide" in argv:
        os.environ["WSGATE_WIDE"] = "1"
    return [a for a in argv if a != "--wide"]


def _leaf(exc: BaseException) -> BaseException:
    """The error a TaskGroup's ExceptionGroup is about: our own error first, else the first."""
    from wsgate.errors import WsgateError

    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop(0)
        if isinstance(e, BaseExceptionGroup):
            stack[:0] = list(e.exceptions)
        else:
            leaves.append(e)
    for e in leaves:
        if isinstance(e, WsgateError):
            return e
    return leaves[0] if leaves else exc


def describe(exc: BaseException) -> tuple[list[str], int]:
    """The lines to print for ``exc`` and the exit code."""
    from wsgate.control.wire import exit_code
    from wsgate.errors import ConfigError, ControlError, WsgateError

    exc = _leaf(exc)
    if isinstance(exc, KeyboardInterrupt):
        return ["wsgate: interrupted"], EXIT_INTERRUPTED
    if isinstance(exc, ConfigError):
        if len(exc.problems) == 1:  # e.g. a missing file: one line says it all
            return [f"wsgate: {exc.problems[0].render(exc.filename)}"], EXIT_FAILED
        lines = [p.render(exc.filename) for p in exc.problems]
        where = f"{exc.filename}: " if exc.filename else ""
        lines.append(f"wsgate: {where}{len(exc.problems)} config error(s)")
        return lines, EXIT_FAILED
    if isinstance(exc, ControlError):
        lines = [f"wsgate: {exc.message}"]
        if isinstance(exc.details, list):
            for item in exc.details:
                if isinstance(item, dict) and "message" in item:
                    line = f" (line {item['line']})" if item.get("line") else ""
                    hint = f" (hint: {item['hint']})" if item.get("hint") else ""
                    lines.append(f"  {item.get('path', '')}{line}: {item['message']}{hint}")
                else:
                    lines.append(f"  {item}")
        return lines, exit_code(exc.code)
    if isinstance(exc, WsgateError):
        return [f"wsgate: {exc}"], EXIT_FAILED
    if isinstance(exc, PermissionError):
        return [f"wsgate: {_os_text(exc)}"], 4
    if isinstance(exc, OSError):
        return [f"wsgate: {_os_text(exc)}"], EXIT_FAILED
    name = type(exc).__name__
    return [
        f"wsgate: unexpected {name}: {exc} (run again with --debug for the traceback)"
    ], EXIT_FAILED


def _os_text(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    target = exc.filename if exc.filename is not None else None
    return f"{target}: {what}" if target else what


def guarded(fn: Callable[[], object], *, debug: bool) -> int:
    """Run ``fn``; return its exit code (SystemExit passes through as a code)."""
    try:
        fn()
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return EXIT_FAILED
    except BaseException as exc:
        if debug:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        lines, code = describe(exc)
        for line in lines:
            print(line, file=sys.stderr)
        return code
    return 0
