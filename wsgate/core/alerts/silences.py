"""Label matchers, silences, acknowledgements and inhibition rules (Alertmanager semantics).

Silences and acks are plain frozen values with ``to_dict``/``from_dict`` so the store can
write them through on every change and the engine can restore them after a restart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from wsgate.errors import AlertError

__all__ = [
    "Ack",
    "InhibitRule",
    "Matcher",
    "Silence",
    "inhibitions",
    "make_silence",
]

_OPS = ("=~", "!~", "!=", "=")  # longest first so "=~" is not read as "="
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise AlertError(f"invalid regular expression {pattern!r} in matcher: {exc}") from None


@dataclass(frozen=True, slots=True)
class Matcher:
    """``name op value`` with op one of ``=``, ``!=``, ``=~``, ``!~``; regexes are anchored.

    A missing label matches as the empty string, as in Alertmanager.
    """

    name: str
    value: str
    op: str = "="

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise AlertError(f"matcher {self.name!r}: unknown operator {self.op!r}")
        if not _NAME.fullmatch(self.name):
            raise AlertError(f"matcher: invalid label name {self.name!r}")
        if self.op in ("=~", "!~"):
            _compile(self.value)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``route=bitfinex``, ``route=~"bit.*"`` or ``severity!=info``."""
        m = _NAME.match(text.strip())
        rest = text.strip()[m.end() :] if m else ""
        op = next((o for o in _OPS if rest.startswith(o)), None)
        if m is None or op is None:
            raise AlertError(f"cannot parse matcher {text!r}; expected name=value or name=~regex")
        value = rest[len(op) :].strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        return cls(m.group(0), value, op)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = _compile(self.value).fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Matcher:
        return cls(str(d["name"]), str(d["value"]), str(d.get("op", "=")))

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def _all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes notifications for alerts matching every matcher between ``starts_at`` and
    ``ends_at``. Expiring a silence sets ``ends_at`` to now (Alertmanager "delete")."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def is_active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return _all_match(self.matchers, labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [m.to_dict() for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(d["id"]),
            matchers=tuple(Matcher.from_dict(m) for m in d["matchers"]),
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            created_by=str(d["created_by"]),
            comment=str(d["comment"]),
            updated_at=float(d.get("updated_at", d["starts_at"])),
        )

    def __repr__(self) -> str:
        matchers = ",".join(str(m) for m in self.matchers)
        return (
            f"<Silence {self.id} {{{matchers}}} {self.starts_at:.0f}..{self.ends_at:.0f} "
            f"by {self.created_by!r}>"
        )


def make_silence(
    silence_id: str,
    matchers: Sequence[Matcher | str],
    *,
    starts_at: float,
    ends_at: float,
    created_by: str,
    comment: str,
    now: float,
) -> Silence:
    """Validate and build a silence; every problem is an :class:`AlertError`."""
    parsed = tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers)
    if not parsed:
        raise AlertError("a silence needs at least one matcher")
    if not comment.strip():
        raise AlertError("a silence needs a comment saying why")
    if not created_by.strip():
        raise AlertError("a silence needs created_by")
    if ends_at <= starts_at:
        raise AlertError(f"silence ends_at ({ends_at}) must be after starts_at ({starts_at})")
    return Silence(silence_id, parsed, starts_at, ends_at, created_by, comment, now)


@dataclass(frozen=True, slots=True)
class Ack:
    """An operator took ownership of a firing alert: repeats stop; it clears on resolve."""

    fingerprint: str
    by: str
    comment: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "by": self.by,
            "comment": self.comment,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ack:
        return cls(str(d["fingerprint"]), str(d["by"]), str(d.get("comment", "")), float(d["at"]))


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """A firing alert matching ``source`` mutes alerts matching ``target`` that carry the same
    values for every label in ``equal`` (missing = empty, as in Alertmanager)."""

    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


def _by_name(
    alerts: Sequence[tuple[str, Mapping[str, str]]],
) -> dict[str, list[tuple[str, Mapping[str, str]]]]:
    out: dict[str, list[tuple[str, Mapping[str, str]]]] = {}
    for fp, labels in alerts:
        out.setdefault(labels.get("alertname", ""), []).append((fp, labels))
    return out


def _narrow(
    matchers: Sequence[Matcher],
    everything: Sequence[tuple[str, Mapping[str, str]]],
    by_name: Mapping[str, list[tuple[str, Mapping[str, str]]]],
) -> Sequence[tuple[str, Mapping[str, str]]]:
    """Only the alerts a rule side can match, when it names one alertname exactly."""
    for m in matchers:
        if m.name == "alertname" and m.op == "=":
            return by_name.get(m.value, ())
    return everything


def inhibitions(
    firing: Sequence[tuple[str, Mapping[str, str]]],
    candidates: Sequence[tuple[str, Mapping[str, str]]],
    rules: Sequence[InhibitRule],
) -> dict[str, tuple[str, ...]]:
    """Map each inhibited candidate fingerprint to the fingerprints inhibiting it.

    ``firing`` are the possible sources (live alerts), ``candidates`` every alert to check.
    Linear in the number of alerts per rule: sources are indexed by their ``equal`` label
    values, and a side that names one alertname only looks at alerts of that name.
    """
    result: dict[str, list[str]] = {}
    sources_by_name = _by_name(firing)
    targets_by_name = _by_name(candidates)
    for rule in rules:
        index: dict[tuple[str, ...], list[tuple[str, Mapping[str, str]]]] = {}
        for fp, labels in _narrow(rule.source, firing, sources_by_name):
            if _all_match(rule.source, labels):
                key = tuple(labels.get(name, "") for name in rule.equal)
                index.setdefault(key, []).append((fp, labels))
        if not index:
            continue
        for fp, labels in _narrow(rule.target, candidates, targets_by_name):
            if not _all_match(rule.target, labels):
                continue
            sources = index.get(tuple(labels.get(name, "") for name in rule.equal), ())
            # Self-inhibition guard: an alert matching both sides is not muted by its peers.
            both = _all_match(rule.source, labels)
            for src_fp, src_labels in sources:
                if src_fp == fp or (both and _all_match(rule.target, src_labels)):
                    continue
                result.setdefault(fp, []).append(src_fp)
    return {fp: tuple(sorted(set(srcs))) for fp, srcs in result.items()}
