"""`wsgate cluster ...`: the cluster as this node sees it (read-only)."""

from __future__ import annotations

from typing import Any

import typer

from wsgate.cli.common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json

__all__ = ["cluster_app", "render_cluster_status"]

cluster_app = typer.Typer(help="Cluster nodes as this node sees them.", no_args_is_help=True)


@cluster_app.command("nodes")
def nodes(socket: SocketOpt = None, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """One row per node, this one included: state, last heartbeat, health, load, version."""
    result = call(socket, config, "cluster.nodes")
    if json_:
        emit_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = f"cluster [bold]{result.get('cluster') or '-'}[/] engine {result.get('engine')}"
    if result.get("engine") != "none":
        link = "[green]linked[/]" if result.get("link_up") else "[red]not linked[/]"
        head += f"  {link}  identity {result.get('identity')}"
    console.print(head)
    t = Table()
    for col in ("node", "state", "last seen", "health", "sessions", "upstreams", "version"):
        t.add_column(col)
    color = {"up": "green", "down": "red", "left": "dim"}
    for n in result["nodes"]:
        age = n.get("age")
        seen = "now" if n.get("self") else (f"{age:.1f}s ago" if age is not None else "-")
        ups = n.get("upstreams") or {}
        t.add_row(
            n["node_id"] + (" (this)" if n.get("self") else ""),
            f"[{color.get(n['state'], 'white')}]{n['state']}[/]",
            seen,
            "-" if n.get("health") is None else f"{n['health']:.0f}",
            str(n.get("sessions", "-")),
            " ".join(f"{k}={v}" for k, v in sorted(ups.items())) or "-",
            str(n.get("version") or "-"),
        )
    console.print(t)


def render_cluster_status(result: dict[str, Any]) -> None:
    """`wsgate status --cluster`: every node's status side by side."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"cluster {result.get('cluster') or '-'}", title_justify="left")
    cols = (
        "node",
        "state",
        "answered",
        "uptime",
        "health",
        "sessions",
        "routes",
        "upstreams up",
        "shared keys own/follow/local",
    )
    for col in cols:
        t.add_column(col)
    for row in result["nodes"]:
        st = row.get("status") or {}
        health = st.get("health") or {}
        routes = st.get("routes") or []
        ups = sum(r["connections"]["up"] for r in routes) if routes else 0
        total = sum(r["connections"]["total"] for r in routes) if routes else 0
        score = health.get("score") if isinstance(health, dict) else None
        t.add_row(
            row["node_id"],
            row.get("state", "-"),
            "yes" if row.get("answered") else f"[red]no[/] ({row.get('error', '')})",
            f"{st['uptime']:.0f}s" if "uptime" in st else "-",
            "-" if score is None else f"{score:.0f}",
            str(st.get("sessions", "-")),
            str(len(routes)) if st else "-",
            f"{ups}/{total}" if st else "-",
            _shared(routes) if st else "-",
        )
    console.print(t)
    budgets = _budget_table(result["nodes"])
    if budgets is not None:
        console.print(budgets)


def _budget_table(rows: list[dict[str, Any]]) -> Any:
    """Cluster budgets (share = "cluster" hosts' connect budgets) as each node counts them."""
    from rich.table import Table

    t = Table(title="cluster budgets", title_justify="left")
    for col in ("node", "budget", "used/limit", "window", "this node", "share", "mode"):
        t.add_column(col)
    for col in ("granted", "waits", "conflicts"):
        t.add_column(col, justify="right")
    found = False
    for row in rows:
        for doc in ((row.get("status") or {}).get("budgets") or {}).values():
            b = doc.get("cluster")
            if not b:
                continue
            found = True
            mode = b["mode"] if b["mode"] == "cluster" else f"[yellow]{b['mode']}[/]"
            t.add_row(
                row["node_id"],
                b["budget"],
                f"{b['used']}/{b['limit']}",
                f"{b['window']:g}s",
                str(b["used_here"]),
                str(b["share"]),
                mode,
                f"{b['granted']} ({b['granted_local']} alone)"
                if b["granted_local"]
                else str(b["granted"]),
                str(b["waits"]),
                str(b["conflicts"]),
            )
    return t if found else None


def _shared(routes: list[dict[str, Any]]) -> str:
    """Keys this node owns, follows, and subscribes alone (share = "cluster" routes)."""
    docs = [r["cluster_share"] for r in routes if r.get("cluster_share")]
    if not docs:
        return "-"
    own, fol, loc = (sum(int(d[k]) for d in docs) for k in ("owned", "followed", "local"))
    gaps = sum(int(d["gaps"]) for d in docs)
    out_, in_ = (sum(int(d.get(k, 0)) for d in docs) for k in ("moves_out", "moves_in"))
    moved = f" (moved {out_} out, {in_} in)" if out_ or in_ else ""
    # Nodes this node's spread leaves out now (bad upstream health, connect budget).
    unfit = sorted({str(n) for d in docs for n in (d.get("unfit") or {})})
    skips = f" (spread skips {', '.join(unfit)})" if unfit else ""
    return f"{own}/{fol}/{loc}" + (f" ({gaps} gaps)" if gaps else "") + moved + skips
