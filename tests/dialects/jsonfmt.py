"""Hypothesis strategies for one JSON value written every way the JSON grammar allows.

Exchanges write compact JSON in a fixed member order, but a locator must hold for any valid
formatting: insignificant whitespace between any two tokens, any member order, strings with
escapes (``\\/``, ``\\u00XX``, non-ASCII raw or escaped). :func:`formatted` draws one such text
for a given value; ``json.loads`` of it always equals the value.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

__all__ = ["formatted", "json_values", "write"]

_BLANKS = st.text(alphabet=" \t\n\r", max_size=3)


def _string(draw: st.DrawFn, s: str) -> str:
    """One drawn escape style per string: as json.dumps writes it, every character that can
    be escaped as ``\\uXXXX`` (slashes as ``\\/``), or raw non-ASCII."""
    style = draw(st.integers(0, 2))
    if style == 0:
        return json.dumps(s)
    if style == 2:
        return json.dumps(s, ensure_ascii=False)
    out = ['"']
    for ch in s:
        if ch in '"\\' or ord(ch) < 0x20:
            out.append(json.dumps(ch)[1:-1])
        elif ch == "/":
            out.append("\\/")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(json.dumps(ch)[1:-1])  # a surrogate pair
    out.append('"')
    return "".join(out)


def write(draw: st.DrawFn, value: Any, *, shuffle: bool = True) -> str:
    """``value`` as JSON text with drawn whitespace, member order and escapes."""
    ws = lambda: draw(_BLANKS)  # noqa: E731
    if isinstance(value, dict):
        items = list(value.items())
        if shuffle and items:
            items = draw(st.permutations(items))
        body = ",".join(
            f"{ws()}{_string(draw, k)}{ws()}:{ws()}{write(draw, v)}{ws()}" for k, v in items
        )
        return "{" + (body or ws()) + "}"
    if isinstance(value, list):
        body = ",".join(f"{ws()}{write(draw, v)}{ws()}" for v in value)
        return "[" + (body or ws()) + "]"
    if isinstance(value, str):
        return _string(draw, value)
    return json.dumps(value)


@st.composite
def formatted(draw: st.DrawFn, value: Any, shuffle: bool = True) -> str:
    return draw(_BLANKS) + write(draw, value, shuffle=shuffle) + draw(_BLANKS)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.text(max_size=8),
    st.from_regex(r"[0-9]{1,6}\.[0-9]{1,8}", fullmatch=True),  # prices as exchanges write them
)
json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
