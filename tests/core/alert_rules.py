"""Rule sets and inputs for the alert engine's tests: every rule off but the few a test
judges, each firing on its first sample."""

from __future__ import annotations

from dataclasses import replace

from wsgate.core.alerts import ALERT_TYPES, DEFAULT_RULES, ConnInput, RuleSpec
from wsgate.core.types import ConnectionType

OFF = {t: replace(DEFAULT_RULES[t], enabled=False) for t in ALERT_TYPES}


def immediate(alertname: str) -> RuleSpec:
    """The default rule, judged on one sample: it fires at the first bad one."""
    return replace(DEFAULT_RULES[alertname], pending_samples=1, window=1)


def only(*alertnames: str) -> dict[str, RuleSpec]:
    """Every rule off but ``alertnames``, which are :func:`immediate`."""
    return {**OFF, **{name: immediate(name) for name in alertnames}}


def conn(cid: str, latency: float | None, route: str = "bitfinex", up: bool = True) -> ConnInput:
    """A market-data connection with ``latency``; one that is not up has been down 30 s."""
    return ConnInput(
        cid, route, ConnectionType.MARKET_DATA, up, seconds_down=0 if up else 30, latency=latency
    )
