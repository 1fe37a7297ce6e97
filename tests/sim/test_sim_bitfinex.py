"""BitfinexSim over real sockets with the websockets client."""

from __future__ import annotations

import json
import re
from typing import Any

from _simhelp import event, independent_checksum, is_chan, recv_json, recv_until, run
from websockets.asyncio.client import ClientConnection, connect

from wsgate.sim import BitfinexSim

SEQ, TS, CS = 65536, 32768, 131072


async def subscribe(ws: ClientConnection, **req: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"event": "subscribe", **req}))
    reply: dict[str, Any] = await recv_until(
        ws, lambda m: isinstance(m, dict) and m.get("event") in ("subscribed", "error")
    )
    return reply


def test_info_on_connect_and_app_ping() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=1) as sim, connect(sim.url) as ws:
            info = await recv_json(ws)
            assert info["event"] == "info" and info["version"] == 2
            assert info["platform"] == {"status": 1} and info["serverId"]
            await ws.send(json.dumps({"event": "ping", "cid": 4242}))
            pong = await recv_until(ws, event("pong"))
            assert pong["cid"] == 4242 and isinstance(pong["ts"], int)
            assert sim.url.endswith("/ws/2")

    run(main())


def test_subscribe_echo_unique_chan_ids_and_unsubscribe() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=2) as sim, connect(sim.url) as ws:
            book = await subscribe(
                ws, channel="book", symbol="tBTCUSD", prec="P1", freq="F0", len="100", subId="b1"
            )
            assert book["event"] == "subscribed"
            assert {k: book[k] for k in ("channel", "symbol", "prec", "freq", "len", "subId")} == {
                "channel": "book",
                "symbol": "tBTCUSD",
                "prec": "P1",
                "freq": "F0",
                "len": "100",
                "subId": "b1",
            }
            ticker = await subscribe(ws, channel="ticker", pair="ETHUSD")
            assert ticker["pair"] == "ETHUSD" and ticker["symbol"] == "tETHUSD"
            candles = await subscribe(ws, channel="candles", key="trade:1m:tBTCUSD")
            assert candles["key"] == "trade:1m:tBTCUSD"
            status = await subscribe(ws, channel="status", key="deriv:tBTCF0:USTF0")
            ids = [book["chanId"], ticker["chanId"], candles["chanId"], status["chanId"]]
            assert len(set(ids)) == 4 and 0 not in ids

            dup = await subscribe(ws, channel="book", symbol="tBTCUSD", prec="P1", len=100)
            assert dup["event"] == "error" and dup["code"] == 10301
            unknown = await subscribe(ws, channel="nope", symbol="tBTCUSD")
            assert unknown["code"] == 10302
            bad_symbol = await subscribe(ws, channel="ticker", symbol="tXXXUSD")
            assert bad_symbol["code"] == 10300
            bad_len = await subscribe(ws, channel="book", symbol="tBTCUSD", len="7")
            assert bad_len["code"] == 10300

            await ws.send(json.dumps({"event": "unsubscribe", "chanId": ticker["chanId"]}))
            gone = await recv_until(ws, event("unsubscribed"))
            assert gone == {"event": "unsubscribed", "status": "OK", "chanId": ticker["chanId"]}
            assert sim.statistics().connections[0].channels == 3

    run(main())


def test_channel_limit_default_and_fault() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=3, channel_limit=2) as sim, connect(sim.url) as ws:
            assert (await subscribe(ws, channel="ticker", symbol="tBTCUSD"))[
                "event"
            ] == "subscribed"
            assert (await subscribe(ws, channel="ticker", symbol="tETHUSD"))[
                "event"
            ] == "subscribed"
            full = await subscribe(ws, channel="trades", symbol="tBTCUSD")
            assert full["event"] == "error" and full["code"] == 10305
            sim.faults.channel_limit(3)
            assert (await subscribe(ws, channel="trades", symbol="tBTCUSD"))[
                "event"
            ] == "subscribed"
            again = await subscribe(ws, channel="trades", symbol="tETHUSD")
            assert again["code"] == 10305
            assert sim.faults.statistics().counts["channel_limit"] == 1

    run(main())


def test_sequence_numbers_are_per_connection_and_shared_across_channels() -> None:
    async def main() -> None:
        async with (
            BitfinexSim(seed=4, ticker_rate=40, trades_rate=40, heartbeat_interval=0.05) as sim,
            connect(sim.url) as ws,
        ):
            await ws.send(json.dumps({"event": "conf", "flags": SEQ}))
            conf = await recv_until(ws, event("conf"))
            assert conf == {"event": "conf", "status": "OK", "flags": SEQ}
            await subscribe(ws, channel="ticker", symbol="tBTCUSD")
            await subscribe(ws, channel="trades", symbol="tETHUSD")
            await subscribe(ws, channel="status", key="deriv:tBTCF0:USTF0")
            seqs: list[int] = []
            chans: set[int] = set()
            while len(seqs) < 60:
                msg = await recv_json(ws)
                if isinstance(msg, list):
                    seqs.append(msg[-1])
                    chans.add(msg[0])
            assert seqs == list(range(seqs[0], seqs[0] + 60))
            assert len(chans) >= 2

    run(main())


def test_timestamp_flag_appends_ms() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=5, ticker_rate=50) as sim, connect(sim.url) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": TS | SEQ}))
            await recv_until(ws, event("conf"))
            sub = await subscribe(ws, channel="ticker", symbol="tBTCUSD")
            msg = await recv_until(ws, is_chan(sub["chanId"]))
            # [chanId, data, seq, ts]
            assert len(msg) == 4 and isinstance(msg[2], int) and msg[3] > 1_600_000_000_000

    run(main())


def _apply(book: dict[Any, list[Any]], entry: list[Any]) -> None:
    if entry[1] == 0:  # P: count 0; R0: price 0
        book.pop(entry[0], None)
    else:
        book[entry[0]] = entry


def _sides(book: dict[Any, list[Any]], raw: bool) -> tuple[list[Any], list[Any]]:
    price = 1 if raw else 0
    bids = sorted((e for e in book.values() if e[2] > 0), key=lambda e: (-e[price], e[0]))
    asks = sorted((e for e in book.values() if e[2] < 0), key=lambda e: (e[price], e[0]))
    return bids, asks


def _check_book(prec: str, length: int) -> None:
    async def main() -> None:
        async with BitfinexSim(seed=6, book_rate=100) as sim, connect(sim.url) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": CS}))
            await recv_until(ws, event("conf"))
            sub = await subscribe(ws, channel="book", symbol="tBTCUSD", prec=prec, len=length)
            chan = sub["chanId"]
            raw = prec == "R0"
            snap = await recv_until(ws, is_chan(chan))
            assert isinstance(snap[1], list) and isinstance(snap[1][0], list)
            book: dict[Any, list[Any]] = {}
            for entry in snap[1]:
                book[entry[0]] = entry
            checked = 0
            while checked < 40:
                msg = await recv_until(ws, is_chan(chan))
                if msg[1] == "cs":
                    bids, asks = _sides(book, raw)
                    assert len(bids) <= length and len(asks) <= length
                    assert independent_checksum(bids, asks) == msg[2], f"checksum #{checked}"
                    if bids and asks and not raw:
                        assert bids[0][0] < asks[0][0]  # never crossed
                    checked += 1
                else:
                    _apply(book, msg[1])
            if raw:
                assert all(isinstance(e[0], int) and e[0] > 10**9 for e in book.values())
            elif prec == "P1":
                assert all(e[0] % 10 == 0 for e in book.values())  # 4 significant digits

    run(main())


def test_book_p0_checksums_match_independent_computation() -> None:
    _check_book("P0", 25)


def test_book_p1_rounds_prices_and_len_1() -> None:
    _check_book("P1", 25)
    _check_book("P0", 1)


def test_book_r0_raw_orders_with_ids() -> None:
    _check_book("R0", 100)


def test_numbers_written_as_exchange_does() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=7) as sim, connect(sim.url) as ws:
            await recv_json(ws)
            await ws.send(
                json.dumps({"event": "subscribe", "channel": "book", "symbol": "tBTCUSD"})
            )
            texts: list[str] = []
            while len(texts) < 2:
                texts.append(str(await ws.recv()))
            snapshot = texts[1]
            assert not re.search(r"\d\.0[,\]]", snapshot), snapshot[:200]
            prices = [e[0] for e in json.loads(snapshot)[1]]
            assert all(isinstance(p, int) for p in prices)  # P0 BTC prices are whole dollars

    run(main())


def test_trades_snapshot_then_te_tu_with_increasing_ids() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=8, trades_rate=50) as sim, connect(sim.url) as ws:
            sub = await subscribe(ws, channel="trades", symbol="tBTCUSD")
            snap = await recv_until(ws, is_chan(sub["chanId"]))
            trades = snap[1]
            assert len(trades) == 30
            ids = [t[0] for t in trades]
            assert ids == sorted(ids, reverse=True)  # newest first
            te = await recv_until(ws, is_chan(sub["chanId"], "te"))
            tu = await recv_until(ws, is_chan(sub["chanId"], "tu"))
            assert te[2] == tu[2] and te[2][0] > ids[0]
            te2 = await recv_until(ws, is_chan(sub["chanId"], "te"))
            assert te2[2][0] == te[2][0] + 1

    run(main())


def test_candles_and_status_shapes() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=9, trades_rate=50) as sim, connect(sim.url) as ws:
            c = await subscribe(ws, channel="candles", key="trade:1m:tETHUSD")
            snap = await recv_until(ws, is_chan(c["chanId"]))
            assert snap[1] and all(len(candle) == 6 for candle in snap[1])
            upd = await recv_until(ws, lambda m: is_chan(c["chanId"])(m) and len(m[1]) == 6)
            mts, o, close, high, low, vol = upd[1]
            assert low <= min(o, close) <= max(o, close) <= high and vol > 0
            assert mts % 60_000 == 0
            s = await subscribe(ws, channel="status", key="deriv:tBTCF0:USTF0")
            status = await recv_until(ws, is_chan(s["chanId"]))
            assert len(status[1]) >= 18 and status[1][0] > 1_600_000_000_000
            bad = await subscribe(ws, channel="candles", key="trade:7q:tBTCUSD")
            assert bad["code"] == 10300

    run(main())


def test_heartbeat_on_quiet_channel() -> None:
    async def main() -> None:
        async with (
            BitfinexSim(seed=10, trades_rate=0.01, heartbeat_interval=0.1) as sim,
            connect(sim.url) as ws,
        ):
            await ws.send(json.dumps({"event": "conf", "flags": SEQ}))
            sub = await subscribe(ws, channel="trades", symbol="tBTCUSD")
            hb = await recv_until(ws, is_chan(sub["chanId"], "hb"))
            assert len(hb) == 3 and isinstance(hb[2], int)  # the seq rides on heartbeats too

    run(main())


def test_auth_ok_wallet_snapshot_and_new_order() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=11, api_key="k1") as sim, connect(sim.url) as ws:
            await ws.send(json.dumps([0, "on", None, {"type": "LIMIT"}]))
            refused = await recv_until(ws, event("error"))
            assert refused["code"] == 10100
            auth = {"event": "auth", "apiKey": "k1", "authSig": "x", "authNonce": 1}
            await ws.send(json.dumps({**auth, "authPayload": "AUTH1"}))
            ok = await recv_until(ws, event("auth"))
            assert ok["status"] == "OK" and ok["userId"] == 1
            ws_snap = await recv_until(ws, is_chan(0, "ws"))
            assert ws_snap == [0, "ws", []]
            order = {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.5"}
            await ws.send(json.dumps([0, "on", None, {**order, "price": "30000", "cid": 77}]))
            note = await recv_until(ws, is_chan(0, "n"))
            assert note[2][1] == "on-req" and note[2][6] == "SUCCESS"
            placed = await recv_until(ws, is_chan(0, "on"))
            o = placed[2]
            assert len(o) == 32 and o[2] == 77 and o[3] == "tBTCUSD"
            assert o[6] == 0.5 and o[16] == 30000 and isinstance(o[16], int) and o[13] == "ACTIVE"
            await ws.send(json.dumps([0, "oc", None, {"id": o[0]}]))
            cancelled = await recv_until(ws, is_chan(0, "oc"))
            assert cancelled[2][0] == o[0] and cancelled[2][13] == "CANCELED"

    run(main())


def test_auth_failed_with_wrong_key() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=12, api_key="right") as sim, connect(sim.url) as ws:
            await ws.send(json.dumps({"event": "auth", "apiKey": "wrong"}))
            failed = await recv_until(ws, event("auth"))
            assert failed["status"] == "FAILED" and failed["code"] == 10100

    run(main())


def test_account_messages_carry_public_and_auth_seq() -> None:
    async def main() -> None:
        async with BitfinexSim(seed=13) as sim, connect(sim.url) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": SEQ}))
            await ws.send(json.dumps({"event": "auth", "apiKey": "sim-key"}))
            snaps = [await recv_until(ws, is_chan(0)) for _ in range(3)]
            assert [m[-1] for m in snaps] == [1, 2, 3]  # auth seq
            assert [m[-2] for m in snaps] == [1, 2, 3]  # public seq
            order = {"type": "EXCHANGE MARKET", "symbol": "tETHUSD", "amount": "-1"}
            await ws.send(json.dumps([0, "on", None, order]))
            note = await recv_until(ws, is_chan(0, "n"))
            on = await recv_until(ws, is_chan(0, "on"))
            assert note[-2:] == [4, 3]  # notifications do not advance the auth seq
            assert on[-2:] == [5, 4]

    run(main())


def test_market_is_deterministic_per_seed() -> None:
    a, b, c = BitfinexSim(seed=99), BitfinexSim(seed=99), BitfinexSim(seed=100)
    for _ in range(50):
        for sim in (a, b, c):
            sim.markets["tBTCUSD"].step()
    assert a.markets["tBTCUSD"].book == b.markets["tBTCUSD"].book
    assert a.markets["tBTCUSD"].book != c.markets["tBTCUSD"].book
    assert a._server_id == b._server_id
