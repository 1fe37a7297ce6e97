"""Process entry points behind `wsgate run` and `wsgate sim`: logging, event loop, exit code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgate.config import Config

__all__ = ["configure_logging", "install_fast_loop", "run_main", "sim_main"]

log = logging.getLogger("wsgate")


def configure_logging(level: str, log_format: str = "text") -> None:
    """Text or JSON on stderr, journald priorities under systemd, repeats collapsed, every
    line masked (wsgate/logsetup.py)."""
    from wsgate.logsetup import configure_logging as setup

    setup(level, log_format)


def install_fast_loop() -> str:
    """Use uvloop when the `fast` extra is installed; returns the loop's name."""
    if os.environ.get("WSGATE_NO_UVLOOP"):
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_main(
    config_path: str | None,
    *,
    demo: bool,
    seed: int | None,
    log_level: str | None,
    listen: str | None = None,
    metrics_listen: str | None = None,
) -> int:
    """Run the daemon; errors propagate to the CLI's one error handler (wsgate/cli/errors.py)."""
    from wsgate.config.env import Override

    flags = [
        Override(key, value, flag)
        for key, value, flag in (
            ("gateway.listen", listen, "--listen"),
            ("metrics.listen", metrics_listen, "--metrics-listen"),
            ("daemon.log_level", log_level, "--log-level"),
        )
        if value is not None
    ]
    if not demo and not config_path:
        print("wsgate run: give --config PATH, or --demo for the built-in demo", file=sys.stderr)
        return 2
    source = _config_source(config_path, demo, flags)
    cfg = source()
    if demo and not config_path:
        cfg = _free_demo_ports(cfg)
    configure_logging(cfg.daemon.log_level, cfg.daemon.log_format)
    loop_name = install_fast_loop()
    log.info("event loop: %s", loop_name)
    return asyncio.run(_run(cfg, source, config_path, demo=demo, seed=seed))


def _config_source(config_path: str | None, demo: bool, flags: list[Any]) -> Callable[[], Config]:
    """How the daemon reads its config, at start and on every reload (flags stay applied)."""
    from wsgate.config import load_config, parse_config

    if config_path:
        return lambda: load_config(config_path, overrides=flags)
    from wsgate.demo import DEMO_TOML

    return lambda: parse_config(DEMO_TOML, "<demo>", overrides=flags)


def _port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _free_demo_ports(cfg: Config) -> Config:
    """The built-in demo moves off a busy default port (and says so); a set one never moves."""
    import dataclasses

    from wsgate.config.schema import split_listen

    set_keys = {key for key, _ in cfg.overrides}
    gateway, metrics = cfg.gateway, cfg.metrics
    for key, listen, flag in (
        ("gateway.listen", gateway.listen, "--listen"),
        ("metrics.listen", metrics.listen, "--metrics-listen"),
    ):
        if not listen or key in set_keys:
            continue
        host, port = split_listen(listen)
        if _port_free(host, port):
            continue
        fmt_host = f"[{host}]" if ":" in host else host
        moved = f"{fmt_host}:{_free_port(host)}"
        print(
            f"wsgate: {listen} ({key}) is in use; the demo uses {moved} instead "
            f"(choose one with {flag} HOST:PORT)",
            file=sys.stderr,
        )
        if key == "gateway.listen":
            gateway = dataclasses.replace(gateway, listen=moved)
        else:
            metrics = dataclasses.replace(metrics, listen=moved)
    return dataclasses.replace(cfg, gateway=gateway, metrics=metrics)


async def _run(
    cfg: Config,
    source: Callable[[], Config],
    config_path: str | None,
    *,
    demo: bool,
    seed: int | None,
) -> int:
    from wsgate.daemon import Daemon

    if not demo:
        daemon = Daemon(
            cfg, config_path=config_path, reload_source=source, seed=seed, freeze_heap=True
        )
        return await daemon.serve()

    import dataclasses

    from wsgate.demo import point_at_simulator
    from wsgate.paths import default_control_socket
    from wsgate.sim import Simulator

    async with Simulator(seed=seed if seed is not None else 1) as sim:

        def demo_source(base: Config | None = None) -> Config:
            base = base or source()
            pointed = point_at_simulator(
                base,
                sim.bitfinex_url,
                sim.binance_url,
                sim.binance_rest_url,
                binance_usdm_url=sim.binance_usdm_url,
                binance_usdm_rest_url=sim.binance_usdm_rest_url,
                okx_url=sim.okx_url,
                bybit_url=sim.bybit_url,
            )
            # A reload keeps the ports the demo moved to (listen changes need a restart).
            pointed = dataclasses.replace(
                pointed,
                gateway=dataclasses.replace(pointed.gateway, listen=cfg.gateway.listen),
                metrics=dataclasses.replace(pointed.metrics, listen=cfg.metrics.listen),
            )
            if config_path or any(k == "daemon.control_socket" for k, _ in pointed.overrides):
                return pointed
            d = dataclasses.replace(pointed.daemon, control_socket=default_control_socket())
            return dataclasses.replace(pointed, daemon=d)

        first = demo_source(cfg)
        log.info(
            "demo: simulator on %s (Bitfinex) and %s (Binance); try "
            "`wsgate status` or a client on ws://%s/bitfinex",
            sim.bitfinex_url,
            sim.binance_url,
            first.gateway.listen,
        )
        daemon = Daemon(
            first,
            config_path=config_path,
            reload_source=demo_source,
            demo=True,
            seed=seed,
            freeze_heap=True,
        )
        daemon.simulators = {
            "bitfinex": sim.bitfinex_url,
            "binance": sim.binance_url,
            "binance_usdm": sim.binance_usdm_url,
            "okx": sim.okx_url,
            "bybit": sim.bybit_url,
        }
        serving = asyncio.create_task(daemon.serve())
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        bots = None
        if daemon.ready.is_set() and not os.environ.get("WSGATE_DEMO_NO_BOTS"):
            from wsgate.sim.demo_bots import run_demo_bots

            base = f"ws://{first.gateway.host}:{daemon.gateway.port}"
            bots = asyncio.create_task(run_demo_bots(base))
        ready.cancel()
        try:
            return await serving
        finally:
            if bots is not None:
                bots.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await bots


def sim_main(
    host: str,
    bitfinex_port: int,
    binance_port: int,
    seed: int,
    binance_usdm_port: int = 8803,
    json_style: str = "compact",
    okx_port: int = 8804,
    bybit_port: int = 8805,
) -> int:
    from wsgate.sim import run_simulator

    configure_logging("info")

    async def _go() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulator(
            host,
            bitfinex_port,
            binance_port,
            seed,
            stop,
            binance_usdm_port,
            json_style=json_style,
            okx_port=okx_port,
            bybit_port=bybit_port,
        )

    asyncio.run(_go())
    return 0
