"""The effective config as a document that is itself a valid config (`wsgate config show`).

``config_to_dict(cfg)`` has the shape of the input file: routes, channels and rules are
tables keyed by name, unset keys are left out (TOML has no null), derived values are
not written. Loading its TOML gives back the same effective config (a round-trip test
holds this). Masked secrets stay valid input: a Slack or Discord webhook URL becomes
``https://hooks.slack.com/***``, credentials in other URLs ``https://***@host/path?***``;
secrets kept in the environment appear by variable NAME only, as in the file.

:func:`config_view` adds what the file cannot say: which keys an environment variable or
a flag set, and which secret variables are set (never their values).
"""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from wsgate.config.schema import (
    CHANNEL_KIND_KEYS,
    AlertChannelConfig,
    AlertRuleConfig,
    AlertsConfig,
    Config,
    RouteConfig,
)
from wsgate.redact import mask_url

__all__ = ["config_to_dict", "config_view", "secret_env_names"]

_PAIR_FIELDS = ("matchers", "labels", "channel_cadence", "params")
_SECRET_URL_KINDS = ("slack", "discord")  # their webhook URL is the credential itself
_NOT_INPUT = ("source_path", "source_sha256", "overrides")
_COMMON_CHANNEL_KEYS = tuple(
    f.name
    for f in dataclasses.fields(AlertChannelConfig)
    if f.name not in {k for keys in CHANNEL_KIND_KEYS.values() for k in keys}
)


def _mask_url(url: str, whole: bool) -> str:
    """Hide credentials that may ride in a URL; the result is still a URL of the same host.

    ``whole``: the URL is the credential (a Slack/Discord webhook): only scheme and host stay.
    Otherwise userinfo, the query and key-like path segments go (wsgate.redact.mask_url).
    """
    parts = urlsplit(url)
    if whole:
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "/***", "", ""))
    masked = mask_url(url)
    parts = urlsplit(masked)
    if parts.query:  # every query value, not only the ones named like a credential
        masked = urlunsplit((*parts[:3], "***", ""))
    return masked


def _plain(value: Any) -> Any:
    """Dataclasses -> dicts (None left out), enums -> values, tuples -> lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None:
                continue
            if f.name in _PAIR_FIELDS:
                if item:
                    out[f.name] = {k: v for k, v in item}
                continue
            out[f.name] = _plain(item)
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _route(route: RouteConfig, mask: bool) -> dict[str, Any]:
    out = _plain(route)
    del out["name"]
    if mask:
        for ep in out["endpoints"]:
            ep["url"] = mask_url(ep["url"])
    if route.max_lifetime is None:
        out["max_lifetime"] = 0  # 0 switches rotation off; an absent key means the default
    return dict(out)


def _channel(ch: AlertChannelConfig, mask: bool) -> dict[str, Any]:
    full = _plain(ch)
    keys = (*_COMMON_CHANNEL_KEYS, *CHANNEL_KIND_KEYS.get(ch.kind, ()))
    out = {k: full[k] for k in keys if k in full and k != "name"}
    if mask and ch.url is not None:
        out["url"] = _mask_url(ch.url, whole=ch.kind in _SECRET_URL_KINDS)
    return out


def _rule(rule: AlertRuleConfig) -> dict[str, Any]:
    out = _plain(rule)
    del out["type"]
    return dict(out)


def _alerts(alerts: AlertsConfig, mask: bool) -> dict[str, Any]:
    out = _plain(dataclasses.replace(alerts, channels=(), rules=()))
    out["channels"] = {ch.name: _channel(ch, mask) for ch in alerts.channels}
    out["rules"] = {r.type: _rule(r) for r in alerts.rules}
    if not out["channels"]:
        del out["channels"]
    return dict(out)


def config_to_dict(cfg: Config, *, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective config in the input file's shape (valid `wsgate config check` input)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name in _NOT_INPUT:
            continue
        value = getattr(cfg, f.name)
        if f.name == "routes":
            out["routes"] = {r.name: _route(r, mask_secrets) for r in value}
        elif f.name == "alerts":
            out["alerts"] = _alerts(value, mask_secrets)
        elif value is not None:
            out[f.name] = _plain(value)
    cluster = out.get("cluster")
    if mask_secrets and isinstance(cluster, dict) and "servers" in cluster:
        # nats://user:password@host carries a credential
        cluster["servers"] = [_mask_url(u, whole=False) for u in cluster["servers"]]
    return out


def secret_env_names(cfg: Config) -> list[tuple[str, str]]:
    """(dotted key, variable name) of every ``*_env`` setting, in config order."""
    found: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                key = f"{prefix}.{k}" if prefix else k
                if k.endswith("_env") and isinstance(v, str):
                    found.append((key, v))
                else:
                    walk(key, v)
        elif isinstance(value, list):  # arrays of tables ([[gateway.clients]])
            for index, item in enumerate(value):
                walk(f"{prefix}[{index}]", item)

    walk("", config_to_dict(cfg, mask_secrets=True))
    return found


def config_view(cfg: Config) -> dict[str, Any]:
    """`config show --json`: the config document plus where values came from.

    ``environment`` says for each secret variable the config names whether it is set
    and non-empty (an empty secret is as good as none); values are never read out.
    """
    return {
        "source_path": cfg.source_path,
        "source_sha256": cfg.source_sha256,
        "overrides": [{"key": k, "source": s} for k, s in cfg.overrides],
        "environment": [
            {"key": key, "name": name, "set": bool(os.environ.get(name))}
            for key, name in secret_env_names(cfg)
        ],
        "config": config_to_dict(cfg, mask_secrets=True),
    }
