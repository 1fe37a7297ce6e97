"""The pure alert engine: ten alert types, per-alert state machines, silences, acks,
inhibition, grouping and routing. The runtime feeds snapshots and ``now``; it gets back
transitions and notifications to deliver. See ``engine.AlertEngine``.
"""

from wsgate.core.alerts.causes import CAUSES, DEFAULT_INHIBIT_RULES, Cause
from wsgate.core.alerts.engine import AlertEngine, EngineStatistics, EvalResult
from wsgate.core.alerts.inputs import AlertInputs, ConnInput, RouteInput, SystemInput
from wsgate.core.alerts.routing import ChannelRoute, Notification, group_key_for
from wsgate.core.alerts.rules import (
    ALERT_TYPES,
    DEFAULT_RULES,
    Observation,
    RuleSpec,
    evaluate_rules,
    rule_spec_from,
)
from wsgate.core.alerts.silences import (
    Ack,
    InhibitRule,
    Matcher,
    Silence,
)
from wsgate.core.alerts.state import AlertState, AlertView, Transition, fingerprint

__all__ = [
    "ALERT_TYPES",
    "CAUSES",
    "DEFAULT_INHIBIT_RULES",
    "DEFAULT_RULES",
    "Ack",
    "AlertEngine",
    "AlertInputs",
    "AlertState",
    "AlertView",
    "Cause",
    "ChannelRoute",
    "ConnInput",
    "EngineStatistics",
    "EvalResult",
    "InhibitRule",
    "Matcher",
    "Notification",
    "Observation",
    "RouteInput",
    "RuleSpec",
    "Silence",
    "SystemInput",
    "Transition",
    "evaluate_rules",
    "fingerprint",
    "group_key_for",
    "rule_spec_from",
]
