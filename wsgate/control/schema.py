"""Parameter schemas of control methods: one per method, checked before its handler runs.

A :class:`Schema` maps parameter names to :class:`Param` specs (type, range, length,
choices). The server checks a request's ``params`` against the method's schema and
hands the handler a clean dict: values converted (durations to seconds), defaults
filled in, absent optional parameters left out. ``null`` counts as absent, because the
CLI sends unset options as ``null``. An unknown name is refused with a did-you-mean: a
mistyped option in a script must fail, not be ignored.

Every refusal is a :class:`~wsgate.errors.ControlError` with code ``invalid_params``
that names the method, the parameter, what was expected and what came. Nothing here
raises anything else, whatever JSON arrives (``tests/fuzz`` holds it to that).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from wsgate.config.locate import did_you_mean
from wsgate.control import wire
from wsgate.errors import ControlError

__all__ = [
    "NO_PARAMS",
    "Kind",
    "Param",
    "Schema",
    "duration",
    "integer",
    "number",
    "parse_duration",
    "string",
    "strings",
]

MAX_DURATION = 10 * 366 * 86400.0  # ten years: longer is a typo, and float time stays exact
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)([smhdw]?)")


def parse_duration(text: Any) -> float:
    """``90``, ``45s``, ``15m``, ``2h``, ``1d12h`` -> seconds (finite, 0..ten years)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        try:
            value = float(text)
        except OverflowError:
            value = math.inf
    else:
        s = str(text).strip().lower()
        pos, value = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2) or "s"]
            pos = m.end()
        if not s or pos != len(s):
            raise ControlError(
                wire.INVALID_PARAMS,
                f"cannot parse duration {_show(text)}; use e.g. 90, 45s, 15m, 2h, 1d",
            )
    if not 0.0 <= value <= MAX_DURATION:  # also false for NaN
        raise ControlError(
            wire.INVALID_PARAMS,
            f"duration {_show(text)} is out of range (0 to {MAX_DURATION / 86400:.0f} days)",
        )
    return value


class Kind(Enum):
    STRING = "a string"
    INTEGER = "an integer"
    NUMBER = "a number"
    STRINGS = "a list of strings"
    DURATION = "a duration (seconds, or e.g. 45s, 15m, 2h, 1d)"


def _show(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…" + text[-1]


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True)
class Param:
    """One parameter: its kind, whether it is required, its default and its bounds."""

    kind: Kind
    required: bool = False
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    max_len: int = 256  # characters of a string; items of a list
    allow_empty: bool = False

    def check(self, name: str, value: Any) -> Any:
        """The clean value, or ``ValueError(reason)``."""
        if self.kind is Kind.STRING:
            return self._string(value)
        if self.kind is Kind.STRINGS:
            if not isinstance(value, list):
                raise ValueError(f"expected {self.kind.value}, got {_type_name(value)}")
            if not value and not self.allow_empty:
                raise ValueError("expected at least one item")
            if len(value) > self.max_len:
                raise ValueError(f"at most {self.max_len} items, got {len(value)}")
            return [Param(Kind.STRING).check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if self.kind is Kind.DURATION:
            try:
                seconds = parse_duration(value)
            except ControlError as exc:
                raise ValueError(exc.message) from None
            return self._bounded(seconds, value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected {self.kind.value}, got {_type_name(value)} {_show(value)}")
        if self.kind is Kind.INTEGER:
            if isinstance(value, float):
                if not value.is_integer():  # NaN and infinities are not integers either
                    raise ValueError(f"expected {self.kind.value}, got {_show(value)}")
                if abs(value) > 2**53:
                    raise ValueError(self._range_text(value))
                value = int(value)
            return int(self._bounded(value, value))
        if isinstance(value, int) and abs(value) > 2**53:
            raise ValueError(self._range_text(value))
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {_show(value)}")
        return self._bounded(number, value)

    def _string(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(
                f"expected {Kind.STRING.value}, got {_type_name(value)} {_show(value)}"
            )
        if not self.allow_empty and not value.strip():
            raise ValueError("must not be empty")
        if len(value) > self.max_len:
            raise ValueError(f"at most {self.max_len} characters, got {len(value)}")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if self.choices and value not in self.choices:
            hint = did_you_mean(value, self.choices)
            raise ValueError(
                f"expected one of {', '.join(self.choices)}; got {_show(value)}"
                + (f" ({hint})" if hint else "")
            )
        return value

    def _range_text(self, shown: object) -> str:
        lo = "" if self.lo is None else f"{self.lo:g}"
        hi = "" if self.hi is None else f"{self.hi:g}"
        if lo and hi:
            return f"must be between {lo} and {hi}, got {_show(shown)}"
        if lo:
            return f"must be >= {lo}, got {_show(shown)}"
        return f"must be <= {hi}, got {_show(shown)}"

    def _bounded(self, number: float, shown: object) -> float:
        if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            raise ValueError(self._range_text(shown))
        return number


def string(
    *,
    required: bool = False,
    default: str | None = None,
    choices: tuple[str, ...] = (),
    max_len: int = 256,
    allow_empty: bool = False,
) -> Param:
    return Param(
        Kind.STRING,
        required,
        default,
        choices=choices,
        max_len=max_len,
        allow_empty=allow_empty,
    )


def integer(
    lo: int | None = None,
    hi: int | None = None,
    *,
    required: bool = False,
    default: int | None = None,
) -> Param:
    return Param(Kind.INTEGER, required, default, lo, hi)


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    required: bool = False,
    default: float | None = None,
) -> Param:
    return Param(Kind.NUMBER, required, default, lo, hi)


def duration(lo: float = 0.0, hi: float = MAX_DURATION, *, required: bool = False) -> Param:
    return Param(Kind.DURATION, required, None, lo, hi)


def strings(*, required: bool = False, max_items: int = 32) -> Param:
    return Param(Kind.STRINGS, required, None, max_len=max_items)


class Schema:
    """The parameters of one control method."""

    __slots__ = ("params",)

    def __init__(self, **params: Param) -> None:
        self.params: Mapping[str, Param] = dict(params)

    def __repr__(self) -> str:
        return f"<Schema {', '.join(self.params) or 'no parameters'}>"

    def check(self, method: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``raw``; return the clean parameters or raise ``invalid_params``."""
        for name in raw:
            if name not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                hint = did_you_mean(str(name), self.params)
                raise ControlError(
                    wire.INVALID_PARAMS,
                    f"{method}: unknown parameter {_show(name)} (parameters: {known})"
                    + (f"; {hint}" if hint else ""),
                )
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            value = raw.get(name)
            if value is None:
                if spec.required:
                    raise ControlError(wire.INVALID_PARAMS, f"{method}: missing parameter {name!r}")
                if spec.default is not None:
                    out[name] = spec.default
                continue
            try:
                out[name] = spec.check(name, value)
            except ValueError as exc:
                raise ControlError(wire.INVALID_PARAMS, f"{method}: {name}: {exc}") from None
        return out

    def describe(self) -> dict[str, str]:
        """``{name: "an integer (required)"}``, for error details and docs."""
        return {
            name: p.kind.value + (" (required)" if p.required else "")
            for name, p in self.params.items()
        }


NO_PARAMS = Schema()
