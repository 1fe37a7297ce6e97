"""`wsgate routes ...` and `wsgate rebalance`: runtime balancing control."""

from __future__ import annotations

from typing import Annotated

import typer

from wsgate.cli_common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json

__all__ = ["rebalance", "routes_app"]

routes_app = typer.Typer(help="Routes: strategies and endpoint weights at run time.")


@routes_app.callback(invoke_without_command=True)
def routes(
    ctx: typer.Context, socket: SocketOpt = None, config: ConfigOpt = None, json_: JsonOpt = False
) -> None:
    """List routes with their strategy, endpoints and balancer counters."""
    ctx.obj = (socket, config)
    if ctx.invoked_subcommand is not None:
        return
    result = call(socket, config, "routes")
    if json_:
        emit_json(result)
        return
    for r in result:
        mark = " (set at run time)" if r["strategy_override"] else ""
        print(f"{r['name']}: strategy {r['strategy']}{mark}")
        ad = r.get("adaptive")
        if ad:
            waiting = f"; {ad['pending']} wanted, waiting out hysteresis" if ad["pending"] else ""
            print(
                f"  adaptive applies {ad['strategy']}: {ad['reason']}"
                f" (for {ad['held_for']:.0f}s, {ad['switches']} switches{waiting})"
            )
        for e in r["endpoints"]:
            print(f"  {e['name']:<28} weight {e['weight']} (config {e['configured_weight']})")


@routes_app.command("weight")
def routes_weight(
    ctx: typer.Context,
    route: str,
    endpoint: str,
    weight: Annotated[int, typer.Argument(min=0, help="0 = no new placements.")],
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Set an endpoint's weight; kept across reloads while the endpoint exists."""
    parent = ctx.obj or (None, None)
    result = call(
        socket or parent[0],
        parent[1],
        "routes.weight",
        route=route,
        endpoint=endpoint,
        weight=weight,
    )
    emit_json(result) if json_ else print(f"{route}: {result['weights']}")


@routes_app.command("strategy")
def routes_strategy(
    ctx: typer.Context, route: str, name: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Switch a route's balancing strategy now (kept until the file changes it)."""
    parent = ctx.obj or (None, None)
    result = call(socket or parent[0], parent[1], "routes.strategy", route=route, strategy=name)
    emit_json(result) if json_ else print(f"{route}: strategy {result['strategy']}")


def rebalance(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan; move nothing.")
    ] = False,
    route: Annotated[str | None, typer.Option(help="Only this route.")] = None,
    socket: SocketOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Move shared subscriptions from overloaded to underloaded connections (make-before-break)."""
    method = "rebalance.plan" if dry_run else "rebalance.apply"
    result = call(socket, config, method, route=route)
    if json_:
        emit_json(result)
        return
    moves = result["moves"]
    verb = "would move" if dry_run else "moving"
    if not moves:
        print("balanced: nothing to move")
    for m in moves:
        print(f"{m['route']}: {verb} {m['subscription']} {m['source']} -> {m['target']}")
