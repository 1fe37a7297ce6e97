"""``[[gateway.clients]]``: parsing, every error with key path, line and fix, the dump."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from wsgate.config import ClientConfig, config_to_dict, diff_config, parse_config
from wsgate.config.changes import key_changes
from wsgate.errors import ConfigError

ROUTES = """
[routes.bitfinex]
dialect = "bitfinex"
type = "market_data"
[[routes.bitfinex.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"

[routes.binance]
dialect = "binance"
type = "market_data"
[[routes.binance.endpoints]]
url = "wss://stream.binance.com:9443"
"""


def _problems(text: str) -> list[tuple[int | None, str, str, str | None]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text + ROUTES, environ={})
    return [(p.line, p.path, p.message, p.hint) for p in info.value.problems]


def _token_file(tmp_path: Path, mode: int = 0o600, text: str = "s3cret-token\n") -> Path:
    path = tmp_path / "bot.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_clients_parse_with_defaults(tmp_path: Path) -> None:
    token = _token_file(tmp_path)
    cfg = parse_config(
        f"""
[[gateway.clients]]
name = "alpha"
token_env = "WSGATE_ALPHA"
routes = ["bitfinex"]
max_sessions = 4
max_subscriptions = 0

[[gateway.clients]]
name = "beta.2"
token_file = "{token}"
"""
        + ROUTES,
        environ={},
    )
    alpha, beta = cfg.gateway.clients
    assert alpha == ClientConfig("alpha", "WSGATE_ALPHA", None, ("bitfinex",), 4, 0)
    assert beta == ClientConfig("beta.2", token_file=str(token))
    assert alpha.allows("bitfinex") and not alpha.allows("binance")
    assert beta.allows("binance")  # no routes key: every route


def test_client_errors_name_key_line_and_fix(tmp_path: Path) -> None:
    open_file = _token_file(tmp_path, 0o644)
    found = _problems(
        f"""[gateway]
[[gateway.clients]]
name = "alpha"
token_env = "A"

[[gateway.clients]]
name = "ALPHA"
token_env = "B"
token_file = "{open_file}"
routes = ["binanse"]
max_sesions = 3

[[gateway.clients]]
name = "two words"
routes = []
max_subscriptions = -1
"""
    )
    assert found == [
        (
            7,
            "gateway.clients[1].name",
            "duplicate client name 'ALPHA' (already used by gateway.clients[0])",
            "give each client a different name (names are compared without case)",
        ),
        (
            9,
            "gateway.clients[1].token_file",
            "set only one of token_env and token_file",
            "keep the one that holds this client's token",
        ),
        (
            9,
            "gateway.clients[1].token_file",
            f"token_file {str(open_file)!r} is open to other users (mode 0644)",
            f"chmod 600 {open_file} (or 640 with the group wsgate runs as)",
        ),
        (
            10,
            "gateway.clients[1].routes[0]",
            "unknown route 'binanse' (routes: bitfinex, binance)",
            "did you mean 'binance'?",
        ),
        (
            11,
            "gateway.clients[1].max_sesions",
            "unknown key 'max_sesions'",
            "did you mean 'max_sessions'?",
        ),
        (
            13,
            "gateway.clients[2]",
            "a client needs a token: set token_env or token_file",
            'e.g. token_env = "WSGATE_TOKEN_BOT"',
        ),
        (
            14,
            "gateway.clients[2].name",
            "client name 'two words' is not usable as a label",
            "use letters, digits, '_', '-' or '.', starting with a letter (at most 64)",
        ),
        (
            15,
            "gateway.clients[2].routes",
            "an empty routes list lets this client in nowhere",
            "list the routes it may use, or remove the key to allow every route",
        ),
        (16, "gateway.clients[2].max_subscriptions", "must be >= 0, got -1", None),
    ]


def test_the_name_that_labels_sessions_without_a_client_is_reserved() -> None:
    found = _problems('[gateway]\n[[gateway.clients]]\nname = "Anonymous"\ntoken_env = "A"\n')
    assert found == [
        (
            3,
            "gateway.clients[0].name",
            "client name 'Anonymous' is reserved: it labels the sessions without a client",
            "give this client another name",
        )
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "cannot read token_file"),
        ("empty", "is empty"),
        ("directory", "is not a regular file"),
        ("group-writable", "is open to other users (mode 0620)"),
    ],
)
def test_token_file_checks(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "t"
    if setup == "empty":
        _token_file(tmp_path, text="  \n").rename(path)
    elif setup == "directory":
        path.mkdir()
    elif setup == "group-writable":
        _token_file(tmp_path, 0o620).rename(path)
    found = _problems(f'[[gateway.clients]]\nname = "a"\ntoken_file = "{path}"\n')
    assert len(found) == 1 and found[0][:2] == (3, "gateway.clients[0].token_file")
    assert message in found[0][2]


def test_clients_must_be_an_array_of_tables() -> None:
    found = _problems('[gateway]\nclients = "alpha"\n')
    assert found == [
        (
            2,
            "gateway.clients",
            "expected an array of tables",
            "write each client as [[gateway.clients]] with name and token_env or token_file",
        )
    ]


def test_dump_round_trips_and_never_holds_a_token(tmp_path: Path) -> None:
    token = _token_file(tmp_path, text="never-shown-token\n")
    text = f"""
[[gateway.clients]]
name = "alpha"
token_env = "WSGATE_ALPHA"
routes = ["binance"]

[[gateway.clients]]
name = "beta"
token_file = "{token}"
max_subscriptions = 5
"""
    cfg = parse_config(text + ROUTES, environ={"WSGATE_ALPHA": "env-token-value"})
    doc = config_to_dict(cfg)
    dumped = tomli_w.dumps(doc)
    assert "never-shown-token" not in dumped and "env-token-value" not in dumped
    assert doc["gateway"]["clients"] == [
        {"name": "alpha", "token_env": "WSGATE_ALPHA", "routes": ["binance"]},
        {"name": "beta", "token_file": str(token), "max_subscriptions": 5},
    ]
    again = parse_config(dumped, environ={})
    assert again.gateway == cfg.gateway


def test_a_change_is_live_and_reported_per_client() -> None:
    base = '[[gateway.clients]]\nname = "a"\ntoken_env = "A"\n'
    old = parse_config(base + ROUTES, environ={})
    new = parse_config(
        base + 'max_sessions = 3\n[[gateway.clients]]\nname = "b"\ntoken_env = "B"\n' + ROUTES,
        environ={},
    )
    assert diff_config(old, new).gateway_changed == ("clients",)
    (change,) = key_changes(old, new)
    assert change.key == "gateway.clients" and not change.restart_required
    assert change.render() == "gateway.clients: added b; a.max_sessions: (none) -> 3"


def test_config_show_says_whether_each_token_variable_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsgate.config import config_view

    monkeypatch.setenv("WSGATE_ALPHA", "the-alpha-token")
    monkeypatch.delenv("WSGATE_BETA", raising=False)
    text = '[[gateway.clients]]\nname = "a"\ntoken_env = "WSGATE_ALPHA"\n'
    text += '[[gateway.clients]]\nname = "b"\ntoken_env = "WSGATE_BETA"\n'
    view = config_view(parse_config(text + ROUTES, environ={}))
    assert view["environment"] == [
        {"key": "gateway.clients[0].token_env", "name": "WSGATE_ALPHA", "set": True},
        {"key": "gateway.clients[1].token_env", "name": "WSGATE_BETA", "set": False},
    ]
    assert "the-alpha-token" not in str(view)
