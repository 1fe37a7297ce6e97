"""`wsgate routes ...` and `wsgate rebalance`: runtime balancing control."""

from __future__ import annotations

from typing import Annotated

import typer

from wsgate.cli.common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json

__all__ = ["rebalance", "routes_app"]

routes_app = typer.Typer(help="Routes: strategies and endpoint weights at run time.")


@routes_app.callback(invoke_without_command=True)
def routes(
    ctx: typer.Context, socket: SocketOpt = None, config: ConfigOpt = None, json_: JsonOpt = False
) -> None:
    """List routes with their strategy, endpoints and weights (runtime overrides marked *)."""
    ctx.obj = (socket, config)
    if ctx.invoked_subcommand is not None:
        return
    result = call(socket, config, "routes")
    if json_:
        emit_json(result)
        return
    from wsgate.cli.render import render_rows

    rows = []
    for r in result:
        mark = "*" if r["strategy_override"] else ""
        for e in r["endpoints"]:
            changed = e["weight"] != e["configured_weight"]
            rows.append(
                {
                    "route": r["name"],
                    "strategy": r["strategy"] + mark,
                    "endpoint": e["name"],
                    "url": e["url"],
                    "weight": f"{e['weight']}{'*' if changed else ''}",
                    "configured": e["configured_weight"],
                }
            )
    render_rows(rows, ("route", "strategy", "endpoint", "url", "weight", "configured"))
    for r in result:
        ad = r.get("adaptive")
        if ad:
            waiting = f"; {ad['pending']} wanted, waiting out hysteresis" if ad["pending"] else ""
            print(
                f"{r['name']}: adaptive applies {ad['strategy']}: {ad['reason']}"
                f" (for {ad['held_for']:.0f}s, {ad['switches']} switches{waiting})"
            )
    if any(r["strategy_override"] for r in result) or any(
        "*" in str(row["weight"]) for row in rows
    ):
        print("* set at run time: `wsgate routes overrides` lists them, --reset drops one")


def _parent(ctx: typer.Context, socket: str | None) -> tuple[str | None, str | None]:
    parent = ctx.obj or (None, None)
    return socket or parent[0], parent[1]


def _print_weights(route: str, weights: dict[str, int]) -> None:
    from wsgate.cli.render import render_rows

    render_rows(
        [{"route": route, "endpoint": k, "weight": v} for k, v in weights.items()],
        ("route", "endpoint", "weight"),
    )


@routes_app.command("weight")
def routes_weight(
    ctx: typer.Context,
    route: str,
    endpoint: Annotated[
        str | None, typer.Argument(help="Endpoint name (see `wsgate routes`).")
    ] = None,
    weight: Annotated[
        int | None, typer.Argument(min=0, help="0 = no new placements.", show_default=False)
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop the run-time weight: the file's applies.")
    ] = False,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Set an endpoint's weight (kept across reloads while the endpoint exists), or --reset."""
    s, c = _parent(ctx, socket)
    if reset:
        result = call(s, c, "routes.reset", route=route, what="weight", endpoint=endpoint)
    elif endpoint is None or weight is None:
        raise typer.BadParameter("give ROUTE ENDPOINT WEIGHT, or --reset")
    else:
        result = call(s, c, "routes.weight", route=route, endpoint=endpoint, weight=weight)
    if json_:
        emit_json(result)
    else:
        _print_weights(route, result["weights"])


@routes_app.command("strategy")
def routes_strategy(
    ctx: typer.Context,
    route: str,
    name: Annotated[str | None, typer.Argument(help="Strategy name.")] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Drop the run-time strategy: the file's applies.")
    ] = False,
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Switch a route's balancing strategy now (kept until the file changes it), or --reset."""
    s, c = _parent(ctx, socket)
    if reset:
        result = call(s, c, "routes.reset", route=route, what="strategy")
    elif name is None:
        raise typer.BadParameter("give ROUTE STRATEGY, or --reset")
    else:
        result = call(s, c, "routes.strategy", route=route, strategy=name)
    if json_:
        emit_json(result)
    else:
        print(f"{route}: strategy {result['strategy']}")


@routes_app.command("overrides")
def routes_overrides(ctx: typer.Context, socket: SocketOpt = None, json_: JsonOpt = False) -> None:
    """Run-time strategies and weights that differ from the config file."""
    s, c = _parent(ctx, socket)
    result = call(s, c, "routes.overrides")
    if json_:
        emit_json(result)
        return
    rows = result["overrides"]
    if not rows:
        print("no run-time overrides: every route runs as configured")
        return
    from wsgate.cli.render import render_rows

    render_rows(rows, ("route", "kind", "endpoint", "value", "configured"))


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
    if not moves:
        print("balanced: nothing to move")
        return
    from wsgate.cli.render import render_rows

    title = "would move (dry run)" if dry_run else "moving (make-before-break)"
    render_rows(moves, ("route", "subscription", "source", "target"), title=title)
