"""Readable numbers: every value rounded to what matters, with its unit."""

from __future__ import annotations

from wsgate.core.alerts import AlertInputs, ConnInput, evaluate_rules
from wsgate.core.alerts.rules import DEFAULT_RULES
from wsgate.core.alerts.units import (
    format_duration,
    format_latency,
    format_percent,
    format_rate,
    format_ratio,
    format_value,
    significant,
)
from wsgate.core.types import ConnectionType


def test_significant_digits() -> None:
    assert significant(0.6584360665165441) == "0.66"
    assert significant(12.891086449358525, 3) == "12.9"
    assert significant(1234.5) == "1,234"
    assert significant(0.0) == "0"


def test_units() -> None:
    assert format_duration(0.85) == "850ms"
    assert format_duration(3.24) == "3.2s"
    assert format_duration(250) == "4m 10s"
    assert format_duration(7500) == "2h 5m"
    assert format_latency(0.4123) == "412ms"
    assert format_latency(3.004) == "3.0s"
    assert format_rate(0.6584360665165441) == "0.66 msg/s"
    assert format_rate(12.891086449358525) == "12.9 msg/s"
    assert format_rate(0.2, "errors") == "0.2 errors/s"
    assert format_percent(0.8123) == "81%"
    assert format_percent(0.004) == "0.4%"
    assert format_ratio(19.58) == "20x"
    assert format_ratio(2.43) == "2.4x"


def test_values_read_with_units() -> None:
    assert format_value("high_latency", {}, 0.8123) == "812ms"
    assert format_value("system_health", {"check": "health_score"}, 45.2) == "45 of 100"
    assert format_value("capacity_warning", {"resource": "sessions"}, 0.9) == "90%"
    perf = format_value("performance_degradation", {"metric": "throughput"}, 19.58)
    assert perf == "20x slower"
    assert format_value("connection_failure", {}, None) == "-"


def test_every_summary_is_rounded() -> None:
    c = ConnInput(
        "bfx-1",
        "bfx",
        ConnectionType.MARKET_DATA,
        True,
        latency=0.81234567,
        error_rate=0.123456789,
        msg_rate=0.6584360665165441,
        baseline_rate=12.891086449358525,
        baseline_latency=0.0351234,
        subscriptions=3,
        capacity=25,
        anomaly_rate=True,
    )
    obs = evaluate_rules(AlertInputs(0.0, "n1", (c,)), DEFAULT_RULES)
    text = {(o.alertname, o.labels.get("metric", "")): o.summary for o in obs}
    perf = text[("performance_degradation", "throughput")]
    assert perf == "throughput 0.66 msg/s vs baseline 12.9 msg/s on bfx-1 (bfx)"
    lat = text[("performance_degradation", "latency")]
    assert lat == "latency 812ms vs baseline 35ms on bfx-1 (bfx)"
    assert text[("high_error_rate", "")].startswith("0.12 errors/s on bfx-1")
    assert "3 of 25 subscriptions" in text[("capacity_warning", "")]
    for summary in text.values():
        for token in summary.replace("(", " ").split():
            digits = token.replace(".", "", 1).replace(",", "")
            if digits.isdigit():
                assert len(digits) <= 4, summary  # never 0.6584360665165441
