"""The USD-M, OKX and Bybit simulators speak their venues' protocols and faults."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request

from websockets.asyncio.client import connect

from tests.sim._simhelp import recv_json, recv_until, run, wait_for
from wsgate.sim.binance_usdm import BinanceUsdmSim
from wsgate.sim.bybit import BybitSim
from wsgate.sim.faults import FaultError
from wsgate.sim.okx import OkxSim


def test_usdm_wrong_path_is_acked_and_silent_and_depth_chains_by_pu() -> None:
    async def scenario() -> None:
        async with BinanceUsdmSim(seed=1) as sim:
            async with connect(sim.url + "/market/ws") as wrong:
                await wrong.send('{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}')
                assert await recv_json(wrong) == {"result": None, "id": 1}
                try:
                    extra = await asyncio.wait_for(wrong.recv(), 0.6)
                except TimeoutError:
                    extra = None
                assert extra is None  # acknowledged, then nothing: the 2026 trap
            async with connect(sim.url + "/public/ws/btcusdt@depth@100ms") as ws:
                events = [await recv_json(ws) for _ in range(5)]
            for prev, ev in itertools.pairwise(events):
                assert ev["pu"] == prev["u"] and ev["U"] != ev["pu"] + 1
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(
                    sim.rest_url + "/depth?symbol=BTCUSDT&limit=5", timeout=5
                ).read()
            )
            assert set(json.loads(body)) == {"lastUpdateId", "E", "T", "bids", "asks"}

    run(scenario())


def test_okx_acks_snapshot_notice_and_idle_close() -> None:
    async def scenario() -> None:
        async with OkxSim(seed=1, idle_close=0.5, notice_grace=0.2) as sim:
            async with connect(sim.url + "/ws/v5/public") as ws:
                await ws.send("ping")
                assert await asyncio.wait_for(ws.recv(), 5) == "pong"
                sub = {
                    "id": "9",
                    "op": "subscribe",
                    "args": [{"channel": "books", "instId": "BTC-USDT"}],
                }
                await ws.send(json.dumps(sub))
                ack = await recv_json(ws)
                assert ack["event"] == "subscribe" and ack["id"] == "9"
                snap = await recv_json(ws)
                assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
                upd = await recv_until(ws, lambda m: m.get("action") == "update")
                assert upd["data"][0]["prevSeqId"] == snap["data"][0]["seqId"]
                assert sim.fault_info(20051) == 1
                notice = await recv_until(ws, lambda m: m.get("event") == "notice")
                assert notice["code"] == "64008"
                await asyncio.wait_for(ws.wait_closed(), 5)
            async with connect(sim.url + "/ws/v5/public") as idle:
                await asyncio.wait_for(idle.wait_closed(), 5)  # nothing subscribed: closed
            try:
                sim.fault_info(20060)
            except FaultError:
                pass
            else:
                raise AssertionError("okx has no maintenance events")

    run(scenario())


def test_bybit_acks_per_category_ten_args_and_engine_restart() -> None:
    async def scenario() -> None:
        async with (
            BybitSim(seed=1) as sim,
            connect(sim.url + "/v5/public/spot") as spot,
            connect(sim.url + "/v5/public/linear") as lin,
        ):
            args = [f"tickers.BTCUSDT{i}" for i in range(11)]
            await spot.send(json.dumps({"req_id": "a", "op": "subscribe", "args": args}))
            err = await recv_json(spot)
            assert err["success"] is False and err["req_id"] == "a"
            await spot.send('{"req_id":"b","op":"subscribe","args":["orderbook.50.BTCUSDT"]}')
            ack = await recv_json(spot)
            assert ack["ret_msg"] == "subscribe" and ack["req_id"] == "b"
            snap = await recv_json(spot)
            assert snap["type"] == "snapshot"
            await lin.send('{"op":"subscribe","args":["orderbook.50.BTCUSDT"]}')
            ack = await recv_json(lin)
            assert ack["ret_msg"] == "" and ack["req_id"] == ""
            await recv_until(lin, lambda m: m.get("type") == "delta")
            sim.fault_info(20051)
            restart = await recv_until(lin, lambda m: m.get("data", {}).get("u") == 1)
            assert restart["type"] == "snapshot"
            await wait_for(lambda: sim.statistics().connections_open == 2)

    run(scenario())
