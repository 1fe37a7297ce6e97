"""Cost of locating and rewriting one upstream frame (wsgate.dialects), per JSON formatting.

For typical frames of both dialects this times what the hub does per frame before the
fan-out: ``UpstreamCodec.on_upstream_frame`` (routing key and payload slice), the shared
``Dialect.rewrite`` and, for trade streams, ``Dialect.dedup_id``. Each frame is timed as
the exchanges write it (``compact``: the fast path) and re-formatted the way other servers
do (``spaced``: ``", "``/``": "`` separators; ``pretty``: indent 2 and a trailing newline),
which takes the exact fallback. Reports the best of several repeats in microseconds.

Run ``python -m bench.core_locate`` (``--quick`` for a short run, ``--json`` for the dict).
"""

from __future__ import annotations

import json
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from wsgate.dialects.base import ChannelData, FrameForm
from wsgate.dialects.binance import BinanceDialect
from wsgate.dialects.bitfinex import OB_CHECKSUM, BitfinexDialect
from wsgate.sim.jsonstyle import restyle

__all__ = ["FRAMES", "run"]

_LEVELS = ",".join(f'["4325{i}.12000000","0.00{i}"]' for i in range(20))
FRAMES: dict[str, tuple[str, str]] = {
    "binance_trade": (
        "binance",
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000123,"s":"BTCUSDT",'
        '"t":3123456789,"p":"43251.12000000","q":"0.00123000","T":1700000000122,'
        '"m":true,"M":true}}',
    ),
    "binance_depth20": (
        "binance",
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000123,'
        f'"s":"BTCUSDT","U":157,"u":160,"b":[{_LEVELS}],"a":[{_LEVELS}]}}}}',
    ),
    "bitfinex_book": ("bitfinex", "[17082,[29999,3,1.25]]"),
    "bitfinex_te": ("bitfinex", '[17083,"te",[1401253839,1700000000123,0.012,29999.5]]'),
    "bitfinex_hb": ("bitfinex", '[17082,"hb"]'),
}


def _work(dialect: str, text: str) -> Callable[[], Any]:
    if dialect == "binance":
        bnc = BinanceDialect()
        up = bnc.open_upstream()

        def binance() -> Any:
            ev = up.on_upstream_frame(text)
            assert type(ev) is ChannelData
            bnc.dedup_id(ev)
            return bnc.rewrite(ev, 0, FrameForm.PLAIN)

        return binance
    bfx = BitfinexDialect()
    bup = bfx.open_upstream(OB_CHECKSUM)

    def bitfinex() -> Any:
        ev = bup.on_upstream_frame(text)
        assert type(ev) is ChannelData
        bfx.dedup_id(ev)
        return bfx.rewrite(ev, 7, FrameForm.PLAIN)

    return bitfinex


def _best_us(fn: Callable[[], Any], number: int, repeat: int) -> float:
    # CPU time of this thread's work: on a shared machine, wall time mostly measures others.
    times = timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)
    return min(times) / number * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    number, repeat = (2000, 5) if quick else (5000, 20)
    out: dict[str, Any] = {"unit": "us per frame (locate + dedup id + rewrite)"}
    for name, (dialect, text) in FRAMES.items():
        row: dict[str, float] = {}
        for style in ("compact", "spaced", "pretty"):
            styled = restyle(text, style)
            row[style] = round(_best_us(_work(dialect, styled), number, repeat), 3)
        row["spaced_vs_compact"] = round(row["spaced"] / row["compact"], 1)
        out[name] = row
    return out


if __name__ == "__main__":
    res = run("--quick" in sys.argv)
    if "--json" in sys.argv:
        print(json.dumps(res, indent=1))
    else:
        for k, v in res.items():
            print(f"{k}: {v}")
