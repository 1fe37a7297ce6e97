"""Durations as operators write them: ``90``, ``"45s"``, ``"15m"``, ``"2h"``, ``"1d12h"``.

One parser for the CLI (``alerts silence --for 2h``), the control API and the config file
(``stale_after = "20s"``). Stdlib only.
"""

from __future__ import annotations

import re

__all__ = ["UNITS", "parse_duration"]

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[smhdw]?)")


def parse_duration(text: object) -> float:
    """Seconds; a bare number is seconds. Raises ValueError naming the accepted forms."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip().lower()
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * UNITS[m.group(2) or "s"]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"cannot parse duration {text!r}; use e.g. 90, 45s, 15m, 2h, 1d")
    return total
