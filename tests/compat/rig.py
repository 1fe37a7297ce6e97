"""Third-party exchange clients against an in-process wsgate + simulator.

The clients are not dependencies of wsgate: they live in the ``compat`` extra and run in
their own environment (``make compat``, part of ``make test`` and so of CI). Each module
guards its imports with ``pytest.importorskip(..., reason=...)``, which only matters to a
plain ``pytest`` in the main venv: ``make compat`` passes ``--fail-on-skip``
(``tests/conftest.py``), so a client that is not installed, or a test that skips, fails CI.

Adding a client: add it to the ``compat`` extra in pyproject.toml (or to the Makefile's
compat install lines when it needs ``--no-deps``), write ``tests/compat/test_<client>.py``
using :func:`stack` (wsgate with every route pointed at the simulator) and :func:`until`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from tests import simstack
from tests.simstack import Route
from wsgate import Gateway
from wsgate.sim import Simulator

__all__ = [
    "INSTALL_HINT",
    "bitfinex_checksum",
    "gateway_http",
    "stack",
    "until",
    "upstream_binance_streams",
    "upstream_bitfinex_channels",
    "upstream_okx_channels",
    "upstream_usdm_streams",
]

INSTALL_HINT = "not installed; `make compat` installs the third-party clients"
JSON_STYLE = "compact"  # the simulator's json_style; conftest.py runs each test in several


ROUTES = {
    "bitfinex": Route("bitfinex"),
    "binance": Route("binance"),
    "binance_user": Route("binance_user"),
    "binance_trade": Route("binance_trade"),
    "binance_usdm": Route("binance_usdm", backoff_initial=0.05, backoff_max=0.5, min_uptime=0),
    "binance_usdm_user": Route("binance_usdm_user"),
    "binance_usdm_trade": Route("binance_usdm_trade"),
    "okx": Route("okx", backoff_initial=0.05, backoff_max=0.5, min_uptime=0),
    "bybit": Route("bybit", backoff_initial=0.05, backoff_max=0.5, min_uptime=0),
}


@asynccontextmanager
async def stack(**sim_tuning: Any) -> AsyncIterator[tuple[Gateway, Simulator]]:
    """wsgate (``Gateway``) with every route pointed at the built-in simulator.

    The simulator writes JSON in ``JSON_STYLE`` (set per test by conftest.py) unless
    ``json_style`` is given.
    """
    sim_tuning.setdefault("json_style", JSON_STYLE)
    async with simstack.stack(ROUTES, gateway="linger = 0.5", **sim_tuning) as (gw, sim):
        yield gw, sim


def gateway_http(gw: Gateway, route: str) -> str:
    """``http://127.0.0.1:<port>/<route>``: the REST pass-through lives on the WS port."""
    return "http" + gw.url(route)[2:]


async def until(cond: Callable[[], bool], limit: float = 15.0, what: str = "") -> None:
    """Poll state a client fills in from its own callbacks/threads, bounded by ``limit``."""
    try:
        async with asyncio.timeout(limit):
            while not cond():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit}s waiting for {what or cond}") from None


def upstream_okx_channels(sim: Simulator) -> int:
    return sum(c.channels for c in sim.okx.statistics().connections)


def upstream_bitfinex_channels(sim: Simulator) -> int:
    return sum(c.channels for c in sim.bitfinex.statistics().connections)


def upstream_binance_streams(sim: Simulator) -> int:
    return sum(c.channels for c in sim.binance.statistics().connections)


def upstream_usdm_streams(sim: Simulator) -> dict[str, int]:
    """Streams per upstream path (``public``/``market``) at the USD-M simulator."""
    out: dict[str, int] = {}
    for c in sim.binance_usdm.statistics().connections:
        top = c.path.split("/")[1]
        out[top] = out.get(top, 0) + c.channels
    return out


def _num(value: float | int) -> str:
    # What the exchange wrote: integers without ".0", other numbers in shortest repr.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def bitfinex_checksum(
    bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]]
) -> int:
    """Bitfinex's book checksum (unsigned) over the top 25 levels of a P-precision book.

    ``bids`` and ``asks`` are (price, amount) with ask amounts negative, as Bitfinex sends.
    """
    top_bids = sorted(bids, key=lambda level: -level[0])[:25]
    top_asks = sorted(asks, key=lambda level: level[0])[:25]
    parts: list[str] = []
    for i in range(25):
        if i < len(top_bids):
            parts += [_num(top_bids[i][0]), _num(top_bids[i][1])]
        if i < len(top_asks):
            parts += [_num(top_asks[i][0]), _num(top_asks[i][1])]
    return zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF
