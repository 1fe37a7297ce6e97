"""`wsgate alerts ...`: active alerts, history, ack, silences, channel test and health.

Stdlib plus typer at import time; Rich only when a table is printed.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from wsgate.cli.common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json

__all__ = ["alerts_app"]

alerts_app = typer.Typer(
    help=(
        "Alerts: active (default), history, explain, ack, silence, silences, unsilence, "
        "test, channels."
    )
)


def _paths(ctx: typer.Context, socket: str | None) -> tuple[str | None, str | None]:
    parent = ctx.obj or (None, None)
    return socket or parent[0], parent[1]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@alerts_app.callback(invoke_without_command=True)
def alerts(
    ctx: typer.Context, socket: SocketOpt = None, config: ConfigOpt = None, json_: JsonOpt = False
) -> None:
    """Active alerts: state, severity, age and flags (acknowledged, silenced, inhibited...)."""
    ctx.obj = (socket, config)
    if ctx.invoked_subcommand is not None:
        return
    result = call(socket, config, "alerts")
    if json_:
        emit_json(result)
        return
    from wsgate.cli.render import render_alerts

    render_alerts(result)


@alerts_app.command("history")
def alerts_history(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only this recent: 90s, 15m, 1h, 2d.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this alert type.")] = None,
    route: Annotated[str | None, typer.Option(help="Only this route.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 200,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Alert state changes and operator actions, newest first."""
    s, c = _paths(ctx, socket)
    result = call(s, c, "alerts.history", since=since, type=type_, route=route, limit=limit)
    if json_:
        emit_json(result)
        return
    events = result.get("events", [])
    if not events:
        print("no alert history in that range")
        return
    rows = []
    for e in events:
        if "to" in e:
            labels = e.get("labels", {})
            where = " ".join(
                f"{k}={v}" for k, v in labels.items() if k not in ("alertname", "severity", "node")
            )
            rows.append(
                {
                    "time": _when(e["ts"]),
                    "event": e.get("alertname", "?"),
                    "change": f"{e['from']} -> {e['to']}",
                    "severity": e.get("severity") or "",
                    "labels": where,
                    "detail": e.get("summary", ""),
                }
            )
        else:
            who = e.get("by") or e.get("created_by") or ""
            # an operator action names what it acted on: "disconnect client alpha (uid 0 ...)"
            what = " ".join(
                f"{k} {e[k]}" if k != "action" else str(e[k])
                for k in ("action", "connection", "client")
                if e.get(k)
            )
            detail = f"{what} ({who})" if what and who else what or who
            rows.append({"time": _when(e["ts"]), "event": e["kind"], "detail": detail})
    from wsgate.cli.render import render_rows

    render_rows(rows, ("time", "event", "change", "severity", "labels", "detail"))


@alerts_app.command("ack")
def alerts_ack(
    ctx: typer.Context,
    fingerprint: str,
    comment: Annotated[str, typer.Option(help="Why / who is on it.")] = "",
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Acknowledge a pending or firing alert: its repeats stop until it resolves."""
    s, c = _paths(ctx, socket)
    result = call(s, c, "alerts.ack", fingerprint=fingerprint, comment=comment)
    if json_:
        emit_json(result)
        return
    print(f"acknowledged {fingerprint} by {result['ack']['by']}")


@alerts_app.command("explain")
def alerts_explain(
    ctx: typer.Context, fingerprint: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Why an alert fired: its rule, its inputs over time, its transitions, and what
    inhibits it or what it inhibits (any unique fingerprint prefix)."""
    s, c = _paths(ctx, socket)
    r = call(s, c, "alerts.explain", fingerprint=fingerprint)
    if json_:
        emit_json(r)
        return
    where = " ".join(f"{k}={v}" for k, v in r["labels"].items() if k not in ("alertname",))
    print(f"{r['alertname']} {r['fingerprint']} {r['state']} ({r['severity']})")
    print(f"  labels   {where}")
    print(f"  now      {r['value_text']}: {r['summary']}")
    rule = r["rule"]
    if rule.get("external"):
        print("  rule     raised by the daemon itself (not from a rule)")
    elif rule.get("text"):
        print(f"  rule     {rule['type']}: {rule['text']}")
    if r["inputs"]:
        print("  inputs   (oldest first; * = breaching, ~ = between thresholds)")
        for i in r["inputs"]:
            mark = "*" if i["breaching"] else (" " if i["clear"] else "~")
            print(f"    {_when(i['at'])} {mark} {i['value_text']}")
    for t in r["transitions"]:
        print(f"  change   {_when(t['at'])}  {t['from']} -> {t['to']}")
    for o in r["inhibited_by"]:
        print(f"  inhibited by {o['alertname']} {o['fingerprint'][:8]} ({o['state']}): {o['why']}")
    if r.get("held"):
        h = r["held"]
        print(
            f"  held     its causes resolved at {_when(h['causes_resolved_at'])}; muted until "
            f"{_when(h['held_until'])}, pages only if {h['pages_if']}"
        )
    for o in r["inhibits"]:
        print(f"  inhibits {o['alertname']} {o['fingerprint'][:8]} ({o['state']}): {o['why']}")
    if r["silenced_by"]:
        print(f"  silenced by {', '.join(r['silenced_by'])}")
    if r.get("acknowledged_by"):
        print(f"  acknowledged by {r['acknowledged_by']}")
    for ch, at in sorted(r.get("notified", {}).items()):
        print(f"  notified {ch} at {_when(at)}")


@alerts_app.command("silence")
def alerts_silence(
    ctx: typer.Context,
    for_: Annotated[str, typer.Option("--for", help="Duration: 30m, 2h, 1d.")],
    comment: Annotated[str, typer.Option(help="Why (required).")],
    fingerprint: Annotated[
        str | None,
        typer.Argument(help="Silence this alert (any unique fingerprint prefix)."),
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option("--match", "-m", help="key=value, key!=value, key=~regex (repeat: AND)."),
    ] = None,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Mute notifications of matching alerts for a while (the alerts stay visible).

    Label names are checked against the labels alerts carry; the alerts the silence
    matches now are listed, with a warning when there are none.
    """
    s, c = _paths(ctx, socket)
    result = call(
        s,
        c,
        "alerts.silence",
        matchers=match or None,
        fingerprint=fingerprint,
        duration=for_,
        comment=comment,
    )
    if json_:
        emit_json(result)
        return
    sil = result["silence"]
    matchers = " ".join(_matcher_text(m) for m in sil.get("matchers", []))
    print(f"silence {sil['id']} until {_when(sil['ends_at'])}: {matchers}")
    matches = result.get("matches", [])
    for a in matches:
        print(f"  matches {a['fingerprint'][:8]} {a['alertname']} {a['state']}: {a['summary']}")
    if result.get("warning"):
        print(f"warning: {result['warning']}", file=sys.stderr)


@alerts_app.command("silences")
def alerts_silences(ctx: typer.Context, socket: SocketOpt = None, json_: JsonOpt = False) -> None:
    """Current and pending silences."""
    s, c = _paths(ctx, socket)
    result = call(s, c, "alerts.silences")
    if json_:
        emit_json(result)
        return
    rows = result.get("silences", [])
    if not rows:
        print("no silences")
        return
    from wsgate.cli.render import render_rows

    render_rows(
        [
            {
                "id": sil["id"],
                "state": sil["state"],
                "until": _when(sil["ends_at"]),
                "matchers": " ".join(_matcher_text(m) for m in sil.get("matchers", [])),
                "by": sil.get("created_by", ""),
                "comment": sil.get("comment", ""),
            }
            for sil in rows
        ],
        ("id", "state", "until", "matchers", "by", "comment"),
    )


def _matcher_text(m: Any) -> str:
    if isinstance(m, dict):
        return f"{m.get('name')}{m.get('op', '=')}{m.get('value')}"
    return str(m)


@alerts_app.command("unsilence")
def alerts_unsilence(
    ctx: typer.Context, silence_id: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Expire a silence now."""
    s, c = _paths(ctx, socket)
    result = call(s, c, "alerts.unsilence", id=silence_id)
    if json_:
        emit_json(result)
        return
    print(f"silence {result['silence']['id']} expired")


@alerts_app.command("test")
def alerts_test(
    ctx: typer.Context,
    channel: Annotated[str, typer.Option(help="Channel name from [alerts.channels.*].")],
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Send a real test notification now and report the receiver's answer."""
    s, c = _paths(ctx, socket)
    result = call(s, c, "alerts.test", channel=channel)
    if json_:
        emit_json(result)
        return
    from wsgate.cli.render import render_rows

    outcome = "skipped" if result.get("skipped") else "accepted"
    status = result.get("status")
    render_rows(
        [
            {
                "channel": channel,
                "result": outcome,
                # Only HTTP receivers answer with a status; log/console/email have none.
                "receiver status": status if status is not None else "n/a",
                "detail": result.get("detail") or "",
            }
        ],
        ("channel", "result", "receiver status", "detail"),
    )


@alerts_app.command("channels")
def alerts_channels(ctx: typer.Context, socket: SocketOpt = None, json_: JsonOpt = False) -> None:
    """Each channel's health: queue, deliveries, failures, breaker, disabled."""
    s, c = _paths(ctx, socket)
    result = call(s, c, "alerts.channels")
    if json_:
        emit_json(result)
        return
    rows = result.get("channels", [])
    if not rows:
        print("no alert channels configured")
        return
    from wsgate.cli.render import render_rows

    render_rows(
        [
            {
                "channel": ch["name"],
                "kind": ch["kind"],
                "state": ch.get("status") or ch["breaker"],
                "queued": ch["queued"],
                "delivered": ch["delivered"],
                "skipped": ch.get("skipped", 0),
                "failures": ch["failures"],
                "last success": _when(ch["last_success"]),
                "last error": ch.get("last_error") or "",
            }
            for ch in rows
        ],
        (
            "channel",
            "kind",
            "state",
            "queued",
            "delivered",
            "skipped",
            "failures",
            "last success",
            "last error",
        ),
    )
