"""Fault injection over real sockets: in-process calls and the HTTP side door."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from _simhelp import assert_silent, event, is_chan, recv_json, recv_until, run, wait_for
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsgate.sim import BitfinexSim, FaultError, Simulator


async def ticker(ws: ClientConnection) -> int:
    await ws.send(json.dumps({"event": "subscribe", "channel": "ticker", "symbol": "tBTCUSD"}))
    sub = await recv_until(ws, event("subscribed"))
    await recv_until(ws, is_chan(sub["chanId"]))  # snapshot
    chan: int = sub["chanId"]
    return chan


async def drain_until_pong(ws: ClientConnection, cid: int) -> None:
    await ws.send(json.dumps({"event": "ping", "cid": cid}))
    await recv_until(ws, lambda m: isinstance(m, dict) and m.get("cid") == cid)


def test_stall_keeps_pings_but_stops_data_until_resume() -> None:
    async def main() -> None:
        async with (
            BitfinexSim(seed=1, ticker_rate=50, heartbeat_interval=0.05) as sim,
            connect(sim.url) as ws,
        ):
            chan = await ticker(ws)
            sim.faults.stall()
            await drain_until_pong(ws, 1)  # frames already in flight are before this pong
            rtt = await asyncio.wait_for(await ws.ping(), 5)
            assert rtt >= 0.0
            await ws.send(json.dumps({"event": "ping", "cid": 2}))
            pong = await recv_json(ws)
            assert pong["event"] == "pong" and pong["cid"] == 2
            await assert_silent(ws, 0.3)  # 15 ticker periods, 6 heartbeat periods
            assert sim.faults.statistics().stalled
            sim.faults.resume()
            assert (await recv_until(ws, is_chan(chan)))[0] == chan
            assert sim.faults.statistics().counts == {"stall": 1, "resume": 1}

    run(main())


def test_stall_with_duration_ends_by_itself() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=2, ticker_rate=50) as sim, connect(sim.url) as ws:
            chan = await ticker(ws)
            sim.faults.stall(0.2)
            await drain_until_pong(ws, 1)
            msg = await recv_until(ws, is_chan(chan))
            assert msg[0] == chan and not sim.faults.statistics().stalled

    run(main())


def test_subscribe_during_stall_gets_snapshot_on_resume() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=3) as sim, connect(sim.url) as ws:
            sim.faults.stall()
            await ws.send(
                json.dumps({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"})
            )
            sub = await recv_until(ws, event("subscribed"))
            await assert_silent(ws, 0.2)
            sim.faults.resume()
            snap = await recv_until(ws, is_chan(sub["chanId"]))
            assert len(snap[1]) == 30

    run(main())


def test_latency_delays_every_frame() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=4) as sim, connect(sim.url) as ws:
            await recv_json(ws)
            sim.faults.latency(200)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await drain_until_pong(ws, 9)
            assert loop.time() - t0 >= 0.19  # lower bound only: it cannot be faster
            sim.faults.latency(0)
            await drain_until_pong(ws, 10)

    run(main())


def test_drop_aborts_connections() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=5) as sim, connect(sim.url) as a, connect(sim.url) as b:
            await recv_json(a)
            await recv_json(b)
            assert sim.faults.drop(1) == 1
            await wait_for(lambda: sim.statistics().connections_open == 1)
            closed = []
            for ws in (a, b):
                try:
                    await asyncio.wait_for(ws.recv(), 0.3)
                except ConnectionClosed as exc:
                    closed.append(exc.rcvd)
                except TimeoutError:
                    pass
            assert closed == [None]  # no close frame: an abort, not a closing handshake
            assert sim.faults.drop() == 1
            await wait_for(lambda: sim.statistics().connections_open == 0)

    run(main())


def test_info_maintenance_pauses_data_until_20061() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=6, ticker_rate=50) as sim, connect(sim.url) as ws:
            chan = await ticker(ws)
            assert sim.faults.info(20060) == 1
            info = await recv_until(ws, lambda m: isinstance(m, dict) and m.get("code") == 20060)
            assert info["event"] == "info"
            await drain_until_pong(ws, 1)
            await assert_silent(ws, 0.2)
            async with connect(sim.url) as late:
                assert (await recv_json(late))["platform"]["status"] == 0
            sim.faults.info(20061)
            await recv_until(ws, lambda m: isinstance(m, dict) and m.get("code") == 20061)
            await recv_until(ws, is_chan(chan))

    run(main())


def test_info_20051_then_close_after_grace() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=7, reconnect_grace=0.1) as sim, connect(sim.url) as ws:
            await recv_json(ws)
            sim.faults.info(20051)
            info = await recv_json(ws)
            assert info["code"] == 20051
            with pytest.raises(ConnectionClosed) as closed:
                await recv_until(ws, lambda m: False)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            with pytest.raises(FaultError):
                sim.faults.info(12345)

    run(main())


def test_reject_handshakes_429_with_retry_after_then_accept() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=8) as sim:
            sim.faults.reject_handshakes(429, count=2, retry_after=7)
            for _ in range(2):
                with pytest.raises(InvalidStatus) as rejected:
                    async with connect(sim.url):
                        pass
                assert rejected.value.response.status_code == 429
                assert rejected.value.response.headers["Retry-After"] == "7"
            async with connect(sim.url) as ws:
                assert (await recv_json(ws))["event"] == "info"
            sim.faults.reject_handshakes(503, count=1)
            with pytest.raises(InvalidStatus) as unavailable:
                async with connect(sim.url):
                    pass
            assert unavailable.value.response.status_code == 503
            stats = sim.statistics()
            assert (stats.handshakes_rejected, stats.handshakes_accepted) == (3, 1)

    run(main())


def test_malformed_frames_reach_every_connection() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=9) as sim, connect(sim.url) as a, connect(sim.url) as b:
            await recv_json(a)
            await recv_json(b)
            assert sim.faults.malformed(3) == 2
            for ws in (a, b):
                frames = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
                with pytest.raises(ValueError):
                    json.loads(frames[0])
                assert frames[1] == "not json at all"

    run(main())


def test_http_fault_and_stats_endpoints() -> None:
    async def main() -> None:
        async with Simulator(seed=10) as sim, connect(sim.bitfinex_url) as ws:
            base = sim.bitfinex.http_url
            await recv_json(ws)
            async with httpx.AsyncClient(timeout=5) as http:
                r = await http.get(f"{base}/_sim/fault", params={"kind": "channel_limit", "n": 1})
                assert r.status_code == 200 and r.json()["faults"]["channel_limit"] == 1
                bad = await http.get(f"{base}/_sim/fault", params={"kind": "explode"})
                assert bad.status_code == 400 and "unknown fault" in bad.json()["error"]
                for sym in ("tBTCUSD", "tETHUSD"):
                    req = {"event": "subscribe", "channel": "ticker", "symbol": sym}
                    await ws.send(json.dumps(req))
                err = await recv_until(ws, event("error"))
                assert err["code"] == 10305
                stats = (await http.get(f"{base}/_sim/stats")).json()
                assert stats["connections_open"] == 1
                conn = stats["connections"][0]
                assert conn["channels"] == 1 and conn["messages_received"] == 2
                assert conn["frames_sent"] >= 3
                r = await http.get(f"{base}/_sim/fault", params={"kind": "clear"})
                assert r.json()["faults"]["channel_limit"] is None
                r = await http.get(
                    f"{sim.binance.http_url}/_sim/fault",
                    params={"kind": "reject_handshakes", "status": 429, "count": 1},
                )
                assert r.json()["faults"]["reject_remaining"] == 1
            with pytest.raises(InvalidStatus):
                async with connect(sim.binance_url + "/ws"):
                    pass

    run(main())


def test_clear_forgets_standing_faults() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=11) as sim:
            f = sim.faults
            f.stall()
            f.latency(50)
            f.channel_limit(1)
            f.reject_handshakes(429, count=5)
            f.clear()
            st = f.statistics()
            assert not st.stalled and st.latency_ms == 0 and st.channel_limit is None
            assert st.reject_remaining == 0
            async with connect(sim.url) as ws:
                assert (await recv_json(ws))["event"] == "info"
            assert "Faults('bitfinex'" in repr(f)

    run(main())


def test_coalesced_writer_frames_all_payload_sizes() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=12) as sim, connect(sim.url, max_size=2**20) as ws:
            await recv_json(ws)
            conn = next(iter(sim.connections.values()))
            payloads = [b"[" + b"1," * n + b"1]" for n in (10, 100, 40_000)]
            for p in payloads:
                conn.send(p)
            got = [await asyncio.wait_for(ws.recv(decode=False), 5) for _ in payloads]
            assert got == payloads  # 7-bit, 16-bit and 64-bit length headers
            assert "BitfinexConnection(id=1" in repr(conn) and "open=1" in repr(sim)

    run(main())
