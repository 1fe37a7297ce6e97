"""Where the members of a JSON object sit in its text, for any valid formatting.

Routing keys are read by slicing, never by re-encoding: a number relayed as ``29999.0`` instead
of ``29999`` breaks a bot's checksum, and re-encoding costs more than the whole fan-out. The
dialects' fast paths match the venue's usual compact form with ``str`` methods; every other
valid form (whitespace anywhere, any member order, escaped strings) lands here, where the
top-level members are walked with the C scanners of :mod:`json` and each value's exact span
is returned. The text between ``start`` and ``end`` is the value as the venue wrote it.
"""

from __future__ import annotations

import json
import json.decoder
from collections.abc import Callable

__all__ = ["Spans", "int_member", "object_spans", "str_member"]

_DECODER = json.JSONDecoder()
# The C string scanner json.loads itself uses (typeshed does not declare it).
scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_BLANK = " \t\n\r"


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
