"""binance-connector (Binance's official Python connector) pointed at wsgate.

``SpotWebsocketStreamClient(stream_url=...)`` connects to ``<url>/ws`` or ``<url>/stream`` and
subscribes with SUBSCRIBE messages whose ids are its own; ``Spot(base_url=...)`` fetches the
REST depth snapshot. The connector is synchronous (a thread per socket), so every call that
blocks on the network runs in a worker thread while the gateway keeps the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from typing import Any

import pytest

from tests.compat.rig import INSTALL_HINT, gateway_http, stack, until, upstream_binance_streams

pytest.importorskip(
    "binance.websocket.spot.websocket_stream", reason=f"binance-connector {INSTALL_HINT}"
)

from binance.spot import Spot
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient


class Inbox:
    """Messages the connector's reader thread hands to ``on_message``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def on_message(self, _manager: object, message: str) -> None:
        with self._lock:
            self._items.append(json.loads(message))

    def items(self) -> list[Any]:
        with self._lock:
            return list(self._items)

    def replies(self) -> dict[object, Any]:
        return {m["id"]: m for m in self.items() if "id" in m}

    def data(self, stream: str | None = None) -> list[dict[str, Any]]:
        out = []
        for m in self.items():
            if "id" in m:
                continue
            if "stream" in m:
                if stream is None or m["stream"] == stream:
                    out.append(m["data"])
            elif stream is None:
                out.append(m)
        return out


async def open_client(url: str, inbox: Inbox, combined: bool) -> SpotWebsocketStreamClient:
    return await asyncio.to_thread(
        SpotWebsocketStreamClient,
        stream_url=url,
        on_message=inbox.on_message,
        is_combined=combined,
    )


def test_connector_streams_subscribe_ids_and_rest_snapshot_contiguity() -> None:
    async def scenario() -> None:
        async with stack() as (gw, sim):
            base = gw.url("binance")
            combined_inbox, plain_inbox = Inbox(), Inbox()
            combined = await open_client(base, combined_inbox, combined=True)
            plain = await open_client(base, plain_inbox, combined=False)
            try:
                await asyncio.to_thread(combined.trade, symbol="btcusdt", id=1)
                await asyncio.to_thread(combined.book_ticker, symbol="btcusdt", id=2)
                await asyncio.to_thread(combined.diff_book_depth, symbol="btcusdt", speed=100, id=3)
                await asyncio.to_thread(plain.trade, symbol="btcusdt", id=7)
                await until(lambda: {1, 2, 3} <= set(combined_inbox.replies()), what="acks")
                await asyncio.to_thread(combined.list_subscribe, id=4)
                await until(lambda: 4 in combined_inbox.replies(), what="LIST_SUBSCRIPTIONS")
                snapshot = await asyncio.to_thread(
                    Spot(base_url=gateway_http(gw, "binance")).depth, "BTCUSDT", limit=100
                )
                depth = "btcusdt@depth@100ms"
                await until(
                    lambda: (
                        any(
                            d["u"] > snapshot["lastUpdateId"] + 20
                            for d in combined_inbox.data(depth)
                        )
                        and len(plain_inbox.data()) >= 3
                        and len(combined_inbox.data("btcusdt@trade")) >= 3
                        and combined_inbox.data("btcusdt@bookTicker")
                    ),
                    20,
                    "stream data",
                )
                # the shared btcusdt@trade is one upstream stream for both bots
                assert upstream_binance_streams(sim) == 3
            finally:
                await asyncio.to_thread(combined.stop)
                await asyncio.to_thread(plain.stop)

        replies = combined_inbox.replies()
        for req_id in (1, 2, 3):
            assert replies[req_id] == {"result": None, "id": req_id}
        assert sorted(replies[4]["result"]) == sorted(
            ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]
        )
        assert plain_inbox.replies() == {7: {"result": None, "id": 7}}
        for t in plain_inbox.data() + combined_inbox.data("btcusdt@trade"):
            assert t["e"] == "trade" and t["s"] == "BTCUSDT" and float(t["p"]) > 0
        for b in combined_inbox.data("btcusdt@bookTicker"):
            assert 0 < float(b["b"]) < float(b["a"])
        # Binance's book recipe: drop u <= lastUpdateId; the first kept event straddles it;
        # every later U is the previous u + 1.
        last = snapshot["lastUpdateId"]
        events = [d for d in combined_inbox.data(depth) if d["u"] > last]
        assert events[0]["U"] <= last + 1 <= events[0]["u"]
        for prev, cur in itertools.pairwise(events):
            assert cur["U"] == prev["u"] + 1, (prev["u"], cur["U"])

    asyncio.run(scenario())
