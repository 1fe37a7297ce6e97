"""How the daemon's log lines look: text or JSON, journald priorities, repeats collapsed.

* ``daemon.log_format = "text"`` (default): ``LEVEL logger: message``, with a timestamp
  on a terminal; ``"json"``: one JSON object per line (``ts``, ``level``, ``logger``,
  ``message``, ``exc`` when there is a traceback).
* Under systemd (``$JOURNAL_STREAM`` set) every line starts with its syslog priority,
  ``<3>`` error ... ``<7>`` debug (sd-daemon(3)), so ``journalctl -p warning`` works;
  the journal adds its own timestamps.
* A warning or error identical to one logged less than :data:`REPEAT_WINDOW` seconds
  ago is counted instead of printed; the next one after the window says how many were
  collapsed ("... (and 35 more like it in the last 60s)"); the health job reports the
  count of a warning that stopped repeating (:func:`flush_repeats`).

Every line still goes through :class:`wsgate.redact.RedactingFormatter`'s masking.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

from wsgate.redact import mask_text

__all__ = [
    "LOG_FORMATS",
    "REPEAT_WINDOW",
    "JournalPrefix",
    "JsonFormatter",
    "RepeatCollapser",
    "TextFormatter",
    "configure_logging",
    "current_format",
    "flush_repeats",
    "set_log_format",
]

LOG_FORMATS = ("text", "json")
REPEAT_WINDOW = 60.0
_MAX_TRACKED = 1024  # distinct repeated messages remembered; the oldest is forgotten first

# sd-daemon(3) priorities.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message``, masked; ``timestamps`` off under the journal."""

    log_format = "text"

    def __init__(self, timestamps: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(("%(asctime)s " + fmt) if timestamps else fmt)

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, masked; a traceback rides in ``exc``."""

    log_format = "json"

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_text(record.getMessage()),
        }
        if record.exc_info:
            doc["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


class JournalPrefix(logging.Formatter):
    """Wraps a formatter: ``<priority>`` before every line (a traceback's lines too)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner
        self.log_format = getattr(inner, "log_format", "text")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class RepeatCollapser(logging.Filter):
    """Drops a warning or error repeated within ``window`` seconds; counts and reports them."""

    def __init__(
        self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: OrderedDict[tuple[str, int, str], list[float]] = OrderedDict()
        self.collapsed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        key = (record.name, record.levelno, text)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window:
            seen[1] += 1
            self.collapsed += 1
            return False
        if seen is not None and seen[1]:
            span = now - seen[0]
            record.msg = f"{text} (and {int(seen[1])} more like it in the last {span:.0f}s)"
            record.args = ()
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > _MAX_TRACKED:
            self._seen.popitem(last=False)
        return True

    def flush(self) -> list[tuple[str, int, str]]:
        """Counts of collapsed repeats whose window is over, as (logger, level, line) to log;
        without it a warning that stopped repeating would never report its count."""
        now = self.clock()
        out: list[tuple[str, int, str]] = []
        for key, seen in list(self._seen.items()):
            if now - seen[0] >= self.window:
                if seen[1]:
                    name, level, text = key
                    span = now - seen[0]
                    out.append(
                        (
                            name,
                            level,
                            f"{text} (and {int(seen[1])} more like it in the last {span:.0f}s)",
                        )
                    )
                del self._seen[key]
        return out


def flush_repeats() -> int:
    """Log the counts of collapsed warnings whose window is over; returns how many lines."""
    lines: list[tuple[str, int, str]] = []
    for h in logging.getLogger().handlers:
        for f in h.filters:
            if isinstance(f, RepeatCollapser):
                lines += f.flush()
    for name, level, text in lines:
        logging.getLogger(name).log(level, "%s", text)
    return len(lines)


def _formatter(log_format: str) -> logging.Formatter:
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    inner: logging.Formatter = (
        JsonFormatter() if log_format == "json" else TextFormatter(timestamps=not journal)
    )
    return JournalPrefix(inner) if journal else inner


def configure_logging(level: str, log_format: str = "text", *, exclusive: bool = True) -> None:
    """The process's one stderr handler; call again (reload) to switch level or format.

    ``exclusive=False`` keeps the handlers already there (a test harness's capture).
    """
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_wsgate", False)), None)
    if handler is None:
        for old in list(root.handlers) if exclusive else []:
            root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler._wsgate = True  # type: ignore[attr-defined]
        handler.addFilter(RepeatCollapser())
        root.addHandler(handler)
    handler.setFormatter(_formatter(log_format))
    root.setLevel(level.upper())
    for noisy in ("websockets", "apscheduler", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_log_format(log_format: str) -> None:
    """Switch the process handler's format (a reload of ``daemon.log_format``)."""
    for h in logging.getLogger().handlers:
        if getattr(h, "_wsgate", False):
            h.setFormatter(_formatter(log_format))


def current_format() -> str | None:
    """The log_format the process's handler writes now (None before configure_logging)."""
    for h in logging.getLogger().handlers:
        if getattr(h, "_wsgate", False) and h.formatter is not None:
            return str(getattr(h.formatter, "log_format", "text"))
    return None
