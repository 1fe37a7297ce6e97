"""`wsgate sim`: run the exchange simulator, inject faults into a running one, read its stats.

``wsgate sim`` alone (or ``wsgate sim run``) serves both simulators in the foreground.
``wsgate sim fault KIND`` and ``wsgate sim stats`` talk to a running simulator over its
HTTP side door (``GET /_sim/fault?kind=...``, ``GET /_sim/stats``) with the standard
library only, so they work against a simulator started by another process or by
``wsgate run --demo``.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any

import typer

from wsgate.cli.common import JsonOpt, emit_json

__all__ = ["FAULT_KINDS", "fault_url", "sim_app"]

FAULT_KINDS = (
    "drop",
    "stall",
    "resume",
    "latency",
    "info",
    "server_shutdown",
    "reject_handshakes",
    "channel_limit",
    "malformed",
    "bad_checksum",
    "clear",
)

sim_app = typer.Typer(
    help="Exchange simulator: run it, inject faults, read its statistics.",
    invoke_without_command=True,
)

HostOpt = Annotated[str, typer.Option(help="Address to bind (loopback by default).")]
BfxPortOpt = Annotated[int, typer.Option(help="Bitfinex v2 simulator port.")]
BncPortOpt = Annotated[int, typer.Option(help="Binance spot simulator port.")]
UsdmPortOpt = Annotated[int, typer.Option(help="Binance USD-M futures simulator port.")]
OkxPortOpt = Annotated[int, typer.Option(help="OKX v5 simulator port.")]
BybitPortOpt = Annotated[int, typer.Option(help="Bybit v5 simulator port.")]
SeedOpt = Annotated[int, typer.Option(help="Market random-walk seed.")]
JsonStyleOpt = Annotated[
    str,
    typer.Option(
        "--json-style",
        help="How the simulators write JSON: compact (as the exchanges do), spaced "
        '({"a": 1, "b": 2}) or pretty (indented), like other exchange-compatible servers.',
    ),
]
PortOpt = Annotated[
    int | None,
    typer.Option(
        "--port",
        help="Port of the simulator to talk to. Default: the running demo's simulator "
        "(found through the control socket), else 8801 (a standalone `wsgate sim`).",
        show_default=False,
    ),
]
ExchangeOpt = Annotated[
    str,
    typer.Option(
        "--exchange",
        help="Which of the demo's simulators: bitfinex, binance, binance_usdm, okx, bybit.",
    ),
]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Base URL of the simulator, e.g. http://127.0.0.1:8801.")
]
TimeoutOpt = Annotated[float, typer.Option(help="HTTP timeout in seconds.")]


def _serve(
    host: str,
    bitfinex_port: int,
    binance_port: int,
    seed: int,
    usdm_port: int,
    json_style: str,
    okx_port: int = 8804,
    bybit_port: int = 8805,
) -> None:
    from wsgate.main import sim_main
    from wsgate.sim.jsonstyle import STYLES

    if json_style not in STYLES:
        raise typer.BadParameter(
            f"expected one of {', '.join(STYLES)}, got {json_style!r}", param_hint="--json-style"
        )
    raise typer.Exit(
        sim_main(
            host, bitfinex_port, binance_port, seed, usdm_port, json_style, okx_port, bybit_port
        )
    )


@sim_app.callback()
def sim_default(
    ctx: typer.Context,
    host: HostOpt = "127.0.0.1",
    bitfinex_port: BfxPortOpt = 8801,
    binance_port: BncPortOpt = 8802,
    seed: SeedOpt = 1,
    binance_usdm_port: UsdmPortOpt = 8803,
    json_style: JsonStyleOpt = "compact",
    okx_port: OkxPortOpt = 8804,
    bybit_port: BybitPortOpt = 8805,
) -> None:
    """Run the exchange simulator alone (the default), or a subcommand below."""
    if ctx.invoked_subcommand is None:
        _serve(
            host,
            bitfinex_port,
            binance_port,
            seed,
            binance_usdm_port,
            json_style,
            okx_port,
            bybit_port,
        )


@sim_app.command("run")
def sim_run(
    host: HostOpt = "127.0.0.1",
    bitfinex_port: BfxPortOpt = 8801,
    binance_port: BncPortOpt = 8802,
    seed: SeedOpt = 1,
    binance_usdm_port: UsdmPortOpt = 8803,
    json_style: JsonStyleOpt = "compact",
    okx_port: OkxPortOpt = 8804,
    bybit_port: BybitPortOpt = 8805,
) -> None:
    """Run every simulator in the foreground until SIGINT/SIGTERM."""
    _serve(
        host, bitfinex_port, binance_port, seed, binance_usdm_port, json_style, okx_port, bybit_port
    )


def _base(port: int, url: str | None) -> str:
    if url:
        parts = urllib.parse.urlsplit(url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}"
    return f"http://127.0.0.1:{port}"


def fault_url(base: str, kind: str, params: list[str]) -> str:
    """``/_sim/fault`` URL for ``kind`` with ``k=v`` parameters; raises ValueError on a bad one."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of: {', '.join(FAULT_KINDS)}")
    query = [("kind", kind)]
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {p!r}")
        query.append((key, value))
    return f"{base}/_sim/fault?{urllib.parse.urlencode(query)}"


def _get(url: str, timeout: float) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # our own simulator, loopback
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"ok": False, "error": body.decode("utf-8", "replace").strip()}


def _request(url: str, timeout: float) -> Any:
    try:
        status, doc = _get(url, timeout)
    except (urllib.error.URLError, OSError) as exc:
        print(f"wsgate: cannot reach the simulator at {url}: {exc}", file=sys.stderr)
        raise typer.Exit(3) from None
    if status != 200:
        err = doc.get("error") if isinstance(doc, dict) else doc
        print(f"wsgate: simulator refused: {err}", file=sys.stderr)
        raise typer.Exit(2)
    return doc


def _discover(exchange: str, socket: str | None) -> str | None:
    """The demo daemon's simulator for ``exchange`` (`wsgate run --demo` reports them)."""
    from wsgate.control.client import ControlClient, resolve_socket_path
    from wsgate.errors import ControlError

    try:
        status = ControlClient(resolve_socket_path(socket, None), timeout=5.0).call("status")
    except ControlError:
        return None
    sims = status.get("simulators") if isinstance(status, dict) else None
    if not sims:
        return None
    if exchange not in sims:
        known = ", ".join(sorted(sims))
        print(f"wsgate: the demo has no {exchange!r} simulator (it has: {known})", file=sys.stderr)
        raise typer.Exit(2)
    return str(sims[exchange])


def _target(port: int | None, url: str | None, exchange: str, socket: str | None) -> str:
    if url or port is not None:
        return _base(port or 8801, url)
    found = _discover(exchange, socket)
    return _base(8801, found) if found else _base(8801, None)


SimSocketOpt = Annotated[
    str | None,
    typer.Option("--socket", help="Control socket of the demo daemon (to find its simulators)."),
]


@sim_app.command("fault")
def sim_fault(
    kind: Annotated[str, typer.Argument(help="One of: " + ", ".join(FAULT_KINDS) + ".")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Fault parameter key=value (repeatable)."),
    ] = None,
    port: PortOpt = None,
    url: UrlOpt = None,
    exchange: ExchangeOpt = "bitfinex",
    socket: SimSocketOpt = None,
    timeout: TimeoutOpt = 10.0,
    json_: JsonOpt = False,
) -> None:
    """Inject a fault into a running simulator, e.g. `wsgate sim fault info -p code=20051`."""
    try:
        target = fault_url(_target(port, url, exchange, socket), kind, param or [])
    except ValueError as exc:
        print(f"wsgate: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    doc = _request(target, timeout)
    if json_:
        emit_json(doc)
        return
    from wsgate.cli.render import render_rows

    faults = doc.get("faults") or {}
    render_rows(
        [{"fault": doc.get("kind"), "result": doc.get("result"), **faults}],
        ["fault", "result", *faults],
    )


@sim_app.command("stats")
def sim_stats(
    port: PortOpt = None,
    url: UrlOpt = None,
    exchange: ExchangeOpt = "bitfinex",
    socket: SimSocketOpt = None,
    timeout: TimeoutOpt = 10.0,
    json_: JsonOpt = False,
) -> None:
    """A running simulator's statistics: handshakes, connections, frames, active faults."""
    doc = _request(f"{_target(port, url, exchange, socket)}/_sim/stats", timeout)
    if json_:
        emit_json(doc)
        return
    from wsgate.cli.render import render_rows

    summary = {k: v for k, v in doc.items() if not isinstance(v, dict | list)}
    render_rows([summary], list(summary), title="simulator")
    faults = doc.get("faults")
    if isinstance(faults, dict) and faults:
        render_rows([faults], list(faults), title="faults")
    conns = doc.get("connections")
    if isinstance(conns, list) and conns:
        render_rows(conns, list(conns[0]), title="connections")
