"""The ``[[gateway.clients]]`` tables: per-bot identities with their own tokens and limits.

Each entry names a bot (or a group of bots sharing a token): ``name`` (shown in status,
metrics, logs and ``wsgate top``, so it must be usable as a label), exactly one of
``token_env`` / ``token_file``, the ``routes`` it may use (absent: all) and its own
``max_sessions`` / ``max_subscriptions``. A ``token_file`` is checked here as the daemon
will read it: a regular, readable, non-empty file that other users cannot read or write.
Its contents never enter the config (``config show`` prints the path only).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

from wsgate.config.locate import Table, did_you_mean, short
from wsgate.config.schema import ClientConfig

__all__ = ["ANONYMOUS", "CLIENT_NAME", "build_clients", "token_file_problem"]

# A metric label value, a log word and a status column: letters, digits, "_", "-", ".".
CLIENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
# What metrics and views call a session without a client identity: no client may be named so.
ANONYMOUS = "anonymous"
_TOKEN_FILE_MAX = 4096


def token_file_problem(path: str) -> tuple[str, str] | None:
    """(message, hint) when ``path`` is not a usable token file, else None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return (
            f"cannot read token_file {path!r}: {exc.strerror or exc}",
            "give the path of a file holding the client's token, readable by wsgate",
        )
    if not stat.S_ISREG(st.st_mode):
        return f"token_file {path!r} is not a regular file", "point token_file at a file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o027:
        return (
            f"token_file {path!r} is open to other users (mode {mode:04o})",
            f"chmod 600 {path} (or 640 with the group wsgate runs as)",
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(_TOKEN_FILE_MAX + 1)
    except OSError as exc:
        return (
            f"cannot read token_file {path!r}: {exc.strerror or exc}",
            "make it readable by the user wsgate runs as",
        )
    if len(data) > _TOKEN_FILE_MAX:
        return f"token_file {path!r} is over {_TOKEN_FILE_MAX} bytes", "it holds one token"
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return f"token_file {path!r} is not UTF-8 text", "it holds one token as text"
    if not token:
        return f"token_file {path!r} is empty", "write the client's token into it"
    return None


def _check_routes(c: Table, routes: tuple[str, ...], route_names: Sequence[str]) -> None:
    if isinstance(c.data["routes"], list) and not c.data["routes"]:
        c.problem(
            "routes",
            "an empty routes list lets this client in nowhere",
            "list the routes it may use, or remove the key to allow every route",
        )
    known = ", ".join(route_names) or "none"
    for j, route in enumerate(c.data["routes"] if isinstance(c.data["routes"], list) else ()):
        if route in routes and route not in route_names:
            c.problems.add(
                (*c.at("routes"), j),
                f"unknown route {route!r} (routes: {known})",
                did_you_mean(route, route_names),
            )


def _build_client(
    c: Table, taken: dict[str, int], index: int, route_names: Sequence[str]
) -> ClientConfig | None:
    name: str | None = c.string("name")
    if name is not None and not CLIENT_NAME.fullmatch(name):
        c.problem(
            "name",
            f"client name {short(name)} is not usable as a label",
            "use letters, digits, '_', '-' or '.', starting with a letter (at most 64)",
        )
        name = None
    elif name is not None and name.lower() == ANONYMOUS:
        c.problem(
            "name",
            f"client name {name!r} is reserved: it labels the sessions without a client",
            "give this client another name",
        )
        name = None
    elif name is not None:
        first = taken.get(name.lower())
        if first is not None:
            c.problem(
                "name",
                f"duplicate client name {name!r} (already used by gateway.clients[{first}])",
                "give each client a different name (names are compared without case)",
            )
            name = None
        else:
            taken[name.lower()] = index
    token_env = c.env_name("token_env")
    token_file: str | None = c.string("token_file", None)
    if token_env is not None and token_file is not None:
        c.problem(
            "token_file",
            "set only one of token_env and token_file",
            "keep the one that holds this client's token",
        )
    elif token_env is None and token_file is None and not {"token_env", "token_file"} & set(c.data):
        c.problem(
            None,
            "a client needs a token: set token_env or token_file",
            'e.g. token_env = "WSGATE_TOKEN_' + (name or "BOT").upper().replace("-", "_") + '"',
        )
    if token_file is not None:
        found = token_file_problem(token_file)
        if found is not None:
            c.problem("token_file", *found)
    routes: tuple[str, ...] | None = None
    if c.has("routes"):
        routes = c.strings("routes")
        _check_routes(c, routes, route_names)
    cfg = ClientConfig(
        name=name or "",
        token_env=token_env,
        token_file=token_file,
        routes=routes,
        max_sessions=c.integer("max_sessions", None, lo=1),
        max_subscriptions=c.integer("max_subscriptions", None, lo=0),
    )
    c.finish()
    return cfg if name else None


def build_clients(t: Table, route_names: Sequence[str]) -> tuple[ClientConfig, ...]:
    """The ``clients`` array of the ``[gateway]`` table (empty when absent); every route
    a client lists must be one of ``route_names``."""
    if not t.has("clients"):
        return ()
    raw = t.data["clients"]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        t.problem(
            "clients",
            "expected an array of tables",
            "write each client as [[gateway.clients]] with name and token_env or token_file",
        )
        return ()
    taken: dict[str, int] = {}
    out = []
    for index, item in enumerate(raw):
        sub = Table(t.problems, (*t.at("clients"), index), item)
        client = _build_client(sub, taken, index, route_names)
        if client is not None:
            out.append(client)
    return tuple(out)
