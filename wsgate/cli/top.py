"""`wsgate top`: a live, sortable view of routes, connections and sessions (like htop).

Snapshots arrive over the control socket's streaming mode (method ``top``). A reader
thread consumes the stream and keeps only the newest snapshot, so a slow terminal never
backs up the daemon; the main thread reads keys in cbreak mode and redraws.

Keys: ``1`` routes, ``2`` connections, ``3`` sessions, ``4`` clients (the
``[[gateway.clients]]`` identities), ``s`` next sort column, ``r``
reverse, ``q`` (or Ctrl-C) quit. ``--json`` prints one snapshot per line instead.
Imports nothing heavy at module level (the CLI loads this module for every command).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from wsgate.cli.common import ConfigOpt, SocketOpt, fail
from wsgate.control.client import ControlClient, resolve_socket_path
from wsgate.errors import ControlError

__all__ = ["VIEWS", "TopState", "render_top", "top_command"]

# view -> columns as (key in the snapshot row, header, default descending?)
VIEWS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "routes": (
        ("name", "route", False),
        ("health", "health", False),
        ("up", "up", True),
        ("sessions", "sessions", True),
        ("subscriptions", "subs", True),
        ("msg_rate", "msg/s", True),
        ("deliveries", "deliveries", True),
    ),
    "connections": (
        ("health", "health", False),
        ("id", "id", False),
        ("state", "state", False),
        ("latency", "latency", True),
        ("msg_rate", "msg/s", True),
        ("messages_in", "msgs in", True),
        ("errors", "errors", True),
        ("reconnects", "reconn", True),
        ("subscriptions", "subs", True),
        ("age", "age", True),
    ),
    "sessions": (
        ("bytes_out", "bytes out", True),
        ("frames_out", "frames out", True),
        ("messages_in", "msgs in", True),
        ("errors", "errors", True),  # the ones this bot caused (unknown symbol, bad request)
        ("buffered", "buffered", True),
        ("age", "age", True),
        ("subscriptions", "subs", True),
        ("id", "id", False),
    ),
    # [[gateway.clients]] identities: what each holds and how often it was turned away
    "clients": (
        ("sessions", "sessions", True),
        ("subscriptions", "subs", True),
        ("refused", "refused", True),
        ("name", "client", False),
    ),
}
VIEW_KEYS = {"1": "routes", "2": "connections", "3": "sessions", "4": "clients"}


class TopState:
    """What the operator chose (view, sort column, direction) plus the newest snapshot."""

    def __init__(self, view: str = "connections") -> None:
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        self.view = view
        self.sort_index = {v: 0 for v in VIEWS}
        self.reverse = {v: False for v in VIEWS}
        self.snapshot: dict[str, Any] | None = None
        self.snapshots = 0

    @property
    def sort_key(self) -> str:
        return VIEWS[self.view][self.sort_index[self.view]][0]

    @property
    def descending(self) -> bool:
        return VIEWS[self.view][self.sort_index[self.view]][2] != self.reverse[self.view]

    def key(self, ch: str) -> bool:
        """Apply one key press; False means quit."""
        if ch in ("q", "Q"):
            return False
        if ch in VIEW_KEYS:
            self.view = VIEW_KEYS[ch]
        elif ch == "s":
            self.sort_index[self.view] = (self.sort_index[self.view] + 1) % len(VIEWS[self.view])
        elif ch == "r":
            self.reverse[self.view] = not self.reverse[self.view]
        return True

    def rows(self) -> list[dict[str, Any]]:
        if self.snapshot is None:
            return []
        rows = list(self.snapshot.get(self.view) or [])
        key, desc = self.sort_key, self.descending
        present = [r for r in rows if r.get(key) is not None]
        missing = [r for r in rows if r.get(key) is None]
        present.sort(key=lambda r: r[key], reverse=desc)
        return present + missing  # unknown values last, whatever the direction

    def __repr__(self) -> str:
        arrow = "desc" if self.descending else "asc"
        return f"<TopState {self.view} by {self.sort_key} {arrow} snapshots={self.snapshots}>"


def _cell(key: str, v: Any) -> str:
    from wsgate.cli.render import fmt_age, fmt_ms

    if v is None:
        # A session without a [[gateway.clients]] identity: the metrics' label for it.
        return {"routes": "all", "client": "anonymous"}.get(key, "-")
    if key == "routes" and isinstance(v, list):
        return ",".join(str(r) for r in v)
    if key == "latency":
        return fmt_ms(v)
    if key == "age":
        return fmt_age(v)
    if key == "health":
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def render_top(state: TopState) -> Any:
    """A Rich renderable for the current state (header, table, key help)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    snap = state.snapshot
    if snap is None:
        return Text("wsgate top: waiting for the first snapshot…")
    h = snap.get("health") or {}
    score = h.get("score")
    t = snap.get("totals", {})
    head = Text.from_markup(
        f"[bold]wsgate top[/] node [bold]{snap.get('node_id')}[/]  "
        f"health [bold]{'-' if score is None else f'{score:.0f}'}[/]/100  "
        f"routes {t.get('routes', 0)}  upstreams {t.get('up', 0)}/{t.get('connections', 0)}  "
        f"sessions {t.get('sessions', 0)}  {t.get('msg_rate', 0):.1f} msg/s  "
        f"loop lag {1000 * float(snap.get('loop_lag') or 0):.1f}ms"
    )
    table = Table(title=f"{state.view} (sorted by {state.sort_key})", title_justify="left")
    cols = VIEWS[state.view]
    lead = {"routes": "name", "connections": "id", "sessions": "id", "clients": "name"}[state.view]
    order = [lead] + [c[0] for c in cols if c[0] != lead]
    headers = {c[0]: c[1] for c in cols}
    extra = {
        "routes": ["type"],
        "connections": ["route"],
        "sessions": ["route", "client", "peer"],
        "clients": ["routes", "max_sessions", "max_subscriptions"],
    }
    for key in order[:1] + extra[state.view] + order[1:]:
        label = headers.get(key, key)
        if key == state.sort_key:
            label += " ▼" if state.descending else " ▲"
        table.add_column(label, justify="right" if key not in ("name", "id", "state") else "left")
    for row in state.rows():
        cells = [_cell(k, row.get(k)) for k in order[:1] + extra[state.view] + order[1:]]
        if state.view == "connections":
            st = row.get("state", "")
            color = {"open": "green", "degraded": "yellow", "failed": "red"}.get(st, "dim")
            cells[order.index("state") + len(extra[state.view])] = f"[{color}]{st}[/]"
        table.add_row(*cells)
    keys = Text.from_markup(
        "[dim]1[/] routes  [dim]2[/] connections  [dim]3[/] sessions  [dim]4[/] clients  "
        "[dim]s[/] sort  [dim]r[/] reverse  [dim]q[/] quit"
    )
    return Group(head, table, keys)


def top_command(
    socket: SocketOpt = None,
    config: ConfigOpt = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print one snapshot per line (JSON).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (>= 0.2).")] = 1.0,
    count: Annotated[int, typer.Option(help="Stop after N snapshots (0: until q).")] = 0,
    view: Annotated[
        str, typer.Option(help="routes | connections | sessions | clients")
    ] = "connections",
) -> None:
    """Live view of routes, connections, sessions and clients; keys 1-4 views, s sort, q quit."""
    path = resolve_socket_path(socket, config)
    params = {"interval": max(0.2, interval), "count": max(0, count)}
    if view not in VIEWS:
        print(f"wsgate top: --view must be one of {', '.join(VIEWS)}", file=sys.stderr)
        raise typer.Exit(2)
    client = ControlClient(path, timeout=10.0)
    try:
        if json_:
            for _event, data in client.stream("top", params, idle_timeout=interval + 30):
                sys.stdout.write(json.dumps(data, default=str) + "\n")
                sys.stdout.flush()
            return
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            _plain(client, params, view, interval)
            return
        _interactive(client, params, TopState(view), interval)
    except ControlError as err:
        fail(err)
    except KeyboardInterrupt:
        pass


def _plain(client: ControlClient, params: dict[str, Any], view: str, interval: float) -> None:
    """Not a terminal: print one rendering per snapshot (one when --count is not given)."""
    from rich.console import Console

    console = Console()
    state = TopState(view)
    params = {**params, "count": params["count"] or 1}
    for _event, data in client.stream("top", params, idle_timeout=interval + 30):
        state.snapshot = data
        state.snapshots += 1
        console.print(render_top(state))


def _interactive(
    client: ControlClient, params: dict[str, Any], state: TopState, interval: float
) -> None:
    import os
    import queue
    import select
    import signal
    import termios
    import threading
    import tty

    from rich.console import Console
    from rich.live import Live

    inbox: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

    def pump() -> None:
        try:
            for _event, data in client.stream("top", params, idle_timeout=interval + 30):
                inbox.put(data)
            inbox.put(None)
        except BaseException as exc:  # handed to the main thread, which reports it
            inbox.put(exc)

    threading.Thread(target=pump, name="top-stream", daemon=True).start()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # keys arrive one by one; Ctrl-C still sends SIGINT
    # Ctrl-C sets a flag the loop reads within 0.1 s, instead of a KeyboardInterrupt that
    # may land inside Rich's rendering (holding its lock) and leave the screen unrestored.
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: interrupted.set())
    try:
        console = Console()
        with Live(render_top(state), console=console, screen=True, auto_refresh=False) as live:
            while not interrupted.is_set():
                changed = False
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    for ch in os.read(fd, 64).decode(errors="ignore"):
                        if not state.key(ch):
                            return
                        changed = True
                while True:
                    try:
                        item = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        return  # the daemon ended the stream (--count reached, shutdown)
                    if isinstance(item, BaseException):
                        raise item
                    state.snapshot = item
                    state.snapshots += 1
                    changed = True
                if changed:
                    live.update(render_top(state), refresh=True)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGINT, previous)
