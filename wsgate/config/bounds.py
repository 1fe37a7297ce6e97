"""Bounds on config values that would hurt at once, each with the reason `config check` gives."""

from __future__ import annotations

from typing import Any

from wsgate.config.locate import Table, short

__all__ = ["BYTES_PER_HISTORY_POINT", "LIMITS", "SUN_PATH_MAX", "bounded", "plain_number"]

# Bounds on values that would hurt at once: each is far past any real need, and its
# reason is the hint of the error, so `config check` says why as well as what.
SUN_PATH_MAX = 107  # bytes of a Unix socket path (108 in sockaddr_un, one for the NUL)
BYTES_PER_HISTORY_POINT = 58  # measured: ~57 KiB per connection at 1000 points
LIMITS: dict[str, tuple[float | None, float | None, str]] = {
    # key: (lowest, highest, why)
    "metrics.history_points": (
        10,
        100_000,
        "history is allocated up front for every upstream connection, about "
        f"{BYTES_PER_HISTORY_POINT} bytes per point (100000 points = 5.5 MiB per connection)",
    ),
    "jobs": (
        1.0,
        86_400.0,
        "a job scores every connection each run: more often than once a second burns a core "
        "for nothing, less often than once a day is never",
    ),
    "gateway.max_sessions": (
        1,
        1_000_000,
        "every session holds a file descriptor and its buffers; the process limit "
        "(LimitNOFILE=65536 in the unit) is far below this",
    ),
    "routes.max_sessions": (1, 1_000_000, "every session holds a file descriptor and buffers"),
    "daemon.max_connections": (
        1,
        100_000,
        "each upstream connection holds a socket, TLS state and its metric history",
    ),
    "gateway.max_message_bytes": (
        1,
        64 * 1024 * 1024,
        "a bot frame is read whole into memory before anything checks it",
    ),
    "gateway.send_buffer_bytes": (
        1,
        256 * 1024 * 1024,
        "this much may be queued for every slow session at once",
    ),
    "max_subscriptions_per_session": (
        1,
        100_000,
        "one session holding this many shared subscriptions fills a route's connections "
        "for every other bot",
    ),
    "daemon.shutdown_timeout": (
        0.1,
        300.0,
        "a stop that takes longer is killed by systemd (TimeoutStopSec) anyway",
    ),
}


def bounded(t: Table, key: str, value: Any, default: Any, limits: str | None = None) -> Any:
    """``value`` if within ``LIMITS``; else a problem that gives the reason, and the default."""
    lo, hi, why = LIMITS[limits or ".".join((*map(str, t.path), key))]
    if value is None or isinstance(value, bool):
        return value
    if lo is not None and value < lo:
        t.problem(key, f"must be >= {plain_number(lo)}, got {short(value)}", why)
        return default
    if hi is not None and value > hi:
        t.problem(key, f"must be <= {plain_number(hi)}, got {short(value)}", why)
        return default
    return value


def plain_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
