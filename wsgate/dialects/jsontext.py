"""Locating parts of a JSON text without re-encoding it: value extents, members, int fields.

The dialects route and rewrite upstream frames by slicing, so that numbers reach the bots
exactly as the exchange wrote them. Slicing is only correct if the slice boundaries are the
real boundaries of a JSON value, whatever formatting the upstream chose: insignificant
whitespace anywhere, any member order, escaped strings. The dialects keep a fast path for
the compact form every exchange actually sends and fall back to these helpers, which find
the boundaries with the C JSON scanner (``json.scanner``): exact for every valid JSON text.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

__all__ = [
    "WHITESPACE",
    "elements",
    "int_span",
    "member_span",
    "members",
    "strip_span",
    "value_end",
]

WHITESPACE = " \t\n\r"  # JSON's insignificant whitespace, exactly (RFC 8259 §2)

_ws_end = re.compile(r"[ \t\n\r]*").match
# The C implementations behind json.loads (typeshed does not declare them).
_scan_once = cast(
    Callable[[str, int], tuple[Any, int]],
    json.scanner.make_scanner(cast(Any, json.JSONDecoder())),
)
_scanstring = cast(Callable[[str, int], tuple[str, int]], json.decoder.scanstring)  # type: ignore[attr-defined]
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_KEY_BEFORE = frozenset("{," + WHITESPACE)  # what may precede a member name in valid JSON
_WS_CLASS = r" \t\n\r"
_SPACED_INT: dict[str, re.Pattern[str]] = {}  # '"t":' -> the member with whitespace around ':'
_AFTER_INT = frozenset(",}" + WHITESPACE)


def _skip(text: str, i: int) -> int:
    m = _ws_end(text, i)
    return m.end() if m is not None else i


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


def strip_span(text: str, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """``(start, end)`` narrowed to exclude surrounding JSON whitespace."""
    end = len(text) if end is None else end
    while start < end and text[start] in WHITESPACE:
        start += 1
    while end > start and text[end - 1] in WHITESPACE:
        end -= 1
    return start, end


def members(text: str, i: int = 0) -> Iterator[tuple[str, int, int]]:
    """``(name, value_start, value_end)`` of each member of the object at/after ``text[i]``.

    ``i`` may point at whitespace before the ``{``. Raises ``ValueError`` on invalid JSON.
    """
    i = _skip(text, i)
    if text[i : i + 1] != "{":
        raise ValueError(f"expected an object at offset {i}")
    i = _skip(text, i + 1)
    if text[i : i + 1] == "}":
        return
    while True:
        if text[i : i + 1] != '"':
            raise ValueError(f"expected a member name at offset {i}")
        name, i = _scanstring(text, i + 1)
        i = _skip(text, i)
        if text[i : i + 1] != ":":
            raise ValueError(f"expected ':' at offset {i}")
        start = _skip(text, i + 1)
        end = value_end(text, start)
        yield name, start, end
        i = _skip(text, end)
        sep = text[i : i + 1]
        if sep == "}":
            return
        if sep != ",":
            raise ValueError(f"expected ',' or '}}' at offset {i}")
        i = _skip(text, i + 1)


def elements(text: str, i: int = 0) -> list[tuple[int, int]]:
    """``(start, end)`` of each element of the array at/after ``text[i]``."""
    i = _skip(text, i)
    if text[i : i + 1] != "[":
        raise ValueError(f"expected an array at offset {i}")
    out: list[tuple[int, int]] = []
    i = _skip(text, i + 1)
    if text[i : i + 1] == "]":
        return out
    while True:
        end = value_end(text, i)
        out.append((i, end))
        i = _skip(text, end)
        sep = text[i : i + 1]
        if sep == "]":
            return out
        if sep != ",":
            raise ValueError(f"expected ',' or ']' at offset {i}")
        i = _skip(text, i + 1)


def member_span(text: str, name: str, i: int = 0) -> tuple[int, int] | None:
    """Extent of the value of member ``name`` of the object at/after ``text[i]`` (the last
    one, as JSON parsers do, if the name repeats); ``None`` when absent or not an object."""
    found: tuple[int, int] | None = None
    try:
        for key, start, end in members(text, i):
            if key == name:
                found = (start, end)
    except ValueError:
        return None
    return found


def int_span(text: str, start: int, end: int, token: str) -> tuple[int, int] | None:
    """Extent of the integer value of a member of the object ``text[start:end]``.

    ``token`` is the member's compact prefix, e.g. ``'"t":'``. Fast path: the first
    occurrence of ``token`` is a member of the top level (nothing nested before it, not
    inside a string) directly followed by an integer; then the same with whitespace around
    the colon. Otherwise the object is scanned. ``None`` when the member is absent or its
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
    if found is not None and _top_level(text, start, found.start()):
        return found.span(1)
    span = member_span(text, token[1:-2], start)
    if span is None or _INT.fullmatch(text, span[0], span[1]) is None:
        return None
    return span


def _top_level(text: str, start: int, i: int) -> bool:
    """Nothing opens between the object's own ``{`` at ``start`` and ``i``."""
    return text.find("{", start + 1, i) < 0 and text.find("[", start + 1, i) < 0
