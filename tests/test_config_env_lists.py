"""List-valued keys from the environment: a TOML/JSON array or comma-separated items.

``WSGATE_CLUSTER_SERVERS``, ``WSGATE_GATEWAY_ORIGINS``, an alert channel's ``to_addrs``, a
route's ``endpoints`` and ``gateway.clients`` (arrays of inline tables). The list replaces
the file's; precedence stays flag > environment > file > default; every problem names the
variable and says how to write it, never a line of the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomli
import tomli_w

from wsgate.config import Override, config_view, load_config, parse_config
from wsgate.config.dump import config_to_dict
from wsgate.errors import ConfigError, ConfigProblem

SAMPLE = Path(__file__).resolve().parent.parent / "etc" / "wsgate.toml"

FILE = """\
[cluster]
engine = "nats"
servers = ["nats://file:4222"]
[routes.bn]
dialect = "binance"
type = "market_data"
[[routes.bn.endpoints]]
url = "wss://stream.binance.com:9443"
"""


def problems(env: dict[str, str], text: str = FILE) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", environ=env)
    return info.value.problems


@pytest.mark.parametrize(
    "raw",
    [
        '["nats://a:4222", "nats://b:4222"]',  # TOML
        '["nats://a:4222","nats://b:4222"]',  # JSON (and TOML)
        '[\n  "nats://a:4222",\n  "nats://b:4222",\n]',  # TOML, trailing comma
        "nats://a:4222,nats://b:4222",
        " nats://a:4222 , nats://b:4222 ",
    ],
)
def test_a_list_of_strings_in_every_documented_form(raw: str) -> None:
    cfg = parse_config(FILE, environ={"WSGATE_CLUSTER_SERVERS": raw})
    assert cfg.cluster.servers == ("nats://a:4222", "nats://b:4222")  # the file's is replaced
    assert dict(cfg.overrides)["cluster.servers"] == "$WSGATE_CLUSTER_SERVERS"


def test_one_item_an_empty_value_and_json_escapes() -> None:
    cfg = parse_config(FILE, environ={"WSGATE_CLUSTER_SERVERS": "nats://only:4222"})
    assert cfg.cluster.servers == ("nats://only:4222",)
    cfg = parse_config(FILE, environ={"WSGATE_GATEWAY_ORIGINS": ""})
    assert cfg.gateway.origins == ()  # an empty value is an empty list
    escaped = '["https:\\/\\/a.example"]'  # JSON may escape "/", TOML may not
    cfg = parse_config(FILE, environ={"WSGATE_GATEWAY_ORIGINS": escaped})
    assert cfg.gateway.origins == ("https://a.example",)


def test_precedence_flag_then_environment_then_file_then_default() -> None:
    assert parse_config(FILE).cluster.servers == ("nats://file:4222",)
    no_servers = FILE.replace('servers = ["nats://file:4222"]\n', "")
    assert parse_config(no_servers).cluster.servers == ("nats://127.0.0.1:4222",)
    env = {"WSGATE_CLUSTER_SERVERS": "nats://env:4222"}
    assert parse_config(FILE, environ=env).cluster.servers == ("nats://env:4222",)
    flag = Override("cluster.servers", "nats://flag:4222,nats://flag2:4222", "--servers")
    cfg = parse_config(FILE, environ=env, overrides=[flag])
    assert cfg.cluster.servers == ("nats://flag:4222", "nats://flag2:4222")
    assert dict(cfg.overrides)["cluster.servers"] == "--servers"


def test_an_unreadable_list_names_the_variable_and_the_two_forms() -> None:
    (p,) = problems({"WSGATE_CLUSTER_SERVERS": '["nats://a:4222"'})
    assert p.path == "cluster.servers" and p.line is None
    assert p.message.startswith("$WSGATE_CLUSTER_SERVERS: '[\"nats://a:4222\"' is not a TOML")
    assert p.hint == (
        'write a TOML or JSON array, e.g. WSGATE_CLUSTER_SERVERS=\'["x", "y"]\', '
        "or a comma-separated list, WSGATE_CLUSTER_SERVERS=x,y"
    )
    (p,) = problems({"WSGATE_CLUSTER_SERVERS": "nats://a:4222,,nats://b:4222"})
    assert "$WSGATE_CLUSTER_SERVERS: an empty item in the comma-separated list" in p.message
    assert p.hint is not None and "WSGATE_CLUSTER_SERVERS=x,y" in p.hint


def test_a_bad_item_is_blamed_on_the_variable_not_on_a_line() -> None:
    found = problems({"WSGATE_CLUSTER_SERVERS": '[1, "htps://b"]'})
    assert [(p.path, p.line, p.hint) for p in found] == [
        ("cluster.servers[0]", None, "set by $WSGATE_CLUSTER_SERVERS"),
        ("cluster.servers[1]", None, "set by $WSGATE_CLUSTER_SERVERS"),
    ]
    assert "got integer 1" in found[0].message and "'htps://b'" in found[1].message
    assert found[0].render("t.toml").startswith("t.toml: cluster.servers[0]: ")  # no line


def test_endpoints_take_an_array_of_inline_tables_toml_or_json() -> None:
    for raw in (
        '[{url = "wss://a.example:9443"}, {url = "wss://b.example:9443", weight = 3}]',
        '[{"url": "wss://a.example:9443"}, {"url": "wss://b.example:9443", "weight": 3}]',
    ):
        cfg = parse_config(FILE, environ={"WSGATE_ROUTES_BN_ENDPOINTS": raw})
        eps = cfg.route("bn").endpoints
        assert [(e.url, e.weight) for e in eps] == [
            ("wss://a.example:9443", 1),
            ("wss://b.example:9443", 3),
        ]
        assert dict(cfg.overrides)["routes.bn.endpoints"] == "$WSGATE_ROUTES_BN_ENDPOINTS"
    (p,) = problems({"WSGATE_ROUTES_BN_ENDPOINTS": "wss://a.example:9443"})
    assert p.path == "routes.bn.endpoints" and "expected an array of tables" in p.message
    assert p.hint is not None and "WSGATE_ROUTES_BN_ENDPOINTS='[{url = " in p.hint
    (p,) = problems({"WSGATE_ROUTES_BN_ENDPOINTS": '[{url = "htps://x"}]'})
    assert (p.path, p.line) == ("routes.bn.endpoints[0].url", None)
    assert p.hint is not None and p.hint.endswith("set by $WSGATE_ROUTES_BN_ENDPOINTS")
    (p,) = problems({"WSGATE_ROUTES_BN_ENDPOINTS": "[]"})
    assert p.path == "routes.bn.endpoints" and p.hint and "$WSGATE_ROUTES_BN_ENDPOINTS" in p.hint


def test_an_alert_channels_address_list() -> None:
    env = {"WSGATE_ALERTS_CHANNELS_EMAIL_TO_ADDRS": "ops@example.com, oncall@example.com"}
    cfg = load_config(SAMPLE, environ=env)
    assert cfg.alerts.channel("email").to_addrs == ("ops@example.com", "oncall@example.com")


def test_clients_from_the_environment_and_their_token_variables_stay_secrets() -> None:
    clients = '[{name = "alpha", token_env = "WSGATE_CLUSTER_ALPHA_TOKEN"}]'
    env = {"WSGATE_GATEWAY_CLIENTS": clients, "WSGATE_CLUSTER_ALPHA_TOKEN": "s3cret"}
    cfg = parse_config(FILE, environ=env)
    assert [(c.name, c.token_env) for c in cfg.gateway.clients] == [
        ("alpha", "WSGATE_CLUSTER_ALPHA_TOKEN")
    ]
    # The token's variable looks like a [cluster] override; it is a secret source, not one.
    assert dict(cfg.overrides) == {"gateway.clients": "$WSGATE_GATEWAY_CLIENTS"}


def test_config_show_names_the_source_and_is_valid_input_with_the_same_config() -> None:
    env = {
        "WSGATE_CLUSTER_SERVERS": "nats://a:4222,nats://b:4222",
        "WSGATE_ROUTES_BN_ENDPOINTS": '[{url = "wss://a.example:9443"}]',
    }
    cfg = parse_config(FILE, environ=env)
    view = config_view(cfg)
    assert {"key": "cluster.servers", "source": "$WSGATE_CLUSTER_SERVERS"} in view["overrides"]
    assert view["config"]["cluster"]["servers"] == ["nats://a:4222", "nats://b:4222"]
    again = parse_config(tomli_w.dumps(config_to_dict(cfg)), environ={})
    assert again.cluster.servers == cfg.cluster.servers
    assert again.route("bn").endpoints == cfg.route("bn").endpoints


def test_wsgate_config_show_prints_the_variable_that_set_a_list(tmp_path: Path) -> None:
    path = tmp_path / "wsgate.toml"
    path.write_text(FILE)
    env = {"WSGATE_CLUSTER_SERVERS": '["nats://a:4222", "nats://b:4222"]', "PATH": "/usr/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "wsgate", "config", "show", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "cluster.servers from $WSGATE_CLUSTER_SERVERS" in out.stdout
    assert tomli.loads(out.stdout)["cluster"]["servers"] == ["nats://a:4222", "nats://b:4222"]
    bad = {**env, "WSGATE_CLUSTER_SERVERS": '["nats://a:4222"'}
    out = subprocess.run(
        [sys.executable, "-m", "wsgate", "config", "check", str(path)],
        capture_output=True,
        text=True,
        env=bad,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "$WSGATE_CLUSTER_SERVERS" in out.stderr and "comma-separated" in out.stderr
