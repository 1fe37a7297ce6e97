"""Every key of the schema through a real reload: applied live, or reported restart-required.

A daemon runs in this process with its real listeners, control socket and SQLite store.
For each key the walk writes the base config with only that key changed, reloads, and
checks the reply and the running components (``Daemon.live_settings``, read from the
gateway, jobs, routes, alerting, logging and stores, not from the file):

* the reply names exactly that key, with the old and the new value;
* a key the reply calls restart-required keeps its running value;
* every other key is in effect in the running components.

Then the base is reloaded again, which must report the same key back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import logging
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.e2e.harness import free_port
from wsgate.config import Config, load_config, parse_config
from wsgate.config.changes import flatten, needs_restart
from wsgate.config.dump import config_to_dict
from wsgate.config.schema import CHANNEL_KIND_KEYS
from wsgate.daemon import Daemon
from wsgate.logsetup import configure_logging

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "wsgate.toml"


def _base_doc(tmp: Path) -> dict[str, Any]:
    doc = config_to_dict(load_config(SAMPLE, environ={}), mask_secrets=False)
    groups = sorted(g.gr_name for g in grp.getgrall())
    doc["daemon"].update(
        control_socket=str(tmp / "ctl.sock"),
        state_dir=str(tmp / "state"),
        control_group=groups[0],
        admin_group=groups[0],
        log_level="info",
    )
    doc["gateway"]["listen"] = f"127.0.0.1:{free_port()}"
    doc["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
    for name, route in doc["routes"].items():
        # One route keeps a connection (dialing a closed port) whose settings must follow.
        route["min_connections"] = 1 if name == "bitfinex" else 0
        for i, ep in enumerate(route["endpoints"]):
            ep["url"] = f"ws://127.0.0.1:9/{i}"
    for ch in doc["alerts"]["channels"].values():
        ch["enabled"] = False
        if "url" in ch:
            ch["url"] = "http://127.0.0.1:9/hook"
    return doc


def _schema_keys(doc: dict[str, Any]) -> list[str]:
    """Every settable key: each field of each section, route, channel (of its kind) and rule."""
    from wsgate.config.schema import (
        AlertRuleConfig,
        BudgetConfig,
        RouteConfig,
        TlsConfig,
    )

    keys: list[str] = []
    hints = typing.get_type_hints(Config)
    for section, cls in hints.items():
        if section in ("routes", "alerts", "source_path", "source_sha256", "overrides"):
            continue
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    alerts_scalars = ("channels", "rules")
    from wsgate.config.schema import AlertsConfig

    keys += [
        f"alerts.{f.name}" for f in dataclasses.fields(AlertsConfig) if f.name not in alerts_scalars
    ]
    for name in doc["routes"]:
        for f in dataclasses.fields(RouteConfig):
            if f.name in ("name", "channel_cadence"):
                continue
            if f.name in ("connect_budget", "message_budget"):
                keys += [
                    f"routes.{name}.{f.name}.{b.name}" for b in dataclasses.fields(BudgetConfig)
                ]
            elif f.name == "tls":
                keys += [f"routes.{name}.tls.{t.name}" for t in dataclasses.fields(TlsConfig)]
            else:
                keys.append(f"routes.{name}.{f.name}")
        keys.append(f"routes.{name}.channel_cadence.trades")
    common = ("enabled", "min_severity", "send_resolved", "timeout", "rate.count", "rate.per")
    for name, ch in doc["alerts"]["channels"].items():
        kind_keys = CHANNEL_KIND_KEYS[ch["kind"]]
        keys += [f"alerts.channels.{name}.{k}" for k in (*common, *kind_keys, "matchers.route")]
    for rule in doc["alerts"]["rules"]:
        for f in dataclasses.fields(AlertRuleConfig):
            if f.name in ("type", "labels", "params"):
                continue
            keys.append(f"alerts.rules.{rule}.{f.name}")
        keys.append(f"alerts.rules.{rule}.labels.team")
    return keys


_CHOICES: dict[str, list[Any]] = {
    "log_level": ["debug", "warning"],
    "log_format": ["json", "text"],
    "dialect": ["raw", "bitfinex", "binance"],
    "type": ["market_data", "trading"],
    "strategy": ["least_connections", "round_robin", "adaptive"],
    "security": ["tls", "none"],
    "severity": ["critical", "info"],
    "min_severity": ["info", "critical"],
    "slow_consumer_close_code": [1008, 1013],
    "engine": ["nats"],
    "kind": [],
    "share": ["cluster"],
}


_BY_LEAF: dict[str, list[Any]] = {
    "from_addr": ["walk@example.com"],
    "max_sessions": [7, 8],
    "smtp_port": [2525],
    "pending_samples": [1, 2],
    "window": [9],
    "linger": [7.0, 9.0],
    "max_lifetime": [7200.0, 3600.0],
    "route": ["bitfinex"],
    "clients": [
        [
            {
                "name": "walk",
                "token_env": "WSGATE_WALK_VALUE",
                "routes": ["bitfinex"],
                "max_sessions": 3,
            }
        ]
    ],
    "team": ["walk"],
    "trades": [45.0],
    "smtp_host": ["127.0.0.1"],
    "username": ["walk"],
}


def _candidates(key: str, old: Any) -> list[Any]:
    leaf = key.rsplit(".", 1)[-1]
    if leaf in _CHOICES:
        return [c for c in _CHOICES[leaf] if c != old]
    if leaf in _BY_LEAF:
        return [c for c in _BY_LEAF[leaf] if c != old]
    if key.endswith("_group"):
        return [g.gr_name for g in grp.getgrall() if g.gr_name != old][:3]
    if key.endswith("listen"):
        return [f"127.0.0.1:{free_port()}"]
    if key.endswith(("control_socket", "state_dir")):
        return [str(Path(str(old)).parent / "elsewhere" / Path(str(old)).name)]
    if key.endswith("_env"):
        return ["WSGATE_WALK_VALUE"]
    if key.endswith(("_file", "ca_file", "client_cert", "client_key")):
        return ["/etc/hostname"]
    if key.endswith("endpoints"):
        return [[{"url": "ws://127.0.0.1:9/moved", "name": "moved", "weight": 2}]]
    if key.endswith("servers"):
        return [["nats://127.0.0.1:4223"]]
    if key.endswith("origins"):
        return [["https://walk.example"]]
    if key.endswith("to_addrs"):
        return [["walk@example.com"]]
    if key.endswith("url"):
        return ["https://127.0.0.1:9/walk"]
    if isinstance(old, bool):
        return [not old]
    if isinstance(old, int):
        return [old + 1, old - 1, old * 2, 1]
    if isinstance(old, float):
        return [old * 2, old / 2, old + 1.0, 0.5]
    if isinstance(old, str):
        return [old + "-walk"]
    return ["walk", 7, 7.0, True]


def _set(doc: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(doc)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


_EXCLUSIVE = (("url", "url_env", "url_file"), ("secret_env", "secret_file"))
_EXCLUSIVE += (("password_env", "password_file"),)


def _with_companions(doc: dict[str, Any], key: str, value: Any) -> tuple[dict[str, Any], set[str]]:
    """Set ``key``, plus the keys a valid config needs changed with it (reported too)."""
    out = _set(doc, key, value)
    parent, _, leaf = key.rpartition(".")
    node = out
    for part in parent.split("."):
        node = node[part]
    companions: set[str] = set()
    for group in _EXCLUSIVE:  # "set only one of"
        if leaf in group:
            for other in group:
                if other != leaf and other in node:
                    del node[other]
                    companions.add(f"{parent}.{other}")
    pairs = {
        "tls_key_file": "tls_cert_file",
        "tls_cert_file": "tls_key_file",
        "client_key": "client_cert",
    }
    if leaf in pairs and node.get(pairs[leaf]) is None:
        node[pairs[leaf]] = _BY_LEAF.get(pairs[leaf], ["/etc/hostname"])[0]
        companions.add(f"{parent}.{pairs[leaf]}")
    if leaf == "share" and value == "cluster":  # sharing with a cluster needs one
        out.setdefault("cluster", {})["engine"] = "nats"
        companions.add("cluster.engine")
    if leaf == "pending_samples" and node.get("window", 1) < value:
        node["window"] = value
        companions.add(f"{parent}.window")
    if leaf == "type" and node.get("dialect") == "binance":
        node["dialect"] = "raw"  # binance has no trading routes
        companions.add(f"{parent}.dialect")
    return out, companions


def _get(doc: dict[str, Any], key: str) -> Any:
    flat: dict[str, Any] = {}
    flatten(doc, "", flat)
    return flat.get(key)


@pytest.mark.timeout(300)  # ~250 keys, two reloads each: about 30 s on 2 cores
def test_every_key_applies_live_or_says_restart(tmp_path: Path) -> None:
    # The gateway loads its certificate when the config is read: a real pair is needed.
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=walk", "-keyout", str(tmp_path / "walk.key"),
         "-out", str(tmp_path / "walk.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    _BY_LEAF["tls_cert_file"] = [str(tmp_path / "walk.pem")]
    _BY_LEAF["tls_key_file"] = [str(tmp_path / "walk.key")]
    base = _base_doc(tmp_path)
    path = tmp_path / "wsgate.toml"
    path.write_text(tomli_w.dumps(base))
    cfg = load_config(path, environ={})
    keys = _schema_keys(base)
    root_level = logging.getLogger().level
    report: dict[str, str] = {}

    async def walk() -> None:
        # As `wsgate run` configures it from the file, next to pytest's own capture.
        configure_logging("info", "text", exclusive=False)
        daemon = Daemon(cfg, config_path=str(path), control=True, signals=False)
        daemon._reload_source = lambda: load_config(path, environ={})
        serving = asyncio.create_task(daemon.serve())
        await asyncio.wait_for(daemon.ready.wait(), 20)
        try:
            for key in keys:
                report[key] = await _walk_one(daemon, path, base, key)
        finally:
            daemon.stop("walk done")
            await asyncio.wait_for(serving, 20)

    try:
        asyncio.run(walk())
    finally:
        logging.getLogger().setLevel(root_level)
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_wsgate", False):
                logging.getLogger().removeHandler(h)
    unwalked = {k: v for k, v in report.items() if v.startswith("skip")}
    assert not unwalked, "\n".join(f"{k}: {v}" for k, v in unwalked.items())
    assert {v for v in report.values()} <= {"live", "restart"}
    # The documented restart-required keys are the only ones.
    assert {k for k, v in report.items() if v == "restart"} == {
        k for k in report if needs_restart(k)
    }


async def _walk_one(daemon: Daemon, path: Path, base: dict[str, Any], key: str) -> str:
    before = daemon.live_settings()
    old = _get(base, key)
    for candidate in _candidates(key, old):
        doc, companions = _with_companions(base, key, candidate)
        text = tomli_w.dumps(doc)
        try:
            wanted = parse_config(text, environ={})
        except Exception:
            continue  # not a valid value for this key: try the next candidate
        expected: dict[str, Any] = {}
        flatten(config_to_dict(wanted, mask_secrets=False), "", expected)
        new_value = expected.get(key)
        if new_value == before.get(key):
            continue
        await asyncio.to_thread(path.write_text, text)
        result = await daemon.reload("walk")
        await asyncio.sleep(0.01)  # alerting reconfigures in a task of its own
        changed = {c["key"]: c for c in result["changed"]}
        assert key in changed, (key, result["changed"])
        assert set(changed) <= {key, *companions}, (key, result["changed"])
        live = daemon.live_settings()
        if key in result["restart_required"]:
            assert live.get(key) == before.get(key), (key, live.get(key), before.get(key))
            verdict = "restart"
        else:
            assert live.get(key) == new_value, (key, live.get(key), new_value)
            verdict = "live"
        await asyncio.to_thread(path.write_text, tomli_w.dumps(base))
        back = await daemon.reload("walk back")
        if verdict == "live":  # a restart-required key never left its running value
            assert key in [c["key"] for c in back["changed"]], (key, back["changed"])
        await asyncio.sleep(0.01)
        assert daemon.live_settings().get(key) == before.get(key), key
        return verdict
    return f"skip: no valid different value among {_candidates(key, old)!r}"
