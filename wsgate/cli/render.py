"""Rich rendering of control results for humans. Imported only on the human-output path."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "fmt_age",
    "fmt_ms",
    "render_alerts",
    "render_clients",
    "render_connection",
    "render_connections",
    "render_rows",
    "render_status",
    "sparkline",
]


def _make_console() -> Console:
    # Piped or --wide: never truncate a cell ("bitfin…" hid bitfinex vs bitfinex_auth);
    # a terminal keeps its own width.
    wide = bool(os.environ.get("WSGATE_WIDE")) or not sys.stdout.isatty()
    return Console(width=100_000) if wide else Console()


_console = _make_console()
_BARS = "▁▂▃▄▅▆▇█"
_STATE_STYLE = {
    "open": "green",
    "degraded": "yellow",
    "connecting": "cyan",
    "backoff": "yellow",
    "closing": "yellow",
    "draining": "magenta",
    "disabled": "dim",
    "failed": "bold red",
    "closed": "dim",
    "idle": "dim",
}


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.1f}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def sparkline(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(
        " " if v is None else _BARS[min(7, int((v - lo) / span * 7.999))] for v in values
    )


def _strategy(rt: dict[str, Any]) -> str:
    ad = rt.get("adaptive")
    return f"adaptive -> {ad['strategy']}" if ad else str(rt["strategy"])


def _state(label: str) -> str:
    return f"[{_STATE_STYLE.get(label, 'white')}]{label}[/]"


def render_status(r: dict[str, Any]) -> None:
    health = r.get("health")
    head = (
        f"[bold]wsgate {r['version']}[/] node [bold]{r['node_id']}[/] pid {r['pid']}  "
        f"up {fmt_age(r['uptime'])}  config gen {r['config_generation']}"
        + (" [yellow](demo)[/]" if r.get("demo") else "")
    )
    _console.print(head)
    if health is not None:
        score = health.get("score") if isinstance(health, dict) else health
        by_type = health.get("by_type", {}) if isinstance(health, dict) else {}
        types = "  ".join(f"{k} {v:.0f}" for k, v in by_type.items() if v is not None)
        shown = "-" if score is None else f"{score:.0f}"
        _console.print(f"health [bold]{shown}[/]/100" + (f"  ({types})" if types else ""))
    scheme = "wss" if r["gateway"].get("tls") else "ws"
    _console.print(
        f"gateway {scheme}://{r['gateway']['listen']}  sessions {r['sessions']}  "
        f"control {r['control_socket']}  config {r.get('config_path') or '(built-in demo)'}"
    )
    sims = r.get("simulators") or {}
    if sims:
        shown = "  ".join(f"{name} {url}" for name, url in sorted(sims.items()))
        _console.print(f"simulators {shown}  (wsgate sim fault KIND / sim stats find them)")
    cl = r.get("cluster") or {}
    if cl.get("engine") not in (None, "none"):
        link = "[green]linked[/]" if cl.get("link_up") else "[red]not linked[/]"
        n = cl.get("nodes", {})
        _console.print(
            f"cluster {cl.get('name')} ({cl['engine']}): {link}, nodes up {n.get('up')} "
            f"down {n.get('down')} left {n.get('left')}  (wsgate cluster nodes)"
        )
    for host, doc in sorted((r.get("budgets") or {}).items()):
        cb = doc.get("cluster")
        if cb:  # a share = "cluster" host: its connect budget is the cluster's
            mode = "cluster" if cb["mode"] == "cluster" else f"[yellow]{cb['mode']}[/]"
            _console.print(
                f"connect budget {host} ({mode}): {cb['used']}/{cb['limit']} per "
                f"{cb['window']:g}s in the cluster, {cb['used_here']} here, "
                f"share alone {cb['share']}, waits {cb['waits']}"
            )
    lr = r.get("last_reload")
    if lr:
        outcome = "[green]ok[/]" if lr.get("ok") else "[red]rejected[/]"
        _console.print(f"last reload: {outcome} {fmt_age(time.time() - lr['at'])} ago")
        pending = lr.get("restart_required") or []
        if pending:
            keys = ", ".join(str(k) for k in pending)
            _console.print(f"[yellow]restart pending[/]: {keys} keep their running value")
    t = Table(title="routes", title_justify="left")
    cols = ("route", "dialect", "type", "strategy", "health", "sessions", "upstreams", "states")
    for col in cols:
        t.add_column(col)
    for rt in r["routes"]:
        c = rt["connections"]
        total, up = c["total"], c["up"]
        states = " ".join(f"{_state(k)}={v}" for k, v in sorted(c["states"].items()))
        t.add_row(
            rt["name"],
            rt["dialect"],
            rt["type"],
            _strategy(rt),
            "-" if rt.get("health") is None else f"{rt['health']:.0f}",
            str(rt["sessions"]),
            f"{up}/{total}",
            states,
        )
    _console.print(t)
    render_clients(r.get("clients") or [], r.get("anonymous_sessions"))
    j = Table(title="jobs", title_justify="left")
    for col in ("job", "every", "runs", "failures", "last run", "next run", "duration"):
        j.add_column(col)
    now = time.time()
    for job in r["jobs"]:
        j.add_row(
            job["name"],
            f"{job['interval']:g}s",
            str(job["runs"]),
            str(job["failures"]),
            fmt_age(now - job["last_run"]) + " ago" if job["last_run"] else "never",
            "in " + fmt_age(max(0.0, job["next_run"] - now)) if job["next_run"] else "-",
            fmt_ms(job["last_duration"]),
        )
    _console.print(j)


def _limit(used: int, limit: int | None) -> str:
    return f"{used}/{limit}" if limit is not None else str(used)


def render_clients(clients: list[dict[str, Any]], anonymous: int | None = None) -> None:
    """The [[gateway.clients]] identities: what each holds against its limits, and (from
    ``status``) the sessions without one, as the metrics label them."""
    if not clients:
        return
    t = Table(title="clients", title_justify="left")
    for col in ("client", "routes", "sessions", "subscriptions", "refused", "token"):
        t.add_column(col)
    for c in clients:
        refused = " ".join(f"{k}={v}" for k, v in c["refused"].items() if v) or "-"
        token = c["token"] if c["token"] == "ok" else f"[red]{c['token']}[/]"
        t.add_row(
            c["name"] + ("" if c["configured"] else " [yellow](removed)[/]"),
            ", ".join(c["routes"]) if c["routes"] is not None else "all",
            _limit(c["sessions"], c["max_sessions"]),
            _limit(c["subscriptions"], c["max_subscriptions"]),
            refused,
            token,
        )
    if anonymous:
        t.add_row("[dim]anonymous[/]", "-", str(anonymous), "-", "-", "-")
    _console.print(t)


def render_connections(rows: list[dict[str, Any]]) -> None:
    t = Table()
    for col in (
        "id",
        "route",
        "type",
        "endpoint",
        "state",
        "health",
        "latency",
        "msgs in",
        "msgs out",
        "reconnects",
        "transitions",
        "age",
    ):
        numeric = col.startswith(("msgs", "lat", "rec", "trans"))
        t.add_column(col, justify="right" if numeric else "left")
    for c in rows:
        t.add_row(
            c["id"],
            c["route"],
            c["type"],
            c["endpoint"],
            _state(c["state"]),
            "-" if c.get("health") is None else f"{c['health']:.0f}",
            fmt_ms(c["latency"]),
            str(c["messages_in"]),
            str(c["messages_out"]),
            str(c["reconnects"]),
            str(sum((c.get("transitions") or {}).values())),  # details: connections show
            fmt_age(c["age"]),
        )
    _console.print(t)


def render_connection(c: dict[str, Any]) -> None:
    _console.print(f"[bold]{c['id']}[/] {c['url']}  {_state(c['state'])} ({c['state_reason']})")
    t = Table(show_header=False, box=None)
    for key in (
        "route",
        "type",
        "endpoint",
        "latency",
        "latency_app",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "msg_rate",
        "errors",
        "reconnects",
        "age",
        "last_message_age",
    ):
        v = c.get(key)
        if key.startswith("latency"):
            v = fmt_ms(v)
        elif key in ("age", "last_message_age"):
            v = fmt_age(v)
        elif isinstance(v, float):
            v = f"{v:.2f}"
        t.add_row(key, str(v))
    _console.print(t)
    hist = c.get("history") or []
    lat = [p.get("latency") for p in hist]
    if any(v is not None for v in lat):
        _console.print(f"latency  {sparkline(lat[-60:])}")
    rate = [p.get("msg_rate") for p in hist]
    if any(v is not None for v in rate):
        _console.print(f"msg/s    {sparkline(rate[-60:])}")
    if c.get("transitions"):
        _console.print("transitions: " + ", ".join(f"{k}={v}" for k, v in c["transitions"].items()))


def render_alerts(r: dict[str, Any]) -> None:
    alerts = r.get("alerts", [])
    if not alerts:
        _console.print("no active alerts")
        return
    t = Table()
    for col in ("fingerprint", "alert", "severity", "state", "value", "summary", "age", "flags"):
        t.add_column(col, overflow="fold")
    now = time.time()
    short = [str(a.get("fingerprint", ""))[:8] for a in alerts]
    unique = len(set(short)) == len(short)
    for a in alerts:
        labels = a.get("labels", {})
        flags = [f for f in ("acknowledged", "silenced", "inhibited", "flapping") if a.get(f)]
        if a.get("inhibited_by_names"):
            flags.append("by " + ",".join(a["inhibited_by_names"]))
        t.add_row(
            # ack/silence/explain take any unique prefix; eight digits unless they collide.
            str(a.get("fingerprint", ""))[: 8 if unique else 16],
            labels.get("alertname", ""),
            a.get("severity", ""),
            a.get("state", ""),
            str(a.get("value_text") or "-"),
            str(a.get("summary") or ""),
            fmt_age(now - a["started_at"]) if a.get("started_at") else "-",
            ",".join(flags),
        )
    _console.print(t)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def render_rows(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None
) -> None:
    """A plain table of ``rows`` (dicts) showing ``columns``; absent values print as '-'."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        numeric = bool(rows) and all(isinstance(r.get(col), int | float) for r in rows)
        t.add_column(col, justify="right" if numeric else "left")
    for r in rows:
        t.add_row(*(_cell(r.get(col)) for col in columns))
    _console.print(t)
