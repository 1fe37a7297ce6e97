"""Process entry points behind `wsgate run` and `wsgate sim`: logging, event loop, exit code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

__all__ = ["configure_logging", "install_fast_loop", "run_main", "sim_main"]

log = logging.getLogger("wsgate")


def configure_logging(level: str) -> None:
    # Under systemd the journal adds timestamps; on a terminal we add them ourselves.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    from wsgate.redact import RedactingFormatter

    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        # Last line of defence: URLs masked and configured secrets scrubbed from every line.
        handler.setFormatter(RedactingFormatter(fmt))
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


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
    config_path: str | None, *, demo: bool, seed: int | None, log_level: str | None
) -> int:
    from wsgate.config import load_config
    from wsgate.errors import ConfigError, WsgateError

    try:
        if demo:
            from wsgate.demo import demo_config

            cfg = load_config(config_path) if config_path else demo_config()
        elif config_path:
            cfg = load_config(config_path)
        else:
            print(
                "wsgate run: give --config PATH, or --demo for the built-in demo", file=sys.stderr
            )
            return 2
    except ConfigError as exc:
        for p in exc.problems:
            print(p.render(exc.filename), file=sys.stderr)
        print(f"wsgate: {len(exc.problems)} config error(s); not starting", file=sys.stderr)
        return 1
    configure_logging(log_level or cfg.daemon.log_level)
    loop_name = install_fast_loop()
    log.info("event loop: %s", loop_name)
    try:
        return asyncio.run(_run(cfg, config_path, demo=demo, seed=seed))
    except WsgateError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(cfg: object, config_path: str | None, *, demo: bool, seed: int | None) -> int:
    from wsgate.config import Config, load_config
    from wsgate.daemon import Daemon

    assert isinstance(cfg, Config)
    if not demo:
        daemon = Daemon(cfg, config_path=config_path, seed=seed)
        return await daemon.serve()

    import dataclasses

    from wsgate.demo import demo_config, point_at_simulator
    from wsgate.paths import default_control_socket
    from wsgate.sim import Simulator

    async with Simulator(seed=seed if seed is not None else 1) as sim:

        def demo_source() -> Config:
            base = load_config(config_path) if config_path else demo_config()
            pointed = point_at_simulator(
                base, sim.bitfinex_url, sim.binance_url, sim.binance_rest_url
            )
            if config_path:
                return pointed
            d = dataclasses.replace(pointed.daemon, control_socket=default_control_socket())
            return dataclasses.replace(pointed, daemon=d)

        first = demo_source()
        log.info(
            "demo: simulator on %s (Bitfinex) and %s (Binance); try "
            "`wsgate status` or a client on ws://%s/bitfinex",
            sim.bitfinex_url,
            sim.binance_url,
            first.gateway.listen,
        )
        daemon = Daemon(
            first, config_path=config_path, reload_source=demo_source, demo=True, seed=seed
        )
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


def sim_main(host: str, bitfinex_port: int, binance_port: int, seed: int) -> int:
    from wsgate.sim import run_simulator

    configure_logging("info")

    async def _go() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulator(host, bitfinex_port, binance_port, seed, stop)

    asyncio.run(_go())
    return 0
