"""python-binance (``AsyncClient`` + ``BinanceSocketManager`` + ``DepthCacheManager``) on wsgate.

The library's stream URL and REST base are overridden to the route; everything else is the
library's own code: ``/ws/<stream>`` sockets, ``/stream?streams=`` multiplex sockets, and the
depth cache that fetches the REST snapshot and then insists on contiguous ``U``/``u`` ids
(it re-fetches the snapshot on any gap, which the test counts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, gateway_http, stack, upstream_binance_streams

pytest.importorskip("binance.async_client", reason=f"python-binance {INSTALL_HINT}")

from binance.async_client import AsyncClient
from binance.ws.depthcache import DepthCacheManager
from binance.ws.streams import BinanceSocketManager

from wsgate import Gateway


class CountingDepthCache(DepthCacheManager):  # type: ignore[misc]
    """The library's depth cache, counting how often it had to (re)load the REST snapshot."""

    snapshots = 0

    async def _init_cache(self) -> None:
        self.snapshots += 1
        await super()._init_cache()


def client_for(gw: Gateway) -> tuple[AsyncClient, BinanceSocketManager]:
    client = AsyncClient()
    client.API_URL = gateway_http(gw, "binance") + "/api"
    bm = BinanceSocketManager(client)
    bm.STREAM_URL = gw.url("binance") + "/"
    return client, bm


async def first_messages(
    socket: Any, count: int, probe: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """The first ``count`` messages; ``probe`` runs after each one, while the socket is open."""
    out: list[dict[str, Any]] = []
    async with socket as stream:
        while len(out) < count:
            msg = await asyncio.wait_for(stream.recv(), 10)
            assert msg.get("e") != "error", msg
            out.append(msg)
            if probe is not None:
                probe()
    return out


def test_trade_and_book_ticker_sockets_parse_and_share_upstream() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            client, bm = client_for(gw)
            other_client, other_bm = client_for(gw)
            try:
                # Sampled while the sockets are open (a closed one may let its stream go
                # after the linger): never more than two, and two at some point.
                streams: list[int] = []

                def probe() -> None:
                    streams.append(upstream_binance_streams(sim))

                trades, other_trades, tickers = await asyncio.gather(
                    first_messages(bm.trade_socket("BTCUSDT"), 3, probe),
                    first_messages(other_bm.trade_socket("BTCUSDT"), 3, probe),
                    first_messages(bm.symbol_book_ticker_socket("BTCUSDT"), 3, probe),
                )
                # two bots' trade sockets plus one bookTicker: two upstream streams
                assert max(streams) == 2, streams
            finally:
                await client.close_connection()
                await other_client.close_connection()
        for t in trades + other_trades:
            assert t["e"] == "trade" and t["s"] == "BTCUSDT" and float(t["p"]) > 0
        ids = [t["t"] for t in trades]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for b in tickers:
            assert b["s"] == "BTCUSDT" and 0 < float(b["b"]) < float(b["a"])

    asyncio.run(scenario())


def test_multiplex_socket_gets_the_combined_wrapper() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            client, bm = client_for(gw)
            streams = ["btcusdt@trade", "ethusdt@bookTicker", "btcusdt@kline_1m"]
            try:
                msgs = await first_messages(bm.multiplex_socket(streams), 12)
            finally:
                await client.close_connection()
        assert {m["stream"] for m in msgs} <= set(streams)
        assert {"btcusdt@trade", "ethusdt@bookTicker"} <= {m["stream"] for m in msgs}
        for m in msgs:
            if m["stream"] == "btcusdt@kline_1m":
                assert m["data"]["e"] == "kline" and m["data"]["k"]["i"] == "1m"

    asyncio.run(scenario())


def test_depth_cache_from_rest_snapshot_stays_contiguous() -> None:
    async def scenario() -> None:
        async with stack() as (gw, _sim):
            client, bm = client_for(gw)
            dcm = CountingDepthCache(
                client, "BTCUSDT", bm=bm, limit=100, refresh_interval=0, ws_interval=100
            )
            try:
                async with dcm as cache:
                    book = None
                    for _ in range(20):  # diff events (depth@100ms) applied on top of the snapshot
                        book = await asyncio.wait_for(cache.recv(), 10)
                    assert book is not None
                    settled = dcm.snapshots
                    for _ in range(30):
                        book = await asyncio.wait_for(cache.recv(), 10)
            finally:
                await client.close_connection()
        # The library fetches its snapshot before its socket is up, so one re-fetch at start
        # is its own race; after that any re-fetch would mean wsgate broke U/u contiguity.
        assert settled <= 2
        assert dcm.snapshots == settled
        bids, asks = book.get_bids(), book.get_asks()
        assert bids and asks and bids[0][0] < asks[0][0]

    asyncio.run(scenario())
