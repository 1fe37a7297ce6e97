"""Log lines under systemd and elsewhere: priorities, JSON, repeats collapsed, masking."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import WSGATE, free_port, write_config
from wsgate.logsetup import JournalPrefix, JsonFormatter, RepeatCollapser, TextFormatter


def _record(level: int, msg: str, *args: object, name: str = "wsgate.route") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_journal_priorities_per_level_and_per_line() -> None:
    fmt = JournalPrefix(TextFormatter(timestamps=False))
    assert fmt.format(_record(logging.ERROR, "boom")) == "<3>ERROR wsgate.route: boom"
    assert fmt.format(_record(logging.WARNING, "w")).startswith("<4>WARNING")
    assert fmt.format(_record(logging.INFO, "i")).startswith("<6>INFO")
    assert fmt.format(_record(logging.DEBUG, "d")).startswith("<7>DEBUG")
    assert fmt.format(_record(logging.CRITICAL, "c")).startswith("<2>")
    try:
        raise ValueError("inner")
    except ValueError:
        rec = _record(logging.ERROR, "failed")
        rec.exc_info = sys.exc_info()
    lines = fmt.format(rec).split("\n")
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)


def test_json_lines_carry_level_logger_and_masked_message() -> None:
    rec = _record(logging.WARNING, "connect to %s failed", "wss://u:secretpw@example.com/x")
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["level"] == "warning" and doc["logger"] == "wsgate.route"
    assert "secretpw" not in doc["message"] and "example.com" in doc["message"]
    prefixed = JournalPrefix(JsonFormatter()).format(rec)
    assert prefixed.startswith("<4>{") and json.loads(prefixed[3:])["level"] == "warning"


def test_repeated_warnings_are_collapsed_with_a_count() -> None:
    now = [0.0]
    collapse = RepeatCollapser(window=60.0, clock=lambda: now[0])
    msg = "route %s: no eligible upstream connection"
    assert collapse.filter(_record(logging.WARNING, msg, "bitfinex"))
    for _ in range(35):
        now[0] += 1.0
        assert not collapse.filter(_record(logging.WARNING, msg, "bitfinex"))
    assert collapse.filter(_record(logging.WARNING, msg, "binance"))  # another text
    assert collapse.filter(_record(logging.INFO, "info is never collapsed"))
    assert collapse.filter(_record(logging.INFO, "info is never collapsed"))
    now[0] = 61.0
    rec = _record(logging.WARNING, msg, "bitfinex")
    assert collapse.filter(rec)
    assert rec.getMessage() == (
        "route bitfinex: no eligible upstream connection (and 35 more like it in the last 61s)"
    )
    assert collapse.collapsed == 35
    # A warning that stops repeating still reports its count once its window is over.
    for _ in range(3):
        now[0] += 1.0
        collapse.filter(_record(logging.WARNING, msg, "bitfinex"))
    assert collapse.flush() == []  # the window is still open
    now[0] += 60.0
    flushed = collapse.flush()
    assert flushed == [
        (
            "wsgate.route",
            logging.WARNING,
            "route bitfinex: no eligible upstream connection (and 3 more like it in the last 63s)",
        )
    ]
    assert collapse.flush() == []
    assert collapse.filter(_record(logging.WARNING, msg, "bitfinex"))  # printed at once again


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_daemon_logs_under_systemd(tmp_path: Path, log_format: str) -> None:
    cfg, _ = write_config(
        tmp_path,
        '[routes.r]\ndialect = "raw"\ntype = "market_data"\nmin_connections = 0\n'
        '[[routes.r.endpoints]]\nurl = "ws://127.0.0.1:9"\n',
        free_port(),
    )
    text = cfg.read_text().replace("[daemon]", f'[daemon]\nlog_format = "{log_format}"')
    cfg.write_text(text)
    env = {**os.environ, "JOURNAL_STREAM": "8:12345", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*WSGATE, "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if "ready" in line:
            break
    proc.terminate()
    rest, _ = proc.communicate(timeout=20)
    lines += rest.splitlines()
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines), lines
    info = [ln for ln in lines if ln.startswith("<6>")]
    assert info
    if log_format == "json":
        doc = json.loads(info[0][3:])
        assert doc["level"] == "info" and "ts" in doc
    else:
        assert info[0].startswith("<6>INFO wsgate")
