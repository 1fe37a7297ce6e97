"""`wsgate config check` and `wsgate config show`.

Without a PATH, ``config check`` reads ``$WSGATE_CONFIG``, then ``/etc/wsgate/wsgate.toml``
(the path the systemd unit runs with). ``config show`` prints TOML that is itself a valid
config giving the same effective config, secrets masked; comments above it say which
keys a flag or an environment variable set.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from wsgate.cli.common import ConfigOpt, JsonOpt, SocketOpt, call, emit_json

__all__ = ["DEFAULT_CONFIG", "config_app", "default_config_path"]

DEFAULT_CONFIG = "/etc/wsgate/wsgate.toml"

config_app = typer.Typer(help="Validate and show configuration.", no_args_is_help=True)


def default_config_path() -> str:
    """``$WSGATE_CONFIG``, else the system path."""
    return os.environ.get("WSGATE_CONFIG") or DEFAULT_CONFIG


@config_app.command("check")
def config_check(
    path: Annotated[
        str | None,
        typer.Argument(
            help=f"Config file to validate (default: $WSGATE_CONFIG, {DEFAULT_CONFIG})."
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Validate a config file and print every error with its key path, line and a hint."""
    from wsgate.config import load_config
    from wsgate.errors import ConfigError

    path = path or default_config_path()
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        if json_:
            problems = [p.as_dict() for p in exc.problems]
            emit_json({"path": path, "ok": False, "errors": problems, "routes": []})
        elif len(exc.problems) == 1:
            print(f"wsgate: {exc.problems[0].render(exc.filename)}", file=sys.stderr)
        else:
            for p in exc.problems:
                print(p.render(exc.filename), file=sys.stderr)
            print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        raise typer.Exit(1) from None
    routes = [
        {
            "name": r.name,
            "dialect": r.dialect.value,
            "type": r.type.value,
            "strategy": r.strategy.value,
            "endpoints": len(r.endpoints),
        }
        for r in cfg.routes
    ]
    overrides = [{"key": k, "source": s} for k, s in cfg.overrides]
    clients = [_client_row(c) for c in cfg.gateway.clients]
    if json_:
        emit_json(
            {
                "path": path,
                "ok": True,
                "errors": [],
                "routes": routes,
                "clients": clients,
                "overrides": overrides,
            }
        )
        return
    from wsgate.cli.render import render_rows

    print(f"{path}: OK ({len(cfg.routes)} routes: {', '.join(cfg.route_names)})")
    render_rows(routes, ("name", "dialect", "type", "strategy", "endpoints"))
    for ov in overrides:
        print(f"  {ov['key']} set by {ov['source']}")
    for c in clients:
        where = ", ".join(c["routes"]) if c["routes"] is not None else "every route"
        note = "" if c["token_set"] else " (NOT set in this environment)"
        print(f"  client {c['name']}: {where}; token from {c['token_source']}{note}")


def _client_row(c: Any) -> dict[str, Any]:
    """A [[gateway.clients]] entry as `config check` reports it (never the token)."""
    import os

    source = f"${c.token_env}" if c.token_env else str(c.token_file)
    return {
        "name": c.name,
        "routes": list(c.routes) if c.routes is not None else None,
        "max_sessions": c.max_sessions,
        "max_subscriptions": c.max_subscriptions,
        "token_source": source,
        # a token_file was checked when the file was read; a variable may be set elsewhere
        "token_set": bool(os.environ.get(c.token_env)) if c.token_env else True,
    }


def _toml(view: dict[str, Any]) -> str:
    import tomli_w

    head = [f"# wsgate effective config: {view.get('source_path') or '(built-in demo)'}"]
    if view.get("source_sha256"):
        head[0] += f" (sha256 {view['source_sha256'][:12]})"
    if view.get("overrides"):
        head.append("# set outside the file (precedence: flag > environment > file > default):")
        head += [f"#   {o['key']} from {o['source']}" for o in view["overrides"]]
    if view.get("environment"):
        head.append("# secrets named by environment variable (values are never shown):")
        head += [
            f"#   {e['key']}: ${e['name']} {'is set' if e['set'] else 'is NOT set'}"
            for e in view["environment"]
        ]
    return "\n".join(head) + "\n\n" + tomli_w.dumps(view["config"])


@config_app.command("show")
def config_show(
    path: Annotated[
        str | None, typer.Argument(help="Show this file instead of the running config.")
    ] = None,
    socket: SocketOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the effective config as TOML that `config check` accepts (secrets masked)."""
    if path:
        from wsgate.config import config_view, load_config

        view = config_view(load_config(path))
    else:
        view = call(socket, config, "config.show")
    if json_:
        emit_json(view)
    else:
        sys.stdout.write(_toml(view))
