"""The simulator stack: the built-in exchange simulator and an in-process wsgate in front of it.

One place writes the config of this stack (it used to be copied into every module that
needed it). A route is named after what it talks to (:data:`KINDS`) and takes per-test
options::

    async with stack({"bitfinex": Route("bitfinex"), "bn": Route("binance", rest=False)}) as (
        gw,
        sim,
    ):
        ...
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.sim import Simulator

__all__ = ["KINDS", "Route", "daemon_head", "stack", "stack_config"]

# kind -> (dialect, type, the simulator's WebSocket URL attribute, its REST URL attribute)
KINDS: dict[str, tuple[str, str, str, str | None]] = {
    "bitfinex": ("bitfinex", "market_data", "bitfinex_url", None),
    "binance": ("binance", "market_data", "binance_url", "binance_rest_url"),
    "binance_user": ("binance", "user_data", "binance_url", "binance_rest_url"),
    "binance_trade": ("binance", "trading", "binance_url", None),
    "binance_usdm": ("binance_usdm", "market_data", "binance_usdm_url", "binance_usdm_rest_url"),
    "binance_usdm_user": ("binance_usdm", "user_data", "binance_usdm_url", "binance_usdm_rest_url"),
    "binance_usdm_trade": ("binance_usdm", "trading", "binance_usdm_url", None),
    "okx": ("okx", "market_data", "okx_url", None),
    "okx_private": ("okx", "trading", "okx_url", None),
    "bybit": ("bybit", "market_data", "bybit_url", None),
    "bybit_private": ("bybit", "trading", "bybit_url", None),
}


@dataclass(frozen=True)
class Route:
    """One route of the stack: a :data:`KINDS` entry plus route keys (``min_connections=0``)."""

    kind: str
    rest: bool = True  # set rest_url when the kind has one (Binance depth sync, pass-through)
    options: dict[str, Any] = field(default_factory=dict)

    def __init__(self, kind: str, *, rest: bool = True, **options: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown route kind {kind!r}; kinds: {', '.join(KINDS)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "rest", rest)
        object.__setattr__(self, "options", options)

    def toml(self, name: str, sim: Simulator) -> str:
        dialect, ctype, url_attr, rest_attr = KINDS[self.kind]
        lines = [f"[routes.{name}]", f'dialect = "{dialect}"', f'type = "{ctype}"']
        if self.rest and rest_attr is not None:
            lines.append(f'rest_url = "{getattr(sim, rest_attr)}"')
        lines += [f"{k} = {json.dumps(v)}" for k, v in self.options.items()]
        lines += [f"[[routes.{name}.endpoints]]", f'url = "{getattr(sim, url_attr)}"']
        return "\n".join(lines)


DEFAULT_ROUTES: Mapping[str, Route] = {"bitfinex": Route("bitfinex"), "binance": Route("binance")}


def stack_config(
    sim: Simulator,
    tmp: str,
    routes: Mapping[str, Route] = DEFAULT_ROUTES,
    *,
    gateway: str = "",
    extra: str = "",
) -> str:
    """The TOML of the stack: ``gateway`` adds ``[gateway]`` keys, ``extra`` whole tables."""
    body = "\n".join(r.toml(name, sim) for name, r in routes.items())
    return daemon_head(tmp, gateway=gateway) + body + "\n" + extra


def daemon_head(tmp: str, *, gateway: str = "") -> str:
    """The [daemon], [gateway] and [metrics] tables of an in-process gateway: its files in
    ``tmp``, bots on a free port, no /metrics listener; ``gateway`` adds [gateway] keys."""
    return f"""
[daemon]
control_socket = "{tmp}/ctl.sock"
state_dir = "{tmp}/state"
[gateway]
listen = "127.0.0.1:0"
{gateway}
[metrics]
listen = ""
"""


@asynccontextmanager
async def stack(
    routes: Mapping[str, Route] = DEFAULT_ROUTES,
    *,
    seed: int = 5,
    gateway_seed: int = 3,
    gateway: str = "",
    extra: str = "",
    **sim_tuning: Any,
) -> AsyncIterator[tuple[Gateway, Simulator]]:
    """The simulator (``sim_tuning``: its keyword arguments) and wsgate in front of it."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        async with Simulator(seed=seed, **sim_tuning) as sim:
            cfg = parse_config(stack_config(sim, tmp, routes, gateway=gateway, extra=extra))
            async with Gateway(cfg, seed=gateway_seed) as gw:
                yield gw, sim
