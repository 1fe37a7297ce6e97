"""The umbrella that runs the exchange simulators, for the demo, tests and benchmarks."""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any

from wsgate.sim.binance import BinanceSim
from wsgate.sim.binance_usdm import BinanceUsdmSim
from wsgate.sim.bitfinex import BitfinexSim
from wsgate.sim.bybit import BybitSim
from wsgate.sim.okx import OkxSim
from wsgate.sim.server import SimStatistics

__all__ = ["Simulator", "SimulatorStatistics", "run_simulator"]

logger = logging.getLogger("wsgate.sim")


@dataclass(frozen=True)
class SimulatorStatistics:
    bitfinex: SimStatistics | None
    binance: SimStatistics | None
    binance_usdm: SimStatistics | None = None
    okx: SimStatistics | None = None
    bybit: SimStatistics | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "bitfinex": self.bitfinex.as_dict() if self.bitfinex else None,
            "binance": self.binance.as_dict() if self.binance else None,
            "binance_usdm": self.binance_usdm.as_dict() if self.binance_usdm else None,
            "okx": self.okx.as_dict() if self.okx else None,
            "bybit": self.bybit.as_dict() if self.bybit else None,
        }


def _split_tuning(tuning: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route ``bitfinex_x``/``binance_x``/``usdm_x`` to one sim and a bare ``x`` to every sim
    that takes it."""
    accepts = {
        "bitfinex": set(inspect.signature(BitfinexSim.__init__).parameters) - {"self"},
        "binance": set(inspect.signature(BinanceSim.__init__).parameters) - {"self"},
        "usdm": set(inspect.signature(BinanceUsdmSim.__init__).parameters) - {"self"},
        "okx": set(inspect.signature(OkxSim.__init__).parameters) - {"self"},
        "bybit": set(inspect.signature(BybitSim.__init__).parameters) - {"self"},
    }
    out: dict[str, dict[str, Any]] = {v: {} for v in accepts}
    for key, value in tuning.items():
        venue, _, rest = key.partition("_")
        if venue in out and rest in accepts[venue]:
            out[venue][rest] = value
            continue
        targets = [v for v in out if key in accepts[v]]
        if not targets:
            raise TypeError(f"Simulator: unknown tuning option {key!r}")
        for v in targets:
            out[v][key] = value
    return out


class Simulator:
    """``async with Simulator(seed=1) as sim:`` starts the enabled exchange simulators."""

    def __init__(
        self,
        *,
        seed: int | None = 0,
        bitfinex: bool = True,
        binance: bool = True,
        binance_usdm: bool = True,
        okx: bool = True,
        bybit: bool = True,
        host: str = "127.0.0.1",
        bitfinex_port: int = 0,
        binance_port: int = 0,
        binance_usdm_port: int = 0,
        okx_port: int = 0,
        bybit_port: int = 0,
        **tuning: Any,
    ) -> None:
        opts = _split_tuning(tuning)
        bfx_opts, bnc_opts = opts["bitfinex"], opts["binance"]
        self._bitfinex = (
            BitfinexSim(seed=seed, host=host, port=bitfinex_port, **bfx_opts) if bitfinex else None
        )
        self._binance = (
            BinanceSim(seed=seed, host=host, port=binance_port, **bnc_opts) if binance else None
        )
        self._usdm = (
            BinanceUsdmSim(seed=seed, host=host, port=binance_usdm_port, **opts["usdm"])
            if binance_usdm
            else None
        )
        self._okx = OkxSim(seed=seed, host=host, port=okx_port, **opts["okx"]) if okx else None
        self._bybit = (
            BybitSim(seed=seed, host=host, port=bybit_port, **opts["bybit"]) if bybit else None
        )

    def __repr__(self) -> str:
        return f"Simulator(bitfinex={self._bitfinex!r}, binance={self._binance!r})"

    @property
    def bitfinex(self) -> BitfinexSim:
        if self._bitfinex is None:
            raise RuntimeError("the Bitfinex simulator is disabled (bitfinex=False)")
        return self._bitfinex

    @property
    def binance(self) -> BinanceSim:
        if self._binance is None:
            raise RuntimeError("the Binance simulator is disabled (binance=False)")
        return self._binance

    @property
    def binance_usdm(self) -> BinanceUsdmSim:
        if self._usdm is None:
            raise RuntimeError("the Binance USD-M simulator is disabled (binance_usdm=False)")
        return self._usdm

    @property
    def binance_usdm_url(self) -> str:
        return self.binance_usdm.url

    @property
    def binance_usdm_rest_url(self) -> str:
        return self.binance_usdm.rest_url

    @property
    def okx(self) -> OkxSim:
        if self._okx is None:
            raise RuntimeError("the OKX simulator is disabled (okx=False)")
        return self._okx

    @property
    def okx_url(self) -> str:
        return self.okx.url

    @property
    def bybit(self) -> BybitSim:
        if self._bybit is None:
            raise RuntimeError("the Bybit simulator is disabled (bybit=False)")
        return self._bybit

    @property
    def bybit_url(self) -> str:
        return self.bybit.url

    def _sims(self) -> list[BitfinexSim | BinanceSim | OkxSim | BybitSim]:
        sims = (self._bitfinex, self._binance, self._usdm, self._okx, self._bybit)
        return [s for s in sims if s is not None]

    @property
    def bitfinex_url(self) -> str:
        return self.bitfinex.url

    @property
    def binance_url(self) -> str:
        return self.binance.url

    @property
    def binance_rest_url(self) -> str:
        return self.binance.rest_url

    async def start(self) -> None:
        started: list[BitfinexSim | BinanceSim | OkxSim | BybitSim] = []
        try:
            for sim in self._sims():
                await sim.start()
                started.append(sim)
        except BaseException:
            for sim in started:
                await sim.close()
            raise

    async def close(self) -> None:
        for sim in reversed(self._sims()):
            await sim.close()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def statistics(self) -> SimulatorStatistics:
        return SimulatorStatistics(
            bitfinex=self._bitfinex.statistics() if self._bitfinex else None,
            binance=self._binance.statistics() if self._binance else None,
            binance_usdm=self._usdm.statistics() if self._usdm else None,
            okx=self._okx.statistics() if self._okx else None,
            bybit=self._bybit.statistics() if self._bybit else None,
        )


async def run_simulator(
    host: str,
    bitfinex_port: int,
    binance_port: int,
    seed: int | None,
    stop: asyncio.Event,
    binance_usdm_port: int = 0,
    *,
    json_style: str = "compact",
    okx_port: int = 0,
    bybit_port: int = 0,
) -> None:
    """Serve every simulator until ``stop`` is set (the ``wsgate sim`` command)."""
    async with Simulator(
        seed=seed,
        host=host,
        bitfinex_port=bitfinex_port,
        binance_port=binance_port,
        binance_usdm_port=binance_usdm_port,
        okx_port=okx_port,
        bybit_port=bybit_port,
        json_style=json_style,
    ) as sim:
        logger.info(
            "simulator ready: bitfinex %s, binance %s (REST %s), binance_usdm %s (REST %s), "
            "okx %s, bybit %s; faults at /_sim/fault",
            sim.bitfinex_url,
            sim.binance_url,
            sim.binance_rest_url,
            sim.binance_usdm_url,
            sim.binance_usdm_rest_url,
            sim.okx_url,
            sim.bybit_url,
        )
        await stop.wait()
