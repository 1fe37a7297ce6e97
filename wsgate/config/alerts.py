"""The ``[alerts]`` section: channels and rules, every error with key path, line and hint.

Part of :mod:`wsgate.config` (which calls :func:`build_alerts`); defaults come from the
frozen dataclasses of :mod:`wsgate.config.schema`.
"""

from __future__ import annotations

from typing import Any

from wsgate.config.locate import Table, did_you_mean, read_budget, short
from wsgate.config.schema import (
    ALERT_RULE_TYPES,
    CHANNEL_KIND_KEYS,
    CHANNEL_KINDS,
    AlertChannelConfig,
    AlertRuleConfig,
    AlertsConfig,
    BudgetConfig,
    default_rule,
)
from wsgate.core.types import Severity

__all__ = ["build_alerts"]

_SECURITIES = ("starttls", "tls", "none")
_URL_KINDS = ("webhook", "slack", "discord")
_KIND_KEYS = CHANNEL_KIND_KEYS


def _build_channel(name: str, t: Table) -> AlertChannelConfig:
    default_kind = name if name in CHANNEL_KINDS else None
    kind: str | None = t.string("kind", default_kind, choices=CHANNEL_KINDS)
    if default_kind is None and "kind" not in t.data:
        t.problem(
            "kind",
            f"missing 'kind' for channel {name!r} (one of {', '.join(CHANNEL_KINDS)})",
            did_you_mean(name, CHANNEL_KINDS),
        )
        kind = None
    kind = kind or "log"  # keep validating the common keys after a bad kind
    rate = read_budget(t, "rate", BudgetConfig(10, 60.0))
    fields: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "enabled": t.boolean("enabled", False),
        "min_severity": t.enum("min_severity", Severity, Severity.WARNING),
        "matchers": t.string_map("matchers"),
        "send_resolved": t.boolean("send_resolved", True),
        "rate": rate,
        "timeout": t.number("timeout", 10.0),
    }
    if kind in _URL_KINDS:
        url = t.string("url", None)
        if url is not None and not t.check_url("url", url, ("http", "https")):
            url = None
        fields.update(url=url, url_env=t.env_name("url_env"), url_file=t.string("url_file", None))
        t.only_one(("url", "url_env", "url_file"), (url, fields["url_env"], fields["url_file"]))
        if fields["enabled"] and not (url or fields["url_env"] or fields["url_file"]):
            t.problem(None, f"enabled {kind} channel needs url, url_env or url_file")
    if kind == "webhook":
        fields.update(
            secret_env=t.env_name("secret_env"), secret_file=t.string("secret_file", None)
        )
        t.only_one(("secret_env", "secret_file"), (fields["secret_env"], fields["secret_file"]))
    if kind == "email":
        fields.update(
            smtp_host=t.string("smtp_host", None),
            smtp_port=t.integer("smtp_port", 587, lo=1, hi=65535),
            security=t.string("security", "starttls", choices=_SECURITIES),
            username=t.string("username", None),
            password_env=t.env_name("password_env"),
            password_file=t.string("password_file", None),
            from_addr=t.string("from_addr", None),
            to_addrs=t.strings("to_addrs"),
        )
        t.only_one(
            ("password_env", "password_file"), (fields["password_env"], fields["password_file"])
        )
        if fields["from_addr"] is not None and "@" not in fields["from_addr"]:
            t.problem("from_addr", f"expected an email address, got {short(fields['from_addr'])}")
        for index, addr in enumerate(fields["to_addrs"]):
            if "@" not in addr:
                t.problems.add(
                    (*t.at("to_addrs"), index), f"expected an email address, got {short(addr)}"
                )
        if fields["enabled"]:
            missing = [k for k in ("smtp_host", "from_addr", "to_addrs") if not fields[k]]
            if missing:
                t.problem(None, f"enabled email channel needs {', '.join(missing)}")
    foreign = {
        key: f"{key!r} does not apply to a {kind!r} channel"
        for other, keys in _KIND_KEYS.items()
        if other != kind
        for key in keys
    }
    t.finish(foreign)
    return AlertChannelConfig(**fields)


def _build_rule(rule_type: str, t: Table) -> AlertRuleConfig:
    d = default_rule(rule_type)
    pending = t.integer("pending_samples", d.pending_samples, lo=1)
    window = t.integer("window", max(d.window, pending), lo=1)
    if window < pending:
        t.problem("window", f"window ({window}) must be >= pending_samples ({pending})")
    fire = t.number("fire", d.fire, signed=True)
    clear = t.number("clear", d.clear, signed=True)
    if d.fires_above and clear > fire:
        t.problem("clear", f"clear ({clear:g}) must be <= fire ({fire:g}) or the alert flaps")
    elif not d.fires_above and clear < fire:
        t.problem("clear", f"clear ({clear:g}) must be >= fire ({fire:g}) for a score-below rule")
    rule = AlertRuleConfig(
        type=rule_type,
        enabled=t.boolean("enabled", True),
        severity=t.enum("severity", Severity, d.severity) or d.severity,
        fire=fire,
        clear=clear,
        pending_samples=pending,
        window=window,
        keep_firing_for=t.number("keep_firing_for", d.keep_firing_for, minimum=0.0),
        labels=t.string_map("labels"),
        params=_rule_params(rule_type, t),
    )
    t.finish()
    return rule


def _rule_params(rule_type: str, t: Table) -> tuple[tuple[str, float], ...]:
    from wsgate.core.alerts.rules import RULE_PARAMS

    sub = t.table("params")
    if sub is None:
        return ()
    allowed = RULE_PARAMS.get(rule_type, frozenset())
    sub.known.extend(sorted(allowed))
    out = []
    for name in sorted(sub.data):
        if name in allowed:
            value = sub.number(name, signed=True)
            if value is not None:
                out.append((name, float(value)))
    sub.finish()  # unknown parameter names get a did-you-mean
    return tuple(out)


def build_alerts(t: Table | None) -> AlertsConfig:
    d = AlertsConfig()
    if t is None:
        return d
    channels: list[AlertChannelConfig] = []
    chan_table = t.table("channels")
    for name, body in (chan_table.data if chan_table else {}).items():
        assert chan_table is not None
        chan_table.has(name)
        if isinstance(body, dict):
            channels.append(_build_channel(name, Table(t.problems, chan_table.at(name), body)))
        else:
            chan_table.problem(name, f"expected table [alerts.channels.{name}]")
    rules = {r.type: r for r in d.rules}
    rule_table = t.table("rules")
    for rule_type, body in (rule_table.data if rule_table else {}).items():
        assert rule_table is not None
        if rule_type not in ALERT_RULE_TYPES:
            rule_table.problem(
                rule_type,
                f"unknown alert rule type {rule_type!r}",
                did_you_mean(rule_type, ALERT_RULE_TYPES),
            )
        elif not isinstance(body, dict):
            rule_table.problem(rule_type, f"expected table [alerts.rules.{rule_type}]")
        else:
            rules[rule_type] = _build_rule(
                rule_type, Table(t.problems, rule_table.at(rule_type), body)
            )
    cfg = AlertsConfig(
        group_wait=t.number("group_wait", d.group_wait, minimum=0.0),
        group_interval=t.number("group_interval", d.group_interval),
        repeat_interval=t.number("repeat_interval", d.repeat_interval),
        send_resolved=t.boolean("send_resolved", d.send_resolved),
        flap_threshold=t.integer("flap_threshold", d.flap_threshold, lo=2),
        flap_window=t.number("flap_window", d.flap_window),
        cause_hold=t.number("cause_hold", d.cause_hold, minimum=0.0),
        channels=tuple(channels),
        rules=tuple(rules[name] for name in ALERT_RULE_TYPES),
    )
    t.finish()
    return cfg
