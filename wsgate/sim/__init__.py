"""Exchange simulator (Bitfinex v2, Binance spot) with fault injection.

Used by ``wsgate run --demo``, ``wsgate sim``, the test suite and the benchmarks::

    async with Simulator(seed=1) as sim:
        sim.bitfinex_url          # ws://127.0.0.1:PORT/ws/2
        sim.binance_url           # ws://127.0.0.1:PORT
        sim.binance_rest_url      # http://127.0.0.1:PORT/api/v3
        sim.bitfinex.faults.stall(5)
"""

from wsgate.sim.binance import BinanceSim
from wsgate.sim.bitfinex import BitfinexSim
from wsgate.sim.bitfinex_feeds import book_checksum
from wsgate.sim.faults import FaultError, Faults, FaultStatistics
from wsgate.sim.server import SimStatistics
from wsgate.sim.simulator import Simulator, SimulatorStatistics, run_simulator

__all__ = [
    "BinanceSim",
    "BitfinexSim",
    "FaultError",
    "FaultStatistics",
    "Faults",
    "SimStatistics",
    "Simulator",
    "SimulatorStatistics",
    "book_checksum",
    "run_simulator",
]
