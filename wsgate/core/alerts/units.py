"""Numbers as an on-call reads them: rounded to what matters, always with a unit.

Every alert summary and every rendered ``value`` goes through these helpers, so the same
quantity reads the same in the CLI, the log line, a webhook, Slack, Discord and email:
``412ms``, ``3.2s``, ``4m 10s``, ``0.66 msg/s``, ``12.9 msg/s``, ``81%``, ``2.4x``,
``3 of 5 checks``. Pure functions of their arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "format_count",
    "format_duration",
    "format_latency",
    "format_percent",
    "format_rate",
    "format_ratio",
    "format_value",
    "significant",
]


def significant(x: float, digits: int = 2) -> str:
    """``x`` with about ``digits`` significant digits, never in exponent form, no trailing 0s.

    Large numbers keep their integer digits (``1234`` stays ``1234``, with a thousands
    separator: ``1,234``).
    """
    if not math.isfinite(x):
        return "∞" if x > 0 else ("-∞" if x < 0 else "?")
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    if decimals == 0:
        return f"{round(x):,}"
    text = f"{x:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_duration(seconds: float) -> str:
    """``850ms``, ``3.2s``, ``45s``, ``4m 10s``, ``2h 5m``, ``3d 4h``."""
    if not math.isfinite(seconds):
        return "∞"
    s = max(0.0, seconds)
    if s < 1:
        return f"{round(s * 1000)}ms"
    if s < 10:
        return f"{significant(s, 2)}s"
    if s < 60:
        return f"{round(s)}s"
    if s < 3600:
        m, rest = divmod(round(s), 60)
        return f"{m}m {rest}s" if rest else f"{m}m"
    if s < 86400:
        h, rest = divmod(round(s / 60), 60)
        return f"{h}h {rest}m" if rest else f"{h}h"
    d, rest = divmod(round(s / 3600), 24)
    return f"{d}d {rest}h" if rest else f"{d}d"


def format_latency(seconds: float) -> str:
    """Latencies in ms below 10 s (``412ms``, ``3004ms`` reads worse than ``3.0s``: 1 s up)."""
    if not math.isfinite(seconds):
        return "∞"
    if seconds < 1:
        return f"{significant(seconds * 1000, 2) if seconds < 0.01 else round(seconds * 1000)}ms"
    return f"{seconds:.1f}s"


def format_rate(per_second: float, unit: str = "msg") -> str:
    """``0.66 msg/s``, ``12.9 msg/s``, ``1,234 msg/s``."""
    if per_second >= 100:
        return f"{round(per_second):,} {unit}/s"
    return f"{significant(per_second, 2 if per_second < 1 else 3)} {unit}/s"


def format_percent(fraction: float) -> str:
    """``81%``; below 1% one decimal (``0.4%``), so a small share does not read as 0."""
    pct = fraction * 100
    if 0 < abs(pct) < 1:
        return f"{pct:.1f}%"
    return f"{round(pct)}%"


def format_ratio(ratio: float) -> str:
    """``2.4x``, ``12x``, ``≥1000000x`` for the capped value."""
    if ratio >= 1e6:
        return "≥1000000x"
    return f"{significant(ratio, 2)}x"


def format_count(n: int, of: int, noun: str) -> str:
    """``3 of 5 checks``."""
    return f"{n} of {of} {noun}"


# How each alert type's ``value`` reads; the key is (alertname, metric/check/resource label).
def format_value(alertname: str, labels: Mapping[str, str], value: float | None) -> str:
    """An alert's value with its unit, for tables and notifications ("-" when unknown)."""
    if value is None or not math.isfinite(value):
        return "-" if value is None else format_ratio(value)
    if alertname == "connection_failure":
        return format_duration(value)
    if alertname == "high_latency":
        return format_latency(value)
    if alertname == "high_error_rate":
        return format_rate(value, "errors")
    if alertname == "frequent_reconnects":
        return f"{round(value)} in 10m"
    if alertname == "load_balancer_issue":
        issue = labels.get("issue", "")
        if issue == "imbalance":
            return format_ratio(value)
        if issue == "no_candidate":
            return f"{round(value)} placements"
        return "engaged" if value else "off"
    if alertname == "cluster_node_down":
        if labels.get("check") == "job":
            return f"{round(value)} missed runs"
        return f"{format_duration(value)} since its last heartbeat"
    if alertname == "performance_degradation":
        slower = labels.get("metric") == "throughput"
        return f"{format_ratio(value)} {'slower' if slower else 'the baseline'}"
    if alertname == "capacity_warning":
        return format_percent(value)
    if alertname == "anomaly_detected":
        return "anomalous" if value else "normal"
    if alertname == "system_health":
        check = labels.get("check", "")
        if check == "health_score":
            return f"{round(value)} of 100"
        if check == "loop_lag":
            return format_latency(value)
        if check == "job_failures":
            return f"{round(value)} failures"
        if check == "missed_runs" or check == "job":
            return f"{round(value)} missed runs"
    return significant(value, 3)
