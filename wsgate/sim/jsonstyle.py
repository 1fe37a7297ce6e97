"""Re-format compact JSON text the way other exchange-compatible servers write it.

The simulators write compact JSON, like the real exchanges. ``json_style`` makes them
write it spaced (``{"stream": "x", "data": {"p": 1}}``, Python's default separators) or
pretty (indent 2, a newline at the end) instead, so that tests show wsgate forwards every
valid formatting intact. Only insignificant whitespace is added: strings and numbers keep
their exact text (book checksums depend on it).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["STYLES", "JsonStyle", "restyle"]

JsonStyle = Literal["compact", "spaced", "pretty"]
STYLES: tuple[JsonStyle, ...] = ("compact", "spaced", "pretty")

# A string token (escapes included) or one structural character, outside strings.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[,:{}\[\]]')
_EMPTY = re.compile(r"([\[{])\n *\n *([\]}])")


def _spaced(m: re.Match[str]) -> str:
    tok = m.group()
    return tok + " " if tok in ",:" else tok


def restyle(text: str, style: str) -> str:
    """``text`` (valid compact JSON) in ``style``; ``compact`` returns it unchanged."""
    if style == "compact":
        return text
    if style == "spaced":
        return _TOKEN.sub(_spaced, text)
    if style != "pretty":
        raise ValueError(f"json_style: expected one of {', '.join(STYLES)}, got {style!r}")
    out: list[str] = []
    depth = 0
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos : m.start()])  # numbers and literals between tokens, verbatim
        pos = m.end()
        tok = m.group()
        if tok in "{[":
            depth += 1
            out.append(tok + "\n" + "  " * depth)
        elif tok in "}]":
            depth -= 1
            out.append("\n" + "  " * depth + tok)
        elif tok == ",":
            out.append(",\n" + "  " * depth)
        elif tok == ":":
            out.append(": ")
        else:
            out.append(tok)
    out.append(text[pos:])
    # Empty containers stay on one line, as json.dumps(indent=2) writes them.
    pretty = _EMPTY.sub(r"\1\2", "".join(out))
    return pretty + "\n"
