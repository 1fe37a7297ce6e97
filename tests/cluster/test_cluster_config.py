"""[cluster]: defaults, the exact keys, errors with key path, line and hint, reload diff."""

from __future__ import annotations

import pytest

from wsgate.config import config_to_dict, diff_config, parse_config
from wsgate.errors import ConfigError

BASE = """
[daemon]
node_id = "n1"
[routes.r]
dialect = "raw"
type = "market_data"
[[routes.r.endpoints]]
url = "ws://127.0.0.1:1"
"""


def test_default_is_a_single_node() -> None:
    c = parse_config(BASE).cluster
    assert c.engine == "none" and not c.enabled
    assert (c.heartbeat_interval, c.node_down_after, c.lease_ttl) == (2.0, 10.0, 5.0)
    assert c.servers == ("nats://127.0.0.1:4222",) and c.name == "wsgate"


def test_every_key() -> None:
    c = parse_config(
        BASE
        + """
[cluster]
engine = "nats"
servers = ["nats://10.0.0.1:4222", "tls://10.0.0.2:4222"]
name = "prod-eu"
heartbeat_interval = 0.5
node_down_after = 2
lease_ttl = 3
credentials_file = "/etc/wsgate/nats.creds"
tls_ca_file = "/etc/ca.pem"
tls_cert_file = "/etc/c.pem"
tls_key_file = "/etc/k.pem"
"""
    ).cluster
    assert c.enabled and c.name == "prod-eu" and c.servers[1] == "tls://10.0.0.2:4222"
    assert (c.heartbeat_interval, c.node_down_after, c.lease_ttl) == (0.5, 2.0, 3.0)
    assert c.credentials_file == "/etc/wsgate/nats.creds" and c.tls_key_file == "/etc/k.pem"


def test_errors_name_key_line_and_hint() -> None:
    text = (
        BASE
        + """
[cluster]
engine = "natz"
servers = ["http://x:1"]
name = "a b"
heartbeat_interval = 2
node_down_after = 3
lease_tll = 5
"""
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "w.toml")
    lines = {p.path: p for p in err.value.problems}
    assert lines["cluster.engine"].line == 11 and "nats" in (lines["cluster.engine"].hint or "")
    assert lines["cluster.servers[0]"].line == 12
    assert "letters" in (lines["cluster.name"].hint or "")
    assert "twice heartbeat_interval" in lines["cluster.node_down_after"].message
    assert "lease_ttl" in (lines["cluster.lease_tll"].hint or "")


def test_node_id_must_be_a_kv_key_in_a_cluster() -> None:
    text = BASE.replace('"n1"', '"node one"') + '[cluster]\nengine = "nats"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert [p.path for p in err.value.problems] == ["daemon.node_id"]
    parse_config(BASE.replace('"n1"', '"node one"'))  # fine on a single node


def test_reload_needs_restart_and_dump_masks_credentials() -> None:
    a = parse_config(BASE)
    b = parse_config(BASE + '[cluster]\nengine = "nats"\nservers = ["nats://u:pw@h:4222"]\n')
    assert "cluster" in diff_config(a, b).restart_required
    assert config_to_dict(b)["cluster"]["servers"] == ["nats://***@h:4222"]
    assert config_to_dict(b, mask_secrets=False)["cluster"]["servers"] == ["nats://u:pw@h:4222"]


def test_nats_password_is_scrubbed_from_logs_and_reprs() -> None:
    from wsgate.cluster.nats_engine import NatsEngine
    from wsgate.daemon import secret_values

    cfg = parse_config(
        BASE + '[cluster]\nengine = "nats"\nservers = ["nats://u:s3cret-pw@h:4222"]\n'
    )
    assert "s3cret-pw" in secret_values(cfg)  # the log filter's list
    assert "s3cret-pw" not in repr(NatsEngine(cfg.cluster, "x"))


BFX = """
[daemon]
node_id = "n1"
[routes.bfx]
dialect = "bitfinex"
type = "market_data"
share = "cluster"
[[routes.bfx.endpoints]]
url = "wss://api-pub.bitfinex.com/ws/2"
"""


def test_route_share_defaults_to_node_and_cluster_needs_a_cluster() -> None:
    assert parse_config(BASE).routes[0].share == "node"
    c = parse_config(BFX + '[cluster]\nengine = "nats"\n')
    assert c.routes[0].share == "cluster"
    with pytest.raises(ConfigError) as err:
        parse_config(BFX, "s.toml")
    (p,) = err.value.problems
    assert p.path == "routes.bfx.share" and p.line == 7 and 'engine = "nats"' in (p.hint or "")
    with pytest.raises(ConfigError) as err:
        parse_config(BFX.replace('"cluster"', '"clustr"') + '[cluster]\nengine = "nats"\n')
    (p,) = err.value.problems
    assert p.path == "routes.bfx.share" and "cluster" in (p.hint or "")
    raw = BASE + 'share = "cluster"\n[cluster]\nengine = "nats"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(
            raw.replace('type = "market_data"\n', 'type = "market_data"\nshare = "cluster"\n')
        )
    assert any("raw" in p.message for p in err.value.problems)
