"""Where the members of a JSON object sit in its text, for any valid formatting.

Routing keys are read by slicing, never by re-encoding: a number relayed as ``29999.0`` instead
of ``29999`` breaks a bot's checksum, and re-encoding costs more than the whole fan-out. The
dialects' fast paths match the venue's usual compact form with ``str`` methods; every other
valid form (whitespace anywhere, any member order, escaped strings) lands here, where the
top-level members are walked with the C scanners of :mod:`json` and each value's exact span
is returned. The text between ``start`` and ``end`` is the value as the venue wrote it.

Beside the object walk: array elements (Bitfinex frames), a value's end, and integer members
read at the top level of an object only (``int_span``, ``int_field``: never from a string or
a nested object that happens to contain the same name).
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable
from typing import Any, cast

__all__ = [
    "WHITESPACE",
    "Spans",
    "elements",
    "int_field",
    "int_member",
    "int_span",
    "member_span",
    "object_spans",
    "str_member",
    "strip_span",
    "value_end",
]

_DECODER = json.JSONDecoder()
# The C string scanner json.loads itself uses (typeshed does not declare it).
scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_BLANK = " \t\n\r"
WHITESPACE = _BLANK  # JSON's insignificant whitespace, exactly (RFC 8259 §2)
# The C value scanner behind json.loads: (value, end) of the value starting at an index.
_scan_once = cast(
    Callable[[str, int], tuple[Any, int]],
    json.scanner.make_scanner(cast(Any, _DECODER)),
)
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_KEY_BEFORE = frozenset("{," + _BLANK)  # what may precede a member name in valid JSON
_AFTER_INT = frozenset(",}" + _BLANK)
_SPACED_INT: dict[str, re.Pattern[str]] = {}  # '"t":' -> the member with whitespace around ':'


def _skip(text: str, i: int, stop: int) -> int:
    while i < stop and text[i] in _BLANK:
        i += 1
    return i


def _at(text: str, i: int, stop: int) -> str:
    return text[i] if i < stop else ""


Spans = dict[str, tuple[int, int]]


def object_spans(text: str, start: int = 0, end: int | None = None) -> Spans | None:
    """``{name: (start, end)}`` of the values of the object in ``text[start:end]``.

    ``None`` when that text is not exactly one JSON object (surrounding whitespace allowed).
    A repeated name keeps its last value, as :func:`json.loads` does.
    """
    stop = len(text) if end is None else end
    try:
        i = _skip(text, start, stop)
        if _at(text, i, stop) != "{":
            return None
        i = _skip(text, i + 1, stop)
        spans: Spans = {}
        if _at(text, i, stop) == "}":
            return spans if _skip(text, i + 1, stop) == stop else None
        while True:
            if _at(text, i, stop) != '"':
                return None
            name, i = scanstring(text, i + 1)
            i = _skip(text, i, stop)
            if _at(text, i, stop) != ":":
                return None
            i = _skip(text, i + 1, stop)
            _, value_end = _DECODER.raw_decode(text, i)
            if value_end > stop:
                return None
            spans[name] = (i, value_end)
            i = _skip(text, value_end, stop)
            if _at(text, i, stop) == ",":
                i = _skip(text, i + 1, stop)
                continue
            if _at(text, i, stop) == "}":
                return spans if _skip(text, i + 1, stop) == stop else None
            return None
    except (ValueError, IndexError, RecursionError):
        return None


def str_member(text: str, spans: Spans, name: str) -> str | None:
    """The decoded string value of member ``name``, or None when absent or not a string."""
    span = spans.get(name)
    if span is None or text[span[0]] != '"':
        return None
    try:
        value, _ = scanstring(text, span[0] + 1)
    except ValueError:
        return None
    return value


def int_member(text: str, spans: Spans, name: str) -> int | None:
    """The value of member ``name`` when it is an integer (or a string of digits)."""
    span = spans.get(name)
    if span is None:
        return None
    raw = text[span[0] : span[1]]
    if raw.startswith('"'):
        raw = raw[1:-1]
    if raw.startswith("-"):
        body = raw[1:]
        return -int(body) if body.isdigit() and body.isascii() else None
    return int(raw) if raw.isdigit() and raw.isascii() else None


def strip_span(text: str, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """``(start, end)`` narrowed to exclude surrounding JSON whitespace."""
    end = len(text) if end is None else end
    while start < end and text[start] in _BLANK:
        start += 1
    while end > start and text[end - 1] in _BLANK:
        end -= 1
    return start, end


def value_end(text: str, i: int) -> int:
    """End (exclusive) of the JSON value that starts exactly at ``text[i]``.

    Raises ``ValueError`` when no valid value starts there.
    """
    try:
        return _scan_once(text, i)[1]
    except StopIteration:
        raise ValueError(f"no JSON value at offset {i}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def elements(text: str, i: int = 0) -> list[tuple[int, int]]:
    """``(start, end)`` of each element of the array at/after ``text[i]``.

    Raises ``ValueError`` when no valid array starts there.
    """
    stop = len(text)
    i = _skip(text, i, stop)
    if _at(text, i, stop) != "[":
        raise ValueError(f"expected an array at offset {i}")
    out: list[tuple[int, int]] = []
    i = _skip(text, i + 1, stop)
    if _at(text, i, stop) == "]":
        return out
    while True:
        end = value_end(text, i)
        out.append((i, end))
        i = _skip(text, end, stop)
        sep = _at(text, i, stop)
        if sep == "]":
            return out
        if sep != ",":
            raise ValueError(f"expected ',' or ']' at offset {i}")
        i = _skip(text, i + 1, stop)


def member_span(
    text: str, name: str, start: int = 0, end: int | None = None
) -> tuple[int, int] | None:
    """Extent of the value of member ``name`` of the object in ``text[start:end]``."""
    spans = object_spans(text, start, end)
    return None if spans is None else spans.get(name)


def int_span(text: str, start: int, end: int, token: str) -> tuple[int, int] | None:
    """Extent of the integer value of a member of the object ``text[start:end]``.

    ``token`` is the member's compact prefix, e.g. ``'"t":'``. Fast path: the first
    occurrence of ``token`` is a member of the top level (nothing nested before it, not
    inside a string) directly followed by an integer; then the same with whitespace around
    the colon. Otherwise the object is walked. ``None`` when the member is absent or its
    value is not an integer.
    """
    i = text.find(token, start, end)
    if (
        i > start
        and text[i - 1] in _KEY_BEFORE
        and text.find("{", start + 1, i) < 0
        and text.find("[", start + 1, i) < 0
    ):
        k = i + len(token)
        j = text.find(",", k, end)
        if j > k and text[k:j].isdecimal():  # the common case: a comma follows the digits
            return k, j
        m = _INT.match(text, k, end)
        if m is not None:
            j = m.end()
            if j < end and text[j] in _AFTER_INT:
                return k, j
    rx = _SPACED_INT.get(token)
    if rx is None:
        rx = _SPACED_INT[token] = re.compile(
            rf'(?<=[{{,{_WS_CLASS}])"{re.escape(token[1:-2])}"[{_WS_CLASS}]*:[{_WS_CLASS}]*'
            rf"(-?(?:0|[1-9][0-9]*))(?=[,}}{_WS_CLASS}])"
        )
    found = rx.search(text, start, end)
    if (
        found is not None
        and text.find("{", start + 1, found.start()) < 0
        and text.find("[", start + 1, found.start()) < 0
    ):
        return found.span(1)
    span = member_span(text, token[1:-2], start, end)
    if span is None or _INT.fullmatch(text, span[0], span[1]) is None:
        return None
    return span


_WS_CLASS = r" \t\n\r"


def int_field(text: str, name: str, start: int, end: int) -> int | None:
    """The integer member ``name`` of the object ``text[start:end]`` (a trade id, an update
    id), read at its top level only: a nested object or a string holding the same name is
    never mistaken for it. A string of digits counts too (``"u":"12"``). ``None`` when the
    member is absent or holds anything else.

    This runs for every depth and trade frame, so :func:`int_span`'s compact fast path is
    inlined: the member right after a ``,`` or ``{`` of the top level, digits then a comma.
    """
    token = f'"{name}":'
    i = text.find(token, start, end)
    if i > start and text[i - 1] in ",{" and text.find("{", start + 1, i) < 0:
        k = i + len(token)
        j = text.find(",", k, end)
        if j > k:
            digits = text[k:j]
            if digits.isdecimal() and text.find("[", start + 1, i) < 0:
                return int(digits)
    span = int_span(text, start, end, token)
    if span is not None:
        return int(text[span[0] : span[1]])
    spans = object_spans(text, start, end)
    return int_member(text, spans, name) if spans is not None else None
