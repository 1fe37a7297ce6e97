"""`/metrics` of a live demo daemon passes `promtool check metrics`, and a strict check of ours.

promtool comes from Debian's `prometheus` package (`make promtool` extracts it into the
venv; `make test` tries that first). Where it cannot be had, the promtool test is skipped
and the strict check below still runs: it enforces what promtool's linter does for this
output (HELP and TYPE on every family, counters end in _total, histograms have cumulative
buckets ending at +Inf with a matching _count) and the rules of our own (no label named
`job` or `instance`, no `quantile` label outside a summary, snake_case names).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import WSGATE, free_port, stop_daemon, wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found:
        return found
    local = Path(sys.executable).with_name("promtool")
    return str(local) if local.exists() else None


@pytest.fixture(scope="module")
def metrics_text() -> Iterator[str]:
    """The exposition of a demo daemon with its bots connected and RTT samples in."""
    directory = Path(tempfile.mkdtemp(prefix="wsg-", dir="/tmp"))
    metrics_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WSGATE_DAEMON_CONTROL_SOCKET": str(directory / "ctl.sock"),
        "WSGATE_DAEMON_STATE_DIR": str(directory / "state"),
    }
    log = (directory / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [
            *WSGATE,
            "run",
            "--demo",
            "--listen",
            f"127.0.0.1:{gateway_port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())

    def ready() -> bool:
        assert proc.poll() is None, (directory / "daemon.log").read_text()
        try:
            text = scrape()
        except OSError:
            return False
        rtt_seen = re.search(r"wsgate_upstream_rtt_seconds_count\{[^}]*\} [1-9]", text)
        return "wsgate_sessions_open" in text and rtt_seen is not None

    try:
        wait_until(ready, 60, "demo metrics with RTT samples")
        try:  # one refused handshake: an unknown route
            urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/no_such_route", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        yield scrape()
    finally:
        stop_daemon(proc)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_promtool_check_metrics(metrics_text: str) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (make promtool); the strict check still runs")
    proc = subprocess.run(
        [tool, "check", "metrics"], input=metrics_text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def test_strict_exposition_check(metrics_text: str) -> None:
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in metrics_text.splitlines():
        if line.startswith("# HELP "):
            name, _, text = line[7:].partition(" ")
            assert text.strip(), f"empty HELP for {name}"
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m, f"unparsable sample line: {line!r}"
            labels = dict(_LABEL.findall(m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    assert set(helps) == set(types)
    for name, kind in types.items():
        assert _NAME.fullmatch(name), f"{name}: not snake_case"
        if kind == "counter":
            assert name.endswith("_total") or not name.startswith("wsgate_"), name
    families = sorted(types, key=len, reverse=True)

    def family(sample: str) -> str:
        for fam in families:
            if sample == fam or sample.startswith(fam + "_"):
                return fam
        raise AssertionError(f"sample {sample} has no TYPE line")

    buckets: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for name, labels, value in samples:
        fam = family(name)
        assert "job" not in labels and "instance" not in labels, (name, labels)
        if types[fam] != "summary":
            assert "quantile" not in labels, (name, labels)
        if types[fam] == "histogram":
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            if name.endswith("_bucket"):
                le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
                buckets.setdefault((fam, rest), []).append((le, value))
            elif name.endswith("_count"):
                counts[(fam, rest)] = value
        else:
            assert "le" not in labels, (name, labels)
    assert buckets, "no histogram in the exposition"
    for key, series in buckets.items():
        les = [le for le, _ in series]
        assert les == sorted(les) and les[-1] == float("inf"), key
        values = [v for _, v in series]
        assert values == sorted(values), f"{key}: buckets not cumulative"
        assert counts[key] == values[-1], f"{key}: _count != +Inf bucket"


def test_required_families_are_there(metrics_text: str) -> None:
    for name in (
        "wsgate_upstream_bytes_received_total",
        "wsgate_upstream_bytes_sent_total",
        "wsgate_upstream_rtt_seconds_bucket",
        "wsgate_sessions_open",
        "wsgate_sessions_by_client",
        "wsgate_handshakes_rejected_total",
        "wsgate_messages_dropped_total",
        "wsgate_session_subscriptions",
        "wsgate_sessions_slow_closed_total",
        "wsgate_trade_resumes_total",
        "wsgate_trades_bridged_total",
        "process_open_fds",
        "process_max_fds",
    ):
        assert re.search(rf"^{name}[{{ ]", metrics_text, re.M), f"{name} missing"
    subs = re.findall(r'session_subscriptions\{route="(\w+)",stat="max"\} (\S+)', metrics_text)
    assert any(float(v) >= 1 for _, v in subs), subs  # the demo bots subscribe


def test_grafana_dashboard_uses_only_exported_names(metrics_text: str) -> None:
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", metrics_text, re.M))
    names: set[str] = set()
    for fam, kind in exported:
        names.add(fam)
        if kind == "counter":
            names.add(fam if fam.endswith("_total") else fam + "_total")
        if kind == "histogram":
            names |= {fam + "_bucket", fam + "_sum", fam + "_count"}
        if kind == "info":
            names.add(fam + "_info")
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    assert exprs
    used = {m for e in exprs for m in re.findall(r"\b((?:wsgate|process)_[a-z0-9_]+)", e)}
    assert used and used <= names, sorted(used - names)
    # `job` in the dashboard is Prometheus's own target label: ours is job_name.
    assert "exported_job" not in DASHBOARD.read_text()


def test_operations_alerting_rules_pass_promtool(tmp_path: Path) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (make promtool)")
    doc = (DASHBOARD.parent / "OPERATIONS.md").read_text()
    blocks = re.findall(r"```yaml\n(groups:.*?)```", doc, re.S)
    assert len(blocks) == 1, "docs/OPERATIONS.md should hold one rules block"
    rules = tmp_path / "wsgate-rules.yml"
    rules.write_text(blocks[0])
    proc = subprocess.run(
        [tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sessions_by_client_labels_only_configured_identities(metrics_text: str) -> None:
    """The demo's bots connect without a [[gateway.clients]] identity: one anonymous
    series per route, whatever User-Agent they send."""
    rows = [
        (dict(re.findall(r'(\w+)="([^"]*)"', body)), float(value))
        for body, value in re.findall(r"wsgate_sessions_by_client\{([^}]*)\} (\S+)", metrics_text)
    ]
    assert rows and all(v >= 1 and set(x) == {"route", "client"} for x, v in rows), rows
    assert {x["client"] for x, _ in rows} == {"anonymous"}, rows
