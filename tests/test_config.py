"""Config: the sample loads, defaults, every error with its line, diff, masked dump, fuzz."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgate.config import (
    Config,
    ConfigDiff,
    Override,
    config_to_dict,
    config_view,
    diff_config,
    load_config,
    parse_config,
    with_endpoints,
)
from wsgate.config.locate import SourceLocator
from wsgate.core.types import ConnectionType, DialectName, Severity, StrategyName
from wsgate.demo import DEMO_TOML
from wsgate.errors import ConfigError, ConfigProblem

SAMPLE = Path(__file__).resolve().parent.parent / "etc" / "wsgate.toml"

MINIMAL = """\
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
[[routes.bfx.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"
"""


def errors_of(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    assert info.value.filename == "test.toml"
    return info.value.problems


def only_error(text: str) -> ConfigProblem:
    problems = errors_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- the sample -----------------------------------------------------------------------------


def test_sample_loads_with_expected_values() -> None:
    cfg = load_config(SAMPLE)
    assert cfg.source_path == str(SAMPLE)
    assert len(cfg.source_sha256) == 64
    assert cfg.daemon.control_socket == "/run/wsgate/control.sock"
    assert cfg.daemon.state_dir == "/var/lib/wsgate"
    assert cfg.daemon.max_connections == 1000
    assert (cfg.gateway.host, cfg.gateway.port) == ("127.0.0.1", 8765)
    assert cfg.jobs.health_check_interval == 30.0 and cfg.jobs.cleanup_interval == 300.0
    assert cfg.metrics.history_points == 1000 and cfg.metrics.port == 9108
    assert cfg.route_names == ("bitfinex", "bitfinex_auth", "binance")
    bfx = cfg.route("bitfinex")
    assert bfx.strategy is StrategyName.LEAST_LATENCY
    assert bfx.cadence("trades") == 60.0 and bfx.cadence("candles") is None
    auth = cfg.route("bitfinex_auth")
    assert auth.type is ConnectionType.TRADING
    assert (auth.connect_budget.count, auth.connect_budget.per) == (5, 15.0)
    binance = cfg.route("binance")
    assert binance.dialect is DialectName.BINANCE
    assert binance.rest_url == "https://api.binance.com/api/v3"
    assert binance.endpoints[0].url == "wss://stream.binance.com:9443"
    enabled = {c.name for c in cfg.alerts.channels if c.enabled}
    assert enabled == {"log", "console"}
    assert cfg.alerts.channel("webhook").secret_env == "WSGATE_WEBHOOK_SECRET"
    assert cfg.alerts.channel("slack").url_env == "WSGATE_SLACK_URL"
    assert cfg.alerts.channel("discord").url_env == "WSGATE_DISCORD_URL"
    assert cfg.alerts.channel("email").password_env == "WSGATE_SMTP_PASSWORD"
    assert cfg.alerts.rule("frequent_reconnects").severity is Severity.CRITICAL
    assert len(cfg.alerts.rules) == 10
    with pytest.raises(KeyError):
        cfg.route("nope")


def test_load_is_hashable_and_repr_is_informative() -> None:
    cfg = load_config(SAMPLE)
    assert hash(cfg) == hash(load_config(SAMPLE))
    assert "bitfinex_auth" in repr(cfg) and "sha256=" in repr(cfg)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert "cannot read config file" in str(info.value)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[daemon]\nnode_id = "n\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems[0].line == 2


# --- defaults --------------------------------------------------------------------------------


def test_defaults_of_a_minimal_file() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.daemon.node_id == "node-1" and cfg.daemon.log_level == "info"
    assert cfg.gateway.listen == "127.0.0.1:8765" and cfg.gateway.slow_consumer_close_code == 1013
    assert cfg.gateway.origins == () and cfg.gateway.linger == 30.0
    assert cfg.metrics.enabled and cfg.metrics.history_retention == 604800.0
    route = cfg.route("bfx")
    assert route.strategy is StrategyName.ADAPTIVE
    assert route.max_subscriptions_per_connection == 25
    assert (route.connect_budget.count, route.connect_budget.per) == (20, 60.0)
    assert (route.message_budget.count, route.message_budget.per) == (10, 1.0)
    assert route.max_lifetime is None and route.tls.verify
    assert route.endpoints[0].name == "api-pub.bitfinex.com:443"
    assert cfg.alerts.channels == ()
    latency = cfg.alerts.rule("high_latency")
    assert (latency.fire, latency.clear, latency.pending_samples, latency.window) == (
        0.5,
        0.3,
        3,
        5,
    )
    assert not cfg.alerts.rule("system_health").fires_above
    assert cfg.source_path is None and len(cfg.source_sha256) == 64


def test_dialect_defaults_for_binance_and_raw() -> None:
    cfg = parse_config(
        """
[routes.bn]
dialect = "binance"
type = "market_data"
endpoints = [{ url = "wss://stream.binance.com:9443" }]
[routes.r]
dialect = "raw"
type = "system"
[[routes.r.endpoints]]
url = "ws://127.0.0.1:9000/feed"
[[routes.r.endpoints]]
url = "ws://127.0.0.1:9000/other"
"""
    )
    bn = cfg.route("bn")
    assert bn.max_subscriptions_per_connection == 1024 and bn.max_lifetime == 86100.0
    assert (bn.connect_budget.count, bn.connect_budget.per) == (300, 300.0)
    assert bn.message_budget.count == 5
    raw = cfg.route("r")
    assert raw.max_subscriptions_per_connection == 1 and raw.message_budget.count == 50
    # Two endpoints on one host:port: the default names are made unique by index.
    assert [e.name for e in raw.endpoints] == ["127.0.0.1:9000#0", "127.0.0.1:9000#1"]


def test_listen_forms() -> None:
    cfg = parse_config(MINIMAL + '[gateway]\nlisten = "[::1]:0"\n[metrics]\nlisten = ""\n')
    assert (cfg.gateway.host, cfg.gateway.port) == ("::1", 0)
    assert not cfg.metrics.enabled and cfg.metrics.port == 0


def test_channel_kind_defaults_to_table_name() -> None:
    cfg = parse_config(
        MINIMAL
        + """
[alerts.channels.slack]
enabled = true
url_env = "SLACK_URL"
[alerts.channels.pager]
kind = "webhook"
url = "https://hooks.example.com/x"
matchers = { route = "bfx" }
"""
    )
    assert cfg.alerts.channel("slack").kind == "slack"
    pager = cfg.alerts.channel("pager")
    assert pager.kind == "webhook" and pager.matchers == (("route", "bfx"),)


# --- errors with exact lines -----------------------------------------------------------------


def test_malformed_toml_reports_its_line() -> None:
    p = only_error('[daemon]\nnode_id = "a"\nmax_connections = \n')
    assert p.line == 3 and "invalid TOML" in p.message and p.hint and "column" in p.hint


def test_duplicate_route_table_is_clear() -> None:
    p = only_error(MINIMAL + '[routes.bfx]\ndialect = "raw"\n')
    assert p.line == 6 and p.path == "routes.bfx" and "declared twice" in p.message


def test_wrong_type_names_expected_and_got() -> None:
    p = only_error('[daemon]\nnode_id = "x"\nmax_connections = "many"\n' + MINIMAL)
    assert p.path == "daemon.max_connections" and p.line == 3
    assert p.message == "expected integer, got string 'many'"


def test_unknown_key_with_did_you_mean() -> None:
    p = only_error(MINIMAL.replace('type = "market_data"', 'type = "market_data"\nstrategyy = "x"'))
    assert p.path == "routes.bfx.strategyy" and p.line == 4
    assert p.hint == "did you mean 'strategy'?"


def test_bad_url_names_the_endpoint_index() -> None:
    text = MINIMAL + '[[routes.bfx.endpoints]]\nname = "b"\nurl = "htps://api.bitfinex.com/ws/2"\n'
    p = only_error(text)
    assert p.path == "routes.bfx.endpoints[1].url" and p.line == 8
    assert p.message == "expected ws:// or wss:// URL, got 'htps://api.bitfinex.com/ws/2'"
    assert str(p.line) in ConfigError([p], "f.toml").args[0]


def test_strategy_typo() -> None:
    p = only_error(
        MINIMAL.replace('type = "market_data"', 'type = "market_data"\nstrategy = "least_latncy"')
    )
    assert p.path == "routes.bfx.strategy" and p.line == 4
    assert p.hint == "did you mean 'least_latency'?"


def test_min_connections_above_max() -> None:
    text = MINIMAL.replace(
        'type = "market_data"\n', 'type = "market_data"\nmin_connections = 5\nmax_connections = 2\n'
    )
    p = only_error(text)
    assert p.path == "routes.bfx.min_connections" and p.line == 4
    assert "must be <= max_connections (2)" in p.message


def test_relay_routes_keep_no_pool() -> None:
    """A raw route relays each session on its own upstream: min_connections defaults to 0
    and an explicit one is refused with the fix (the Binance private routes alike)."""
    raw = MINIMAL.replace('"bitfinex"', '"raw"')
    assert parse_config(raw).routes[0].min_connections == 0
    p = only_error(
        raw.replace('type = "market_data"\n', 'type = "market_data"\nmin_connections = 1\n')
    )
    assert p.path == "routes.bfx.min_connections" and p.line == 4
    assert "min_connections does not apply" in p.message and "raw route" in p.message
    assert p.hint is not None and "max_connections caps the concurrent sessions" in p.hint
    user = MINIMAL.replace('"bitfinex"', '"binance"').replace("market_data", "user_data")
    p = only_error(
        user.replace('type = "user_data"\n', 'type = "user_data"\nmin_connections = 2\n')
    )
    assert p.path == "routes.bfx.min_connections" and "binance user_data route" in p.message
    # Shared routes keep their warm pool.
    assert parse_config(MINIMAL).routes[0].min_connections == 1


def test_missing_endpoints_points_at_the_route_header() -> None:
    p = only_error('[daemon]\nnode_id = "n"\n\n[routes.x]\ndialect = "raw"\ntype = "system"\n')
    assert p.path == "routes.x.endpoints" and p.line == 4
    assert "at least one endpoint" in p.message


def test_enabled_email_without_host() -> None:
    text = MINIMAL + (
        "[alerts.channels.email]\n"
        "enabled = true\n"
        'from_addr = "a@example.com"\n'
        'to_addrs = ["b@example.com"]\n'
    )
    p = only_error(text)
    assert p.path == "alerts.channels.email" and p.line == 6
    assert p.message == "enabled email channel needs smtp_host"


def test_duplicate_endpoint_names() -> None:
    text = MINIMAL.replace('url = "wss', 'name = "a"\nurl = "wss') + (
        '[[routes.bfx.endpoints]]\nname = "a"\nurl = "wss://mirror.example.com/ws/2"\n'
    )
    p = only_error(text)
    assert p.path == "routes.bfx.endpoints[1].name" and p.line == 8
    assert "duplicate endpoint name 'a'" in p.message


def test_key_of_another_channel_kind_is_named() -> None:
    p = only_error(MINIMAL + '[alerts.channels.slack]\nsmtp_host = "mail"\n')
    assert p.line == 7 and p.message == "'smtp_host' does not apply to a 'slack' channel"


def test_authenticated_binance_route_is_a_relay_route_without_pooled_probes() -> None:
    cfg = parse_config(MINIMAL.replace('"bitfinex"', '"binance"').replace("market_data", "trading"))
    assert cfg.routes[0].type is ConnectionType.TRADING and cfg.routes[0].min_connections == 0


def test_unknown_rule_type_and_bad_hysteresis() -> None:
    problems = errors_of(
        MINIMAL
        + "[alerts.rules.high_latancy]\nfire = 1\n"
        + "[alerts.rules.system_health]\nfire = 70\nclear = 60\n"
    )
    assert [(p.path, p.line) for p in problems] == [
        ("alerts.rules.high_latancy", 6),
        ("alerts.rules.system_health.clear", 10),
    ]
    assert problems[0].hint == "did you mean 'high_latency'?"


def test_several_errors_reported_at_once_in_line_order() -> None:
    text = """\
[daemon]
max_connections = 5
log_level = "verbose"

[gateway]
listen = "localhost"
slow_consumer_close_code = 1000

[jobs]
health_check_interval = -1

[routes.a]
dialect = "bitfinex"
type = "market_data"
max_connections = 6
[[routes.a.endpoints]]
url = "http://x"
weight = -2
"""
    problems = errors_of(text)
    got = [(p.path, p.line) for p in problems]
    assert got == [
        ("daemon.log_level", 3),
        ("gateway.listen", 6),
        ("gateway.slow_consumer_close_code", 7),
        ("jobs.health_check_interval", 10),
        ("routes.a.max_connections", 15),
        ("routes.a.endpoints[0].url", 17),
        ("routes.a.endpoints[0].weight", 18),
    ]
    rendered = str(ConfigError(problems, "w.toml"))
    assert "7 config error(s)" in rendered and "w.toml:17: routes.a.endpoints[0].url" in rendered


def test_no_routes_is_an_error() -> None:
    p = only_error('[daemon]\nnode_id = "n"\n')
    assert p.path == "routes" and "missing required key" in p.message


def test_locator_counts_array_indices_and_dotted_keys() -> None:
    loc = SourceLocator(
        '[a]\nx.y = 1\n[[a.b]]\nk = 1\n[[a.b]]\nk = 2\n[a.b.c]\nz = "[not a header]"\n'
    )
    assert loc.line_of(("a", "x", "y")) == 2
    assert loc.line_of(("a", "b", 1, "k")) == 6
    assert loc.line_of(("a", "b", 1, "c", "z")) == 8
    assert loc.line_of(("a", "b", 0, "missing")) == 3
    assert loc.line_of(("nowhere",)) is None


# --- diff ------------------------------------------------------------------------------------


def test_diff_of_the_same_file_is_empty() -> None:
    a, b = load_config(SAMPLE), load_config(SAMPLE)
    diff = diff_config(a, b)
    assert diff.empty and diff == ConfigDiff() and diff.summary() == ["no changes"]


def test_diff_routes_jobs_and_restart_keys() -> None:
    old = load_config(SAMPLE)
    text = SAMPLE.read_text()
    text = text.replace("[routes.bitfinex_auth]", "[routes.kraken]", 1)
    text = text.replace("[[routes.bitfinex_auth.endpoints]]", "[[routes.kraken.endpoints]]")
    text = text.replace("stale_after = 20\n", "stale_after = 25\n", 1)
    text = text.replace("analytics_interval = 60", "analytics_interval = 90")
    text = text.replace('listen = "127.0.0.1:8765"', 'listen = "127.0.0.1:8766"')
    text = text.replace("max_sessions = 10000", "max_sessions = 500")
    text = text.replace(
        "[alerts.channels.console]\nenabled = true", "[alerts.channels.console]\nenabled = false"
    )
    new = parse_config(text)
    diff = diff_config(old, new)
    assert diff.routes_added == ("kraken",)
    assert diff.routes_removed == ("bitfinex_auth",)
    assert diff.routes_changed == ("bitfinex",)
    assert diff.jobs_changed == ("analytics",)
    assert diff.restart_required == ("gateway.listen",)
    assert diff.gateway_changed == ("max_sessions",)
    assert diff.channels_changed == ("console",)
    assert not diff.alerts_changed and not diff.metrics_changed and not diff.empty
    summary = diff.summary()
    assert "route added: kraken" in summary
    assert "gateway.listen changed: takes effect only after a restart" in summary


def test_diff_alert_rules_and_metrics() -> None:
    old = parse_config(MINIMAL)
    new = parse_config(
        MINIMAL + "[metrics]\nhistory_points = 50\n[alerts.rules.system_health]\nfire = 50\n"
    )
    diff = diff_config(old, new)
    assert diff.alerts_changed and diff.metrics_changed
    assert diff.restart_required == () and diff.routes_changed == ()


# --- dump and demo rewrite --------------------------------------------------------------------


def test_config_to_dict_masks_secrets_and_is_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGATE_SLACK_URL", "https://hooks.slack.com/services/T/B/s3cr3tvalue")
    monkeypatch.delenv("WSGATE_WEBHOOK_SECRET", raising=False)
    text = (
        SAMPLE.read_text()
        .replace(
            'url = "https://example.invalid/hook"',
            'url = "https://u:pw@example.invalid/hook?t=tk9z"',
        )
        .replace(
            'url_env = "WSGATE_DISCORD_URL"', 'url = "https://discord.com/api/webhooks/1/tk9z"'
        )
    )
    cfg = parse_config(text)
    dumped = config_to_dict(cfg)
    encoded = json.dumps(dumped)
    assert "s3cr3tvalue" not in encoded and "pw@" not in encoded and "tk9z" not in encoded
    channels = dumped["alerts"]["channels"]
    assert channels["slack"]["url_env"] == "WSGATE_SLACK_URL"
    assert channels["webhook"]["secret_env"] == "WSGATE_WEBHOOK_SECRET"
    assert channels["discord"]["url"] == "https://discord.com/***"
    assert channels["webhook"]["url"] == "https://***@example.invalid/hook?***"
    assert dumped["routes"]["bitfinex"]["strategy"] == "least_latency"
    assert dumped["routes"]["bitfinex"]["channel_cadence"]["trades"] == 60.0
    assert dumped["gateway"]["listen"] == "127.0.0.1:8765"
    view = config_view(cfg)
    env = {e["name"]: e["set"] for e in view["environment"]}
    assert env["WSGATE_SLACK_URL"] is True and env["WSGATE_WEBHOOK_SECRET"] is False
    assert "s3cr3tvalue" not in json.dumps(view)
    raw = config_to_dict(cfg, mask_secrets=False)
    assert raw["alerts"]["channels"]["discord"]["url"] == "https://discord.com/api/webhooks/1/tk9z"
    assert "hooks.slack.com" not in json.dumps(raw)  # env values are never read out


def _effective(cfg: Config) -> Config:
    return dataclasses.replace(cfg, source_path=None, source_sha256="", overrides=())


def test_config_show_output_is_valid_input_with_the_same_effective_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tomli_w

    monkeypatch.setenv("WSGATE_JOBS_CLEANUP_INTERVAL", "2m")
    text = SAMPLE.read_text().replace(
        'url_env = "WSGATE_DISCORD_URL"', 'url = "https://discord.com/api/webhooks/1/tk9z"'
    )
    cfg = parse_config(text)
    assert cfg.jobs.cleanup_interval == 120.0
    assert cfg.overrides == (("jobs.cleanup_interval", "$WSGATE_JOBS_CLEANUP_INTERVAL"),)
    monkeypatch.delenv("WSGATE_JOBS_CLEANUP_INTERVAL")
    # Unmasked: the very same config.
    again = parse_config(tomli_w.dumps(config_to_dict(cfg, mask_secrets=False)))
    assert _effective(again) == _effective(cfg)
    # Masked: still valid input; only the secret itself differs.
    masked = parse_config(tomli_w.dumps(config_to_dict(cfg)))
    assert masked.alerts.channel("discord").url == "https://discord.com/***"
    assert config_to_dict(masked) == config_to_dict(cfg)
    # Demo and minimal configs too (defaults that depend on others: lifetime, budgets).
    for source in (DEMO_TOML, MINIMAL):
        first = parse_config(source)
        assert _effective(parse_config(tomli_w.dumps(config_to_dict(first)))) == _effective(first)


def test_durations_accept_units_everywhere() -> None:
    cfg = parse_config(
        MINIMAL.replace(
            "[[routes.bfx.endpoints]]",
            'stale_after = "2m"\nmax_lifetime = "1h"\n'
            '[routes.bfx.channel_cadence]\ntrades = "90s"\n[[routes.bfx.endpoints]]',
        )
        + '[daemon]\nshutdown_timeout = "500ms"\n[jobs]\ncleanup_interval = "1h"\n'
        '[alerts]\ngroup_wait = "30s"\n[alerts.rules.high_latency]\nkeep_firing_for = "2m"\n'
    )
    route = cfg.routes[0]
    assert (route.stale_after, route.max_lifetime, route.cadence("trades")) == (120, 3600, 90)
    assert cfg.daemon.shutdown_timeout == 0.5 and cfg.jobs.cleanup_interval == 3600
    assert cfg.alerts.group_wait == 30 and cfg.alerts.rule("high_latency").keep_firing_for == 120
    problems = errors_of(MINIMAL + '[jobs]\ncleanup_interval = "soon"\n')
    assert [p.path for p in problems] == ["jobs.cleanup_interval"]
    assert "45s, 15m, 2h" in problems[0].message


def test_environment_overrides_precedence_and_secret_names() -> None:
    env = {
        "WSGATE_GATEWAY_LISTEN": "127.0.0.1:9001",
        "WSGATE_DAEMON_LOG_LEVEL": "debug",
        "WSGATE_GATEWAY_ORIGINS": '["https://a.example"]',
        "WSGATE_METRICS_PER_MESSAGE": "false",
    }
    flag = Override("gateway.listen", "127.0.0.1:9002", "--listen")
    cfg = parse_config(MINIMAL, environ=env, overrides=[flag])
    assert cfg.gateway.listen == "127.0.0.1:9002"  # flag > environment
    assert cfg.daemon.log_level == "debug" and cfg.gateway.origins == ("https://a.example",)
    assert cfg.metrics.per_message is False
    assert dict(cfg.overrides)["gateway.listen"] == "--listen"
    assert dict(cfg.overrides)["daemon.log_level"] == "$WSGATE_DAEMON_LOG_LEVEL"
    # A variable the config names as a secret source is never an override.
    secret = MINIMAL + '[gateway]\nevents_token_env = "WSGATE_GATEWAY_TOKEN"\n'
    assert parse_config(secret, environ={"WSGATE_GATEWAY_TOKEN": "x"}).overrides == ()
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL, environ={"WSGATE_GATEWAY_TOKEN": "x"})
    assert err.value.problems[0].path == "gateway.token"


def test_with_endpoints_replaces_only_named_routes() -> None:
    cfg = load_config(SAMPLE)
    demo = with_endpoints(cfg, {"binance": ["ws://127.0.0.1:4001", "ws://127.0.0.1:4002"]})
    assert [e.url for e in demo.route("binance").endpoints] == [
        "ws://127.0.0.1:4001",
        "ws://127.0.0.1:4002",
    ]
    assert all(e.weight == 1 for e in demo.route("binance").endpoints)
    assert demo.route("bitfinex") == cfg.route("bitfinex")
    assert dataclasses.replace(demo.route("binance"), endpoints=()) == dataclasses.replace(
        cfg.route("binance"), endpoints=()
    )
    assert diff_config(cfg, demo).routes_changed == ("binance",)
    with pytest.raises(ConfigError):
        with_endpoints(cfg, {"binance": ["http://127.0.0.1:1"]})
    with pytest.raises(KeyError):
        with_endpoints(cfg, {"nope": ["ws://127.0.0.1:1"]})


# --- fuzz ---------------------------------------------------------------------------------------

_SAMPLE_LINES = SAMPLE.read_text().splitlines(keepends=True)
_ALPHABET = st.sampled_from(list("[]=\"'.#,{}0123456789-_abcxyz \n\tinfrouteslwss:/"))


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    lines = list(_SAMPLE_LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["del_line", "dup_line", "del_char", "ins_char", "swap_char"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "del_line":
            del lines[i]
        elif op == "dup_line":
            lines.insert(draw(st.integers(0, len(lines))), line)
        else:
            j = draw(st.integers(0, max(len(line) - 1, 0)))
            ch = draw(_ALPHABET)
            if op == "del_char":
                lines[i] = line[:j] + line[j + 1 :]
            elif op == "ins_char":
                lines[i] = line[:j] + ch + line[j:]
            else:
                lines[i] = line[:j] + ch + line[j + 1 :]
        if not lines:
            break
    return "".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_sample())
def test_mutated_sample_parses_or_raises_config_error(text: str) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.path and problem.message
            assert problem.line is None or 1 <= problem.line <= text.count("\n") + 1
    else:
        assert isinstance(cfg, Config) and cfg.routes
        json.dumps(config_to_dict(cfg))


def test_sample_loads_without_any_secret_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WSGATE_SLACK_URL", "WSGATE_DISCORD_URL", "WSGATE_SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    cfg = load_config(SAMPLE)
    assert cfg.alerts.channel("email").smtp_port == 587
    env = {e["name"]: e["set"] for e in config_view(cfg)["environment"]}
    assert env["WSGATE_SLACK_URL"] is False


def test_bad_email_addresses_are_indexed() -> None:
    problems = errors_of(
        MINIMAL + '[alerts.channels.email]\nfrom_addr = "nobody"\nto_addrs = ["a@b", "c"]\n'
    )
    assert [(p.path, p.line) for p in problems] == [
        ("alerts.channels.email.from_addr", 7),
        ("alerts.channels.email.to_addrs[1]", 8),
    ]


def test_alert_rule_params_validated_with_did_you_mean() -> None:
    text = (
        SAMPLE_MINIMAL_FOR_PARAMS
        + "[alerts.rules.anomaly_detected.params]\nwarmup = 5\nwramup = 3\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    (problem,) = exc.value.problems
    assert problem.path == "alerts.rules.anomaly_detected.params.wramup"
    assert problem.hint is not None and "warmup" in problem.hint
    assert problem.line == text.splitlines().index("wramup = 3") + 1
    cfg = parse_config(text.replace("wramup = 3\n", ""))
    assert cfg.alerts.rule("anomaly_detected").params == (("warmup", 5.0),)


SAMPLE_MINIMAL_FOR_PARAMS = """
[routes.r]
dialect = "raw"
type = "market_data"
[[routes.r.endpoints]]
url = "ws://127.0.0.1:1"
"""


def test_environment_overrides_reach_routes_channels_and_rules() -> None:
    env = {
        "WSGATE_ROUTES_BITFINEX_AUTH_STRATEGY": "round_robin",  # a name with an underscore
        "WSGATE_ROUTES_BINANCE_TLS_VERIFY": "false",
        "WSGATE_ROUTES_BINANCE_CONNECT_BUDGET_COUNT": "7",
        "WSGATE_ROUTES_BINANCE_STALE_AFTER": "45s",
        "WSGATE_ALERTS_CHANNELS_LOG_ENABLED": "false",
        "WSGATE_ALERTS_RULES_HIGH_LATENCY_FIRE": "0.9",
    }
    cfg = load_config(SAMPLE, environ=env)
    assert cfg.route("bitfinex_auth").strategy is StrategyName.ROUND_ROBIN
    assert cfg.route("bitfinex").strategy is StrategyName.LEAST_LATENCY
    binance = cfg.route("binance")
    assert binance.tls.verify is False and binance.connect_budget.count == 7
    assert binance.stale_after == 45.0
    assert cfg.alerts.channel("log").enabled is False
    assert cfg.alerts.rule("high_latency").fire == 0.9
    assert dict(cfg.overrides)["routes.bitfinex_auth.strategy"] == (
        "$WSGATE_ROUTES_BITFINEX_AUTH_STRATEGY"
    )
    with pytest.raises(ConfigError) as err:
        load_config(SAMPLE, environ={"WSGATE_ROUTES_NOPE_STRATEGY": "round_robin"})
    assert "$WSGATE_ROUTES_NOPE_STRATEGY" in str(err.value)  # never creates a route


def test_an_unset_key_takes_the_schema_default_everywhere() -> None:
    """Defaults are written once (config_schema's dataclasses); the parser derives them."""
    import dataclasses as dc

    from wsgate.config import DaemonConfig, GatewayConfig, JobsConfig, MetricsConfig, RouteConfig

    cfg = parse_config(
        '[routes.r]\ndialect = "bitfinex"\ntype = "market_data"\n'
        '[[routes.r.endpoints]]\nurl = "wss://api-pub.bitfinex.com/ws/2"\n'
    )
    sections = [
        (cfg.daemon, DaemonConfig),
        (cfg.gateway, GatewayConfig),
        (cfg.jobs, JobsConfig),
        (cfg.metrics, MetricsConfig),
        (cfg.routes[0], RouteConfig),
    ]
    for built, cls in sections:
        for f in dc.fields(cls):
            if f.default is dc.MISSING:
                continue
            assert getattr(built, f.name) == f.default, f"{cls.__name__}.{f.name}"
