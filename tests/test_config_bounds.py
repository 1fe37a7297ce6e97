"""Dangerous values fail `config check` with the key, the bound and the reason."""

from __future__ import annotations

import pytest

from wsgate.config import parse_config
from wsgate.errors import ConfigError, ConfigProblem

ROUTE = """
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
{route}
[[routes.bfx.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"
"""


def only_error(text: str) -> ConfigProblem:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    problems = info.value.problems
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(
    ("table", "line", "path", "message", "reason"),
    [
        (
            "metrics",
            "history_points = 100000000",
            "metrics.history_points",
            "<= 100000",
            "bytes per point",
        ),
        ("metrics", "history_points = 5", "metrics.history_points", ">= 10", "allocated up front"),
        (
            "jobs",
            "alert_check_interval = 0.001",
            "jobs.alert_check_interval",
            ">= 1",
            "burns a core",
        ),
        ("jobs", "health_check_interval = 0", "jobs.health_check_interval", ">= 1", "burns a core"),
        ("jobs", "cleanup_interval = 1e9", "jobs.cleanup_interval", "<= 86400", "once a day"),
        (
            "gateway",
            "max_sessions = 99999999999999999999",
            "gateway.max_sessions",
            "<= 1000000",
            "file descriptor",
        ),
        ("gateway", "max_sessions = 0", "gateway.max_sessions", ">= 1", "file descriptor"),
        (
            "gateway",
            "max_message_bytes = 1099511627776",
            "gateway.max_message_bytes",
            "<= 67108864",
            "into memory",
        ),
        ("daemon", "max_connections = 10000000", "daemon.max_connections", "<= 100000", "socket"),
        (
            "daemon",
            "shutdown_timeout = 100000",
            "daemon.shutdown_timeout",
            "<= 300",
            "TimeoutStopSec",
        ),
    ],
)
def test_value_out_of_bounds_names_key_bound_and_reason(
    table: str, line: str, path: str, message: str, reason: str
) -> None:
    problem = only_error(f"[{table}]\n{line}\n" + ROUTE.format(route=""))
    assert problem.path == path
    assert message in problem.message and problem.line == 2
    assert problem.hint is not None and reason in problem.hint, problem


def test_route_max_sessions_is_bounded_too() -> None:
    problem = only_error(ROUTE.format(route="max_sessions = 99999999999999999999"))
    assert problem.path == "routes.bfx.max_sessions" and "<= 1000000" in problem.message


def test_metrics_listen_on_the_gateway_address_is_refused() -> None:
    for gateway, metrics in (
        ("127.0.0.1:8765", "127.0.0.1:8765"),
        ("0.0.0.0:8765", "127.0.0.1:8765"),
        ("127.0.0.1:9000", "0.0.0.0:9000"),
    ):
        # allow_plaintext: a non-loopback gateway needs TLS or this explicit opt-out.
        text = (
            f'[gateway]\nlisten = "{gateway}"\nallow_plaintext = true\n'
            f'[metrics]\nlisten = "{metrics}"\n'
        )
        problem = only_error(text + ROUTE.format(route=""))
        assert problem.path == "metrics.listen" and problem.line == 5
        assert "gateway.listen" in problem.message and problem.hint
    ok = '[gateway]\nlisten = "127.0.0.1:8765"\n[metrics]\nlisten = "127.0.0.2:8765"\n'
    assert parse_config(ok + ROUTE.format(route="")).metrics.port == 8765


def test_control_socket_longer_than_a_socket_path_can_be() -> None:
    path = "/run/" + "x" * 120 + "/control.sock"
    problem = only_error(f'[daemon]\ncontrol_socket = "{path}"\n' + ROUTE.format(route=""))
    assert problem.path == "daemon.control_socket"
    assert "longer than a Unix socket path can be (107 bytes)" in problem.message
    fits = "/tmp/" + "y" * 90 + ".sock"  # 100 bytes
    cfg = parse_config(f'[daemon]\ncontrol_socket = "{fits}"\n' + ROUTE.format(route=""))
    assert cfg.daemon.control_socket == fits
