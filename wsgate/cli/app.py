"""The `wsgate` command line: a thin client of the control socket, plus `run` and `sim`.

Imports nothing heavy at module level: `wsgate status --json` pays for typer, json
and a socket, not for websockets, APScheduler or Rich.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from wsgate.cli.alerts import alerts_app
from wsgate.cli.balance import rebalance, routes_app
from wsgate.cli.clients import clients_app
from wsgate.cli.cluster import cluster_app
from wsgate.cli.common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json, fail
from wsgate.cli.config import config_app
from wsgate.cli.sim import sim_app
from wsgate.cli.top import top_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="wsgate",
    help="wsgate: a local WebSocket gateway daemon for crypto trading bots.",
    no_args_is_help=True,
    # Typer's own completion: `wsgate --install-completion` (bash, zsh, fish, powershell).
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app, name="config")
conn_app = typer.Typer(help="Upstream connections: list, show, reconnect, enable, disable.")
app.add_typer(conn_app, name="connections")
app.add_typer(routes_app, name="routes")
app.add_typer(alerts_app, name="alerts")
app.add_typer(cluster_app, name="cluster")
app.add_typer(clients_app, name="clients")
app.command()(rebalance)
app.command("top")(top_command)

_call = call
_emit_json = emit_json
_fail = fail


def _print_version(value: bool) -> None:
    if value:
        from wsgate.version import __version__

        print(f"wsgate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show the Python traceback of an error (also $WSGATE_DEBUG=1); "
            "anywhere on the command line.",
        ),
    ] = False,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide",
            help="Never truncate table cells (always so when output is not a terminal).",
        ),
    ] = False,
) -> None:
    """wsgate: a local WebSocket gateway daemon for crypto trading bots."""


# ---------------------------------------------------------------- daemon side
@app.command()
def run(
    config: ConfigOpt = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Run against the built-in exchange simulator.")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for jitter and the simulator.")] = None,
    log_level: Annotated[str | None, typer.Option(help="Override daemon.log_level.")] = None,
    listen: Annotated[
        str | None,
        typer.Option(help="Override gateway.listen (HOST:PORT) for this run."),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(help='Override metrics.listen (HOST:PORT, "" = off) for this run.'),
    ] = None,
) -> None:
    """Run the daemon in the foreground (under systemd: Type=notify).

    Precedence of a setting: flag > $WSGATE_<SECTION>_<KEY> > config file > default.
    """
    from wsgate.main import run_main

    raise typer.Exit(
        run_main(
            config,
            demo=demo,
            seed=seed,
            log_level=log_level,
            listen=listen,
            metrics_listen=metrics_listen,
        )
    )


app.add_typer(sim_app, name="sim")  # run (the default), fault, stats: wsgate/cli/sim.py


# ---------------------------------------------------------------- client side
@app.command()
def status(
    socket: SocketOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Every node's status, asked through the cluster.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each node.")] = 2.0,
) -> None:
    """Daemon uptime, routes with connection states, sessions, jobs."""
    if cluster:
        result = _call(socket, config, "cluster.status", timeout=timeout)
        if json_:
            _emit_json(result)
        else:
            from wsgate.cli.cluster import render_cluster_status

            render_cluster_status(result)
        return
    result = _call(socket, config, "status")
    if json_:
        _emit_json(result)
    else:
        from wsgate.cli.render import render_status

        render_status(result)


@conn_app.callback(invoke_without_command=True)
def connections(
    ctx: typer.Context,
    socket: SocketOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    route: Annotated[str | None, typer.Option(help="Only this route.")] = None,
) -> None:
    """One row per upstream connection."""
    ctx.obj = (socket, config)
    if ctx.invoked_subcommand is not None:
        return
    result = _call(socket, config, "connections", route=route)
    if json_:
        _emit_json(result)
    else:
        from wsgate.cli.render import render_connections

        render_connections(result)


def _ctx_paths(
    ctx: typer.Context, socket: str | None, config: str | None
) -> tuple[str | None, ...]:
    parent = ctx.obj or (None, None)
    return (socket or parent[0], config or parent[1])


@conn_app.command("show")
def connections_show(
    ctx: typer.Context, conn_id: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Full statistics of one connection, with a latency sparkline over its history."""
    s, c = _ctx_paths(ctx, socket, None)
    result = _call(s, c, "connections.show", id=conn_id)
    if json_:
        _emit_json(result)
    else:
        from wsgate.cli.render import render_connection

        render_connection(result)


def _admin(
    ctx: typer.Context,
    method: str,
    conn_id: str,
    socket: str | None,
    json_: bool,
    describe: Callable[[dict[str, Any]], str] = lambda r: f"{r['id']}: {r['state']}",
) -> None:
    s, c = _ctx_paths(ctx, socket, None)
    result = _call(s, c, method, id=conn_id)
    if json_:
        _emit_json(result)
    else:
        print(describe(result))


@conn_app.command("reconnect")
def connections_reconnect(
    ctx: typer.Context, conn_id: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Close and reopen one connection now (subscriptions are replayed)."""
    _admin(ctx, "connections.reconnect", conn_id, socket, json_)


@conn_app.command("drain")
def connections_drain(
    ctx: typer.Context, conn_id: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """No new placements; move its subscriptions away make-before-break, then close it."""
    _admin(
        ctx,
        "connections.drain",
        conn_id,
        socket,
        json_,
        lambda r: f"{r['id']}: draining ({r['moves']} subscription move(s) started)",
    )


@conn_app.command("disable")
def connections_disable(
    ctx: typer.Context, conn_id: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Close one connection and keep it closed until enabled."""
    _admin(ctx, "connections.disable", conn_id, socket, json_)


@conn_app.command("enable")
def connections_enable(
    ctx: typer.Context, conn_id: str, socket: SocketOpt = None, json_: JsonOpt = False
) -> None:
    """Let a disabled or failed connection connect again."""
    _admin(ctx, "connections.enable", conn_id, socket, json_)


@app.command()
def reload(
    socket: SocketOpt = None,
    config: ConfigOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Accepted for systemd ExecReload; reload is synchronous.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show the changes; apply nothing.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Re-read the config file; a bad file keeps the old config and lists every error.

    Prints one line per changed key (`routes.binance.strategy: adaptive -> least_connections`);
    keys that need a restart keep their running value and say so.
    """
    from wsgate.config.changes import render_value

    result = _call(socket, config, "reload.plan" if dry_run else "reload")
    if json_:
        _emit_json(result)
        return
    changed = result.get("changed", [])
    restart = set(result.get("restart_required", []))
    if dry_run:
        head = f"dry run: {len(changed)} change(s) would apply; nothing was applied"
    else:
        head = f"reloaded (config generation {result['generation']}): {len(changed)} change(s)"
    print(head if changed else head.split(":")[0] + ": no changes")
    for c in changed:
        values = c.get("detail") or f"{render_value(c['old'])} -> {render_value(c['new'])}"
        line = f"  {c['key']}: {values}"
        if c.get("note"):
            line += f"  ({c['note']})"
        print(
            line + ("  (restart required: keeps its running value)" if c["key"] in restart else "")
        )
    for line in result.get("applied", []):
        print(f"  applied: {line}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
