"""Find the source line of a key path in a TOML text, and read tables collecting problems.

TOML parsers return plain dicts without positions, so semantic errors ("min > max")
would have no line number. This locator scans the text once for ``[table]`` and
``[[array.of.tables]]`` headers (counting array indices the way the parser does) and
for ``key =`` lines, and maps each key path to the line where it was written.

It is best effort by design: keys inside inline tables and multi-line arrays are not
indexed, so a lookup falls back to the nearest enclosing key or table header that is.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import tomli

from wsgate.config.durations import parse_duration
from wsgate.config.schema import BudgetConfig
from wsgate.errors import ConfigProblem

__all__ = [
    "KeyPath",
    "Problems",
    "SourceLocator",
    "Table",
    "did_you_mean",
    "render_path",
    "short",
    "toml_type",
]

E = TypeVar("E", bound=Enum)

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def render_path(path: KeyPath) -> str:
    """``("routes", "bitfinex", "endpoints", 1, "url")`` -> ``routes.bitfinex.endpoints[1].url``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{text}" if out else text
    return out


def _split_key(text: str) -> tuple[list[str], str] | None:
    """Parse a dotted key at the start of ``text``; return (parts, rest) or None."""
    parts: list[str] = []
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            return None
        quote = text[pos]
        if quote in "\"'":
            end = text.find(quote, pos + 1)
            # Escaped quotes in basic strings are rare in keys; stop at the first
            # unescaped one and accept an imprecise line for the exotic case.
            while quote == '"' and end > 0 and text[end - 1] == "\\":
                end = text.find(quote, end + 1)
            if end < 0:
                return None
            parts.append(text[pos + 1 : end])
            pos = end + 1
        else:
            match = _BARE_KEY.match(text, pos)
            if match is None:
                return None
            parts.append(match.group(0))
            pos = match.end()
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == ".":
            pos += 1
            continue
        return parts, text[pos:]


class SourceLocator:
    """Maps key paths to 1-based line numbers of a TOML source text."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._array_counts: dict[KeyPath, int] = {}
        self._scan(text)

    def __repr__(self) -> str:
        return f"<SourceLocator keys={len(self._lines)}>"

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, else of its nearest located ancestor, else None."""
        probe = tuple(path)
        while probe:
            line = self._lines.get(probe)
            if line is not None:
                return line
            probe = probe[:-1]
        return None

    def _resolve(self, parts: list[str]) -> KeyPath:
        # A header like [a.b] inside an array of tables [[a]] refers to the last element.
        full: list[str | int] = []
        for part in parts:
            full.append(part)
            count = self._array_counts.get(tuple(full))
            if count:
                full.append(count - 1)
        return tuple(full)

    def _remember(self, path: KeyPath, lineno: int) -> None:
        self._lines.setdefault(path, lineno)

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        in_multiline: str | None = None
        # TOML lines end at "\n" only: str.splitlines() would also split inside a string at
        # U+2028, U+0085 and the like and count lines past the end of the file.
        for lineno, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            if not line or line.startswith("#"):
                continue
            if line.startswith("[["):
                split = _split_key(line[2:])
                if split is None or not split[1].lstrip().startswith("]]"):
                    continue
                parent = (*self._resolve(split[0][:-1]), split[0][-1])
                index = self._array_counts.get(parent, 0)
                self._array_counts[parent] = index + 1
                table = (*parent, index)
                self._remember(parent, lineno)
                self._remember(table, lineno)
                continue
            if line.startswith("["):
                split = _split_key(line[1:])
                if split is None or not split[1].lstrip().startswith("]"):
                    continue
                table = self._resolve(split[0])
                self._remember(table, lineno)
                continue
            split = _split_key(line)
            if split is None or not split[1].startswith("="):
                continue
            parts, rest = split
            for depth in range(1, len(parts) + 1):
                self._remember((*table, *parts[:depth]), lineno)
            value = rest[1:].strip()
            for quote in ('"""', "'''"):
                if value.startswith(quote) and value.count(quote) == 1:
                    in_multiline = quote


# --- reading values with every problem collected -------------------------------------

# Keys that hold a duration in seconds and so also accept "5s", "2m", "1h" (the values of a
# route's channel_cadence table are durations too).
DURATION_KEYS = frozenset(
    {
        "shutdown_timeout",
        "linger",
        "health_check_interval",
        "analytics_interval",
        "alert_check_interval",
        "cleanup_interval",
        "history_retention",
        "stale_after",
        "ping_interval",
        "ping_timeout",
        "app_ping_interval",
        "max_lifetime",
        "backoff_initial",
        "backoff_max",
        "min_uptime",
        "slow_start",
        "per",
        "timeout",
        "keep_firing_for",
        "group_wait",
        "group_interval",
        "repeat_interval",
        "flap_window",
        "cause_hold",
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MISSING: Any = object()


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for "expected X, got Y" messages."""
    if isinstance(value, bool):
        return "boolean"
    for kind, name in (
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        (datetime.datetime, "datetime"),
        (datetime.date, "date"),
        (datetime.time, "time"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def short(value: object, limit: int = 60) -> str:
    """repr() of a value, cut with an ellipsis so one error stays on one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 2] + "…" + text[-1]


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


class Problems:
    """Collects :class:`ConfigProblem` entries, resolving their lines through the locator."""

    def __init__(self, locator: SourceLocator | None) -> None:
        self._locator = locator
        self.items: list[ConfigProblem] = []

    def __repr__(self) -> str:
        return f"<Problems count={len(self.items)}>"

    def add(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        line = self._locator.line_of(path) if self._locator is not None else None
        self.items.append(ConfigProblem(render_path(path), message, line, hint))

    def sorted(self) -> list[ConfigProblem]:
        return sorted(self.items, key=lambda p: p.line if p.line is not None else 0)


class Table:
    """A TOML table being read: typed getters record problems and return defaults.

    Every getter marks its key as known; :meth:`finish` then reports the keys that no
    getter asked for, with a did-you-mean hint drawn from the known ones.
    """

    def __init__(self, problems: Problems, path: KeyPath, data: dict[str, Any]) -> None:
        self.problems = problems
        self.path = path
        self.data = data
        self.known: list[str] = []

    def __repr__(self) -> str:
        return f"<Table {render_path(self.path) or '<root>'} keys={sorted(self.data)}>"

    def at(self, key: str | int) -> KeyPath:
        return (*self.path, key)

    def problem(self, key: str | int | None, message: str, hint: str | None = None) -> None:
        self.problems.add(self.path if key is None else self.at(key), message, hint)

    def has(self, key: str) -> bool:
        self._know(key)
        return key in self.data

    def _know(self, key: str) -> None:
        if key not in self.known:
            self.known.append(key)

    def _raw(self, key: str, required: bool) -> Any:
        self._know(key)
        if key in self.data:
            return self.data[key]
        if required:
            self.problem(key, f"missing required key {key!r}")
        return _MISSING

    def _wrong(self, key: str, expected: str, value: object) -> None:
        self.problem(key, f"expected {expected}, got {toml_type(value)} {short(value)}")

    def string(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        choices: Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> Any:
        """A string (or ``default``, which may be None, when absent or invalid)."""
        value = self._raw(key, default is _MISSING)
        if value is _MISSING:
            return None if default is _MISSING else default
        if not isinstance(value, str):
            self._wrong(key, "string", value)
            return None if default is _MISSING else default
        if choices is not None and value not in choices:
            self.problem(
                key,
                f"expected one of {', '.join(choices)}; got {short(value)}",
                did_you_mean(value, choices),
            )
            return None if default is _MISSING else default
        if not allow_empty and choices is None and not value.strip():
            self.problem(key, "must not be empty")
            return None if default is _MISSING else default
        return value

    def env_name(self, key: str) -> str | None:
        value: str | None = self.string(key, None)
        if value is not None and not _ENV_NAME.fullmatch(value):
            self.problem(key, f"expected an environment variable name, got {short(value)}")
            return None
        return value

    def enum(self, key: str, enum_cls: type[E], default: E | None = None) -> E | None:
        choices = [member.value for member in enum_cls]
        raw = self.string(key, _MISSING if default is None else default.value, choices=choices)
        return None if raw is None else enum_cls(raw)

    def integer(
        self, key: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None
    ) -> Any:
        value = self._raw(key, default is _MISSING)
        fallback = None if default is _MISSING else default
        if value is _MISSING:
            return fallback
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, "integer", value)
            return fallback
        if lo is not None and value < lo:
            self.problem(key, f"must be >= {lo}, got {short(value)}")
            return fallback
        if hi is not None and value > hi:
            self.problem(key, f"must be <= {hi}, got {short(value)}")
            return fallback
        return value

    def is_duration(self, key: str) -> bool:
        return key in DURATION_KEYS or (bool(self.path) and self.path[-1] == "channel_cadence")

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        positive: bool = True,
        minimum: float | None = None,
        signed: bool = False,
    ) -> Any:
        """A finite int or float as float. Durations: > 0 by default; ``minimum`` = inclusive.

        A duration key (:data:`DURATION_KEYS`) also takes a string: "500ms", "5s", "2m", "1h".
        """
        value = self._raw(key, default is _MISSING)
        fallback = None if default is _MISSING else default
        if value is _MISSING:
            return fallback
        if isinstance(value, str) and self.is_duration(key):
            try:
                value = parse_duration(value)
            except ValueError as exc:
                self.problem(key, str(exc))
                return fallback
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(key, "number (int or float)", value)
            return fallback
        if isinstance(value, int) and abs(value) > 2**53:
            self.problem(key, f"number out of range: {short(value)}")
            return fallback
        number = float(value)
        if not math.isfinite(number):
            self.problem(key, f"expected a finite number, got {short(value)}")
            return fallback
        if minimum is not None:
            if number < minimum:
                self.problem(key, f"must be >= {minimum:g}, got {short(value)}")
                return fallback
        elif positive and not signed and number <= 0:
            self.problem(key, f"must be > 0, got {short(value)}")
            return fallback
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self._raw(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self._wrong(key, "boolean (true or false)", value)
            return default
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._raw(key, False)
        if value is _MISSING:
            return ()
        if not isinstance(value, list):
            self._wrong(key, "array of strings", value)
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item.strip():
                out.append(item)
            else:
                self.problems.add(
                    (*self.path, key, index),
                    f"expected non-empty string, got {toml_type(item)} {short(item)}",
                )
        return tuple(out)

    def table(self, key: str, required: bool = False) -> Table | None:
        value = self._raw(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self._wrong(key, "table", value)
            return None
        return Table(self.problems, self.at(key), value)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        sub = self.table(key)
        if sub is None:
            return ()
        out = []
        for name in sorted(sub.data):
            value = sub.string(name)
            if value is not None:
                out.append((name, value))
        return tuple(out)

    def finish(self, foreign: Mapping[str, str] | None = None) -> None:
        """Report unknown keys. ``foreign`` maps keys valid elsewhere to a specific message."""
        for key in self.data:
            if key in self.known:
                continue
            if foreign and key in foreign:
                self.problem(key, foreign[key])
            else:
                self.problem(key, f"unknown key {key!r}", did_you_mean(key, self.known))

    def check_listen(self, key: str, value: str, *, allow_empty: bool = False) -> bool:
        if allow_empty and value == "":
            return True
        host, sep, port = value.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        ok = bool(sep and host and port.isascii() and port.isdigit() and int(port) <= 65535)
        ok = ok and (bracketed or ":" not in host) and "/" not in host and " " not in host
        if not ok:
            example = '"127.0.0.1:8765" or "[::1]:8765"' + (
                ' or "" to disable' if allow_empty else ""
            )
            self.problem(key, f"expected host:port, got {short(value)}", f"for example {example}")
        return ok

    def check_url(self, key: str | int, value: str, schemes: tuple[str, ...]) -> bool:
        wanted = " or ".join(f"{s}://" for s in schemes)
        try:
            parts = urlsplit(value)
            ok = parts.scheme in schemes and bool(parts.hostname)
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            self.problem(key, f"expected {wanted} URL, got {short(value)}")
        return ok

    def only_one(self, keys: tuple[str, ...], values: tuple[object, ...]) -> None:
        given = [k for k, v in zip(keys, values, strict=True) if v is not None]
        if len(given) > 1:
            self.problem(given[1], f"set only one of {', '.join(keys)} (got {', '.join(given)})")


def read_budget(t: Table, key: str, default: BudgetConfig) -> BudgetConfig:
    """A ``{count, per}`` budget table under ``key`` (connect/message/notification budgets)."""
    sub = t.table(key)
    if sub is None:
        return default
    budget = BudgetConfig(
        count=sub.integer("count", default.count, lo=1),
        per=sub.number("per", default.per),
    )
    sub.finish()
    return budget


def nesting_problem(text: str) -> ConfigProblem:
    lines = text.splitlines() or [""]
    deepest = max(range(len(lines)), key=lambda i: lines[i].count("[") + lines[i].count("{"))
    return ConfigProblem(
        "<toml>",
        "invalid TOML: inline arrays/tables are nested too deeply",
        deepest + 1,
        "no wsgate setting needs more than a few levels of nesting",
    )


def syntax_problem(exc: tomli.TOMLDecodeError) -> ConfigProblem:
    line: int | None = getattr(exc, "lineno", None)
    col: int | None = getattr(exc, "colno", None)
    msg: str = getattr(exc, "msg", str(exc))
    match = re.fullmatch(r"Cannot declare \((.*)\) twice", msg)
    if match:
        keys = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", match.group(1))
        path = ".".join(a or b for a, b in keys)
        return ConfigProblem(
            path or "<toml>",
            f"table [{path}] is declared twice",
            line,
            "merge the two tables into one; each route, channel and rule is declared once",
        )
    if msg == "Cannot overwrite a value":
        return ConfigProblem(
            "<toml>", "a key is set twice", line, "remove one of the two assignments"
        )
    return ConfigProblem("<toml>", f"invalid TOML: {msg}", line, f"column {col}" if col else None)
