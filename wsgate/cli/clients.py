"""`wsgate clients ...`: the ``[[gateway.clients]]`` identities and what each holds."""

from __future__ import annotations

from typing import Annotated

import typer

from wsgate.cli.common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json

__all__ = ["clients_app"]

clients_app = typer.Typer(
    help="Per-bot identities ([[gateway.clients]]): list, disconnect.",
    invoke_without_command=True,
)


@clients_app.callback()
def clients_list(
    ctx: typer.Context, socket: SocketOpt = None, config: ConfigOpt = None, json_: JsonOpt = False
) -> None:
    """Each client's sessions and subscriptions against its limits, refusals, token state."""
    ctx.obj = (socket, config)
    if ctx.invoked_subcommand is not None:
        return
    result = call(socket, config, "clients")
    if json_:
        emit_json(result)
        return
    if not result:
        print("no [[gateway.clients]] configured: bots use the routes' own tokens")
        return
    from wsgate.cli.render import render_clients

    render_clients(result)


@clients_app.command("disconnect")
def clients_disconnect(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The client's name, as configured.")],
    socket: SocketOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Close every open session of one client now (1008), e.g. after changing its token
    and reloading: a reload never closes open sessions."""
    parent = ctx.obj or (None, None)
    result = call(socket or parent[0], parent[1], "clients.disconnect", name=name)
    if json_:
        emit_json(result)
    else:
        print(f"client {result['name']}: {result['closed']} session(s) closed ({result['code']})")
