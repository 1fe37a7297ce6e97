"""OKX v5 WebSocket simulator: ``/ws/v5/public`` (tickers, trades, books, books5, bbo-tbt),
``/ws/v5/private`` (login, an ``orders`` channel that stays quiet), text ping/pong, the 30 s
idle close, and the ``notice`` 64008 service upgrade.

``books``: a ``snapshot`` (``prevSeqId`` -1) on subscribe, then one ``update`` per book step
that changed a level, ``prevSeqId`` = the previous push's ``seqId``; the checksum is 0, as on
production since its deprecation. Numbers are strings, as OKX writes them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from wsgate.sim.faults import FaultError
from wsgate.sim.market import SymbolMarket
from wsgate.sim.server import SimConnection, SimServer, dumps

__all__ = ["OkxConfig", "OkxSim"]

_PUBLIC = "/ws/v5/public"
_PRIVATE = ("/ws/v5/private", "/ws/v5/business")
_CHANNELS = ("tickers", "trades", "books", "books5", "bbo-tbt")
_UPGRADE_MSG = "The connection will soon be closed for a service upgrade. Please reconnect."


def _ms() -> str:
    return str(int(time.time() * 1000))


@dataclass(frozen=True)
class OkxConfig:
    symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")
    book_rate: float = 10.0  # book steps per second per instrument
    trades_rate: float = 5.0
    idle_close: float = 30.0  # no subscription and no data for this long: closed
    notice_grace: float = 30.0  # 64008 precedes the close by this much


class OkxConnection(SimConnection):
    def __init__(self, sim: OkxSim, cid: int, ws: ServerConnection, path: str) -> None:
        super().__init__(sim, cid, ws, path)
        self.channels: dict[str, None] = {}  # "channel:instId"
        self.private = path.split("?")[0] in _PRIVATE
        self.logged_in = False
        self.last_push = time.monotonic()
        self.conn_id = format(sim.rng.getrandbits(32), "08x")

    def channel_count(self) -> int:
        return len(self.channels)

    def push(self, data: bytes) -> None:
        self.last_push = time.monotonic()
        self.send(data)


class OkxSim(SimServer):
    name = "okx"

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        symbols: Sequence[str] = OkxConfig.symbols,
        book_rate: float = OkxConfig.book_rate,
        trades_rate: float = OkxConfig.trades_rate,
        idle_close: float = OkxConfig.idle_close,
        notice_grace: float = OkxConfig.notice_grace,
        json_style: str = "compact",
    ) -> None:
        super().__init__(host=host, port=port, time_scale=time_scale, json_style=json_style)
        self.config = OkxConfig(tuple(symbols), book_rate, trades_rate, idle_close, notice_grace)
        self.rng = random.Random(seed)
        self.markets = {
            s: SymbolMarket(s.replace("-", ""), random.Random(self.rng.getrandbits(64)))
            for s in symbols
        }
        for market in self.markets.values():
            market.seed_tape(int(_ms()))
        self.subscribers: dict[str, dict[int, OkxConnection]] = {}
        self._seq = {s: m.update_id for s, m in self.markets.items()}
        self._top: dict[str, tuple[int, int, int, int]] = {}

    # -- jobs -------------------------------------------------------------------------------------

    def _serve_options(self) -> dict[str, Any]:
        return {"ping_interval": None}  # OKX keeps connections alive by text ping only

    def _install_jobs(self) -> None:
        k = self.time_scale
        self.add_job(k / self.config.book_rate, self._book_job, "book")
        self.add_job(k / self.config.trades_rate, self._trade_job, "trades")
        self.add_job(k * 1.0, self._idle_job, "idle close")

    def _arg(self, channel: str, inst: str) -> str:
        return f'{{"channel":"{channel}","instId":"{inst}"}}'

    def _emit(self, channel: str, inst: str, body: str) -> None:
        subs = self.subscribers.get(f"{channel}:{inst}")
        if not subs:
            return
        frame = ('{"arg":' + self._arg(channel, inst) + "," + body + "}").encode()
        for conn in list(subs.values()):
            conn.push(frame)

    def _level(self, m: SymbolMarket, price: int) -> list[str]:
        level = m.book.get(price)
        count, amount = (level[0], level[1]) if level else (0, 0)
        return [m.price_str(price), m.amount_str(amount), "0", str(count)]

    def _book_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        for inst, m in self.markets.items():
            changed = m.step()
            if not changed:
                continue
            prev, self._seq[inst] = self._seq[inst], m.update_id
            ts = _ms()
            if self.subscribers.get(f"books:{inst}"):
                bids = [
                    self._level(m, p) for p, bid in sorted(changed.items(), reverse=True) if bid
                ]
                asks = [self._level(m, p) for p, bid in sorted(changed.items()) if not bid]
                push = {
                    "asks": asks,
                    "bids": bids,
                    "ts": ts,
                    "checksum": 0,
                    "prevSeqId": prev,
                    "seqId": m.update_id,
                }
                self._emit("books", inst, '"action":"update","data":[' + dumps(push) + "]")
            if self.subscribers.get(f"books5:{inst}"):
                self._emit("books5", inst, '"data":[' + dumps(self._top_n(inst, m, 5)) + "]")
            bid, ask = m.best_bid() or 0, m.best_ask() or 0
            top = (bid, m.level_amount(bid), ask, m.level_amount(ask))
            if self._top.get(inst) != top:
                self._top[inst] = top
                if self.subscribers.get(f"bbo-tbt:{inst}"):
                    self._emit("bbo-tbt", inst, '"data":[' + dumps(self._top_n(inst, m, 1)) + "]")
                if self.subscribers.get(f"tickers:{inst}"):
                    self._emit("tickers", inst, '"data":[' + dumps(self._ticker(inst, m)) + "]")

    def _top_n(self, inst: str, m: SymbolMarket, n: int) -> dict[str, object]:
        bids, asks = m.sides()
        return {
            "asks": [self._level(m, p) for p, _, _ in asks[:n]],
            "bids": [self._level(m, p) for p, _, _ in bids[:n]],
            "instId": inst,
            "ts": _ms(),
            "seqId": m.update_id,
        }

    def _snapshot(self, inst: str) -> bytes:
        m = self.markets[inst]
        bids, asks = m.sides()
        push = {
            "asks": [self._level(m, p) for p, _, _ in asks[:400]],
            "bids": [self._level(m, p) for p, _, _ in bids[:400]],
            "ts": _ms(),
            "checksum": 0,
            "prevSeqId": -1,
            "seqId": self._seq[inst],
        }
        body = '"action":"snapshot","data":[' + dumps(push) + "]"
        return ('{"arg":' + self._arg("books", inst) + "," + body + "}").encode()

    def _ticker(self, inst: str, m: SymbolMarket) -> dict[str, object]:
        st = m.stats()
        bid, ask = m.best_bid() or 0, m.best_ask() or 0
        return {
            "instType": "SPOT",
            "instId": inst,
            "last": m.price_str(st.last_t),
            "lastSz": m.amount_str(m.tape[-1].amount_t) if m.tape else "0",
            "askPx": m.price_str(ask),
            "askSz": m.amount_str(m.level_amount(ask)),
            "bidPx": m.price_str(bid),
            "bidSz": m.amount_str(m.level_amount(bid)),
            "open24h": m.price_str(st.open_t),
            "high24h": m.price_str(st.high_t),
            "low24h": m.price_str(st.low_t),
            "sodUtc0": m.price_str(st.open_t),
            "sodUtc8": m.price_str(st.open_t),
            "volCcy24h": f"{st.quote_volume:.8f}",
            "vol24h": m.amount_str(st.volume_t),
            "ts": _ms(),
        }

    def _trade_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        for inst, m in self.markets.items():
            t = m.trade(int(_ms()))
            if self.subscribers.get(f"trades:{inst}"):
                trade = {
                    "instId": inst,
                    "tradeId": str(t.id),
                    "px": m.price_str(t.price_t),
                    "sz": m.amount_str(t.amount_t),
                    "side": "buy" if t.amount_t > 0 else "sell",
                    "ts": str(t.mts),
                    "count": "1",
                }
                self._emit("trades", inst, '"data":[' + dumps(trade) + "]")

    def _idle_job(self, now: float) -> None:
        limit = self.config.idle_close * self.time_scale
        t = time.monotonic()
        for conn in list(self.connections.values()):
            assert isinstance(conn, OkxConnection)
            if t - conn.last_push > limit:
                self.spawn(conn.ws.close(4004, "No data received in 30s."))

    # -- connections ------------------------------------------------------------------------------

    def _make_connection(self, cid: int, ws: ServerConnection, path: str) -> SimConnection:
        return OkxConnection(self, cid, ws, path)

    def _accepts_path(self, path: str, query: Mapping[str, str]) -> bool:
        return path in (_PUBLIC, *_PRIVATE)

    def _on_close(self, conn: SimConnection) -> None:
        assert isinstance(conn, OkxConnection)
        for name in conn.channels:
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.pop(conn.id, None)
                if not subs:
                    del self.subscribers[name]
        conn.channels.clear()

    def _on_message(self, conn: SimConnection, message: str | bytes) -> bool:
        assert isinstance(conn, OkxConnection)
        if message == "ping":
            conn.last_push = time.monotonic()
            conn._write(b"pong")  # not JSON: never restyled
            return True
        try:
            req = json.loads(message)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            conn.push(self._error(conn, None, "60012", f"Invalid request: {str(message)[:100]}"))
            return True
        req_id = req.get("id")
        op = req.get("op")
        if op == "login":
            args = req.get("args")
            first = args[0] if isinstance(args, list) and args else None
            if isinstance(first, dict) and first.get("apiKey"):
                conn.logged_in = True
                conn.push(self._event(conn, req_id, {"event": "login", "code": "0", "msg": ""}))
            else:
                conn.push(self._error(conn, req_id, "60009", "Login failed."))
            return True
        if op not in ("subscribe", "unsubscribe") or not isinstance(req.get("args"), list):
            conn.push(self._error(conn, req_id, "60012", f"Invalid request: {dumps(req)[:100]}"))
            return True
        for arg in req["args"]:
            self._sub(conn, op, arg, req_id)
        return True

    def _sub(self, conn: OkxConnection, op: str, arg: Any, req_id: object) -> None:
        channel = arg.get("channel") if isinstance(arg, dict) else None
        inst = arg.get("instId") if isinstance(arg, dict) else None
        if conn.private:
            if channel != "orders" or not conn.logged_in:
                conn.push(self._error(conn, req_id, "60011", "Please log in"))
                return
            conn.push(self._event(conn, req_id, {"event": op, "arg": arg}))
            count = {"event": "channel-conn-count", "channel": "orders", "connCount": "1"}
            conn.push(self._event(conn, None, count))
            return
        if channel not in _CHANNELS or inst not in self.markets:
            msg = f"Wrong URL or channel:{channel},instId:{inst} doesn't exist."
            conn.push(self._error(conn, req_id, "60018", msg))
            return
        name = f"{channel}:{inst}"
        limit = self.faults.max_channels
        if op == "subscribe" and limit is not None and len(conn.channels) >= limit:
            conn.push(self._error(conn, req_id, "60012", f"Invalid request: over {limit} channels"))
            return
        conn.push(self._event(conn, req_id, {"event": op, "arg": arg}))
        if op == "subscribe":
            conn.channels[name] = None
            self.subscribers.setdefault(name, {})[conn.id] = conn
            if channel == "books":
                conn.push(self._snapshot(inst))
        else:
            conn.channels.pop(name, None)
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.pop(conn.id, None)
                if not subs:
                    del self.subscribers[name]

    def _event(self, conn: OkxConnection, req_id: object, body: Mapping[str, object]) -> bytes:
        out: dict[str, object] = {} if req_id is None else {"id": req_id}
        out.update(body)
        out["connId"] = conn.conn_id
        return dumps(out).encode()

    def _error(self, conn: OkxConnection, req_id: object, code: str, msg: str) -> bytes:
        return self._event(conn, req_id, {"event": "error", "code": code, "msg": msg})

    # -- faults -----------------------------------------------------------------------------------

    def fault_info(self, code: int) -> int:
        """``info`` 20051 (reconnect) is OKX's ``notice`` 64008: a close ~30 s later."""
        if code != 20051:
            raise FaultError("okx has no maintenance events; info code=20051 sends notice 64008")
        return self._notice()

    def fault_server_shutdown(self) -> int:
        return self._notice()

    def _notice(self) -> int:
        conns = list(self.connections.values())
        for conn in conns:
            assert isinstance(conn, OkxConnection)
            body = {"event": "notice", "code": "64008", "msg": _UPGRADE_MSG}
            conn.push(self._event(conn, None, body))
        self.close_all_later(self.config.notice_grace * self.time_scale, 1012, "service upgrade")
        return len(conns)
