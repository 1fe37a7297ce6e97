"""The causal model of the ten alert types: which alert is a consequence of which.

One fault should page once, for its root cause. A connection that is down or stale, or
connections that are full, leave their route without an eligible connection, and all of
it drags the node's health down; the error rate, latency, throughput and anomaly of a
connection that is down or reconnecting are consequences too. Each :class:`Cause` says
"while ``source`` is live (pending or firing) on the same ``equal`` label, ``target`` is
a consequence": the engine
mutes the target (it is listed as "also affected" in the cause's notification instead)
and pages it on its own only if it persists after the cause resolved
(see ``AlertEngine``, ``cause_hold``). The table in docs/OPERATIONS.md is this tuple.

Sources are live alerts *and* "suspects": an observation on the bad side of a source
rule's clear threshold that has not fired yet (a connection down for 0.4 s, a connection
silent far longer than its message rate allows). They hold consequences back the way
Alertmanager's ``group_wait`` lets an inhibiting alert arrive first, but without waiting
when nothing is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wsgate.core.alerts.silences import InhibitRule, Matcher
from wsgate.core.alerts.state import AlertRecord

__all__ = [
    "CAUSES",
    "DEFAULT_INHIBIT_RULES",
    "SOURCE_TYPES",
    "TRAILING_COUNT_TYPES",
    "Cause",
    "inhibit_rules",
    "persists",
    "why",
]


@dataclass(frozen=True, slots=True)
class Cause:
    """``target`` is a consequence of ``source`` when both carry the same ``equal`` label
    value and each matches its extra label equalities."""

    source: str
    target: str
    equal: str  # "connection", "route" or "node"
    why: str
    source_match: tuple[tuple[str, str], ...] = ()
    target_match: tuple[tuple[str, str], ...] = ()

    def rule(self) -> InhibitRule:
        src = (Matcher("alertname", self.source), *(Matcher(k, v) for k, v in self.source_match))
        dst = (Matcher("alertname", self.target), *(Matcher(k, v) for k, v in self.target_match))
        return InhibitRule(f"{self.source}->{self.target}", src, dst, (self.equal,))

    def describe(self) -> str:
        def side(name: str, match: tuple[tuple[str, str], ...]) -> str:
            extra = ",".join(f"{k}={v}" for k, v in match)
            return f"{name}{{{extra}}}" if extra else name

        return (
            f"{side(self.source, self.source_match)} -> {side(self.target, self.target_match)}"
            f" (same {self.equal})"
        )


_HEALTH = (("check", "health_score"),)
_LAG = (("check", "loop_lag"),)
_BUDGET = (("resource", "connect_budget"),)
_JOB = (("check", "job"),)
_NOCAND = (("issue", "no_candidate"),)
_CONNS = (("resource", "connections"),)

CAUSES: tuple[Cause, ...] = (
    # -- one connection: down or stale is the root of everything measured on it
    Cause("connection_failure", "high_error_rate", "connection", "connect and close errors"),
    Cause("connection_failure", "high_latency", "connection", "pings wait behind the outage"),
    Cause("connection_failure", "frequent_reconnects", "connection", "each retry is one"),
    Cause("connection_failure", "performance_degradation", "connection", "no data flows"),
    Cause("connection_failure", "anomaly_detected", "connection", "rate and latency jump"),
    # -- a reconnecting connection: its errors and dips come from the reconnects
    Cause("frequent_reconnects", "high_error_rate", "connection", "every drop is an error"),
    Cause("frequent_reconnects", "performance_degradation", "connection", "gaps in data"),
    Cause("frequent_reconnects", "anomaly_detected", "connection", "gaps in data"),
    # -- slow is the cause, a lower throughput or an odd latency series the symptom
    Cause("high_latency", "performance_degradation", "connection", "same measurement"),
    Cause("high_latency", "anomaly_detected", "connection", "same measurement"),
    Cause("high_error_rate", "anomaly_detected", "connection", "errors disturb the series"),
    Cause("performance_degradation", "anomaly_detected", "connection", "same measurement"),
    # -- the route: no eligible connection because its connections are down or cycling
    Cause("connection_failure", "load_balancer_issue", "route", "nothing eligible to place on"),
    Cause("frequent_reconnects", "load_balancer_issue", "route", "nothing eligible meanwhile"),
    Cause("connection_failure", "capacity_warning", "route", "retries spend it", (), _BUDGET),
    Cause("frequent_reconnects", "capacity_warning", "route", "reconnects spend it", (), _BUDGET),
    # -- capacity: full connections (or a node at its connection limit) leave a route with
    # no eligible connection; the limit is the cause to fix, "no candidate" the symptom
    Cause(
        "capacity_warning", "load_balancer_issue", "route", "full: nothing eligible", (), _NOCAND
    ),
    Cause("capacity_warning", "load_balancer_issue", "node", "no room to grow", _CONNS, _NOCAND),
    # -- the node's health score aggregates every connection: it is never the first cause
    Cause("connection_failure", "system_health", "node", "a down connection scores 0", (), _HEALTH),
    Cause("frequent_reconnects", "system_health", "node", "reconnects cost score", (), _HEALTH),
    Cause("high_latency", "system_health", "node", "latency costs score", (), _HEALTH),
    Cause("high_error_rate", "system_health", "node", "errors cost score", (), _HEALTH),
    Cause("performance_degradation", "system_health", "node", "rate costs score", (), _HEALTH),
    Cause("load_balancer_issue", "system_health", "node", "route trouble costs score", (), _HEALTH),
    Cause("capacity_warning", "system_health", "node", "a full node scores low", (), _HEALTH),
    # -- a starved event loop makes every latency look high and every job late
    Cause("system_health", "high_latency", "node", "pongs wait for the loop", _LAG),
    Cause("system_health", "performance_degradation", "node", "frames wait for the loop", _LAG),
    Cause("system_health", "anomaly_detected", "node", "the loop distorts the series", _LAG),
    Cause("system_health", "system_health", "node", "jobs wait for the loop", _LAG, _HEALTH),
    Cause(
        "system_health",
        "system_health",
        "node",
        "jobs wait for the loop",
        _LAG,
        (("check", "job"),),
    ),
)

# Counters over a trailing window (reconnects in the last 10 minutes) stay high long after
# their cause resolved: for these, "persists" means the count grew since, not "still high".
TRAILING_COUNT_TYPES: frozenset[str] = frozenset({"frequent_reconnects"})


def inhibit_rules(causes: tuple[Cause, ...] = CAUSES) -> tuple[InhibitRule, ...]:
    return tuple(c.rule() for c in causes)


DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = inhibit_rules()

# Alert types that can be a cause: their not-yet-firing observations hold consequences.
SOURCE_TYPES: frozenset[str] = frozenset(c.source for c in CAUSES)


def why(source: Mapping[str, str], target: Mapping[str, str]) -> str:
    """The model's reason ``target`` is a consequence of ``source`` ("" if it is not)."""
    for c in CAUSES:
        rule = c.rule()
        if (
            all(m.matches(source) for m in rule.source)
            and all(m.matches(target) for m in rule.target)
            and source.get(c.equal, "") == target.get(c.equal, "")
        ):
            return f"{c.describe()}: {c.why}"
    return ""


def persists(rec: AlertRecord, now: float, hold: float) -> bool:
    """A consequence held after its causes resolved: does it stand on its own now?

    Only after ``hold`` seconds, and only if it breached since then; a trailing count
    (:data:`TRAILING_COUNT_TYPES`) must also have grown since the causes resolved.
    """
    if rec.cause_cleared_at is None:
        rec.cause_cleared_at, rec.value_at_clear = now, rec.value
    settled = rec.cause_cleared_at + hold
    if now < settled or rec.last_breach_at is None or rec.last_breach_at < settled:
        return False
    if rec.alertname in TRAILING_COUNT_TYPES:
        before = rec.value_at_clear
        return rec.value is not None and (before is None or rec.value > before)
    return True
