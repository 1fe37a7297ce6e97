"""Bybit v5 public WebSocket simulator: ``/v5/public/spot`` and ``/v5/public/linear``
(``tickers``, ``publicTrade``, ``orderbook.{1,50,200,1000}``), ``/v5/private`` (auth), JSON
ping/pong and acks in each category's own shape, spot's 10 args per request.

Books: a ``snapshot`` on subscribe, then one ``delta`` per book step that changed a level
inside the depth, ``u`` advancing by one per delta of that topic; depth 1 sends snapshots
only (re-sent every 3 s unchanged). The ``info`` fault with code 20051 (and
``server_shutdown``) emulates an engine restart: every book topic restarts at ``u = 1`` with
a fresh snapshot, Bybit's only in-band signal of it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from wsgate.sim.faults import FaultError
from wsgate.sim.market import SymbolMarket
from wsgate.sim.server import SimConnection, SimServer, dumps

__all__ = ["BybitConfig", "BybitSim"]

_CATEGORIES = ("spot", "linear")
_DEPTHS = (1, 50, 200, 1000)
_MAX_ARGS = {"spot": 10, "linear": 10**6}


def _ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class BybitConfig:
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    book_rate: float = 10.0
    trades_rate: float = 5.0
    idle_close: float = 600.0  # no ping and no data for 10 minutes


class BybitConnection(SimConnection):
    def __init__(self, sim: BybitSim, cid: int, ws: ServerConnection, path: str) -> None:
        super().__init__(sim, cid, ws, path)
        base = path.split("?")[0]
        self.category = base.rsplit("/", 1)[-1] if base.startswith("/v5/public/") else "private"
        self.topics: dict[str, None] = {}
        self.conn_id = str(uuid.UUID(int=sim.rng.getrandbits(128)))
        self.last_seen = time.monotonic()

    def channel_count(self) -> int:
        return len(self.topics)


class _Book:
    """One orderbook topic of one category: its own ``u`` counter."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.u = 0
        self.last_full = 0.0


class BybitSim(SimServer):
    name = "bybit"

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        symbols: Sequence[str] = BybitConfig.symbols,
        book_rate: float = BybitConfig.book_rate,
        trades_rate: float = BybitConfig.trades_rate,
        idle_close: float = BybitConfig.idle_close,
        json_style: str = "compact",
    ) -> None:
        super().__init__(host=host, port=port, time_scale=time_scale, json_style=json_style)
        self.config = BybitConfig(tuple(symbols), book_rate, trades_rate, idle_close)
        self.rng = random.Random(seed)
        self.markets = {
            (c, s): SymbolMarket(s, random.Random(self.rng.getrandbits(64)))
            for c in _CATEGORIES
            for s in symbols
        }
        for m in self.markets.values():
            m.seed_tape(_ms())
        self.subscribers: dict[tuple[str, str], dict[int, BybitConnection]] = {}
        self.books: dict[tuple[str, str], _Book] = {}
        self._ticker_sent: dict[tuple[str, str], dict[str, str]] = {}
        self._seq = 10**9

    # -- jobs -------------------------------------------------------------------------------------

    def _serve_options(self) -> dict[str, Any]:
        return {"ping_interval": None}

    def _install_jobs(self) -> None:
        k = self.time_scale
        self.add_job(k / self.config.book_rate, self._book_job, "book")
        self.add_job(k / self.config.trades_rate, self._trade_job, "trades")
        self.add_job(k * 1.0, self._idle_job, "idle close")

    def _emit(self, category: str, topic: str, frame: dict[str, object]) -> None:
        subs = self.subscribers.get((category, topic))
        if not subs:
            return
        data = dumps(frame).encode()
        for conn in list(subs.values()):
            conn.send(data)

    def _levels(self, m: SymbolMarket, prices: list[int]) -> list[list[str]]:
        return [[m.price_str(p), m.amount_str(m.level_amount(p))] for p in prices]

    def _book_frame(self, category: str, topic: str, m: SymbolMarket, kind: str) -> dict[str, Any]:
        book = self.books[(category, topic)]
        book.u += 1
        self._seq += 1
        bids, asks = m.sides()
        n = book.depth
        data = {
            "s": m.symbol,
            "b": [[m.price_str(p), m.amount_str(a)] for p, _, a in bids[:n]],
            "a": [[m.price_str(p), m.amount_str(a)] for p, _, a in asks[:n]],
            "u": book.u,
            "seq": self._seq,
        }
        now = _ms()
        return {"topic": topic, "type": kind, "ts": now, "data": data, "cts": now}

    def _book_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        t = time.monotonic()
        for (category, sym), m in self.markets.items():
            changed = m.step()
            for depth in _DEPTHS:
                topic = f"orderbook.{depth}.{sym}"
                if not self.subscribers.get((category, topic)):
                    continue
                book = self.books[(category, topic)]
                if depth == 1:
                    if changed or t - book.last_full >= 3.0 * self.time_scale:
                        book.last_full = t
                        self._emit(
                            category, topic, self._book_frame(category, topic, m, "snapshot")
                        )
                    continue
                if not changed:
                    continue
                bids, asks = m.sides()
                inside = {p for p, _, _ in bids[:depth]} | {p for p, _, _ in asks[:depth]}
                moved = [p for p in changed if p in inside or m.level_amount(p) == 0]
                if not moved:
                    continue
                book.u += 1
                self._seq += 1
                stamp = _ms()
                data = {
                    "s": sym,
                    "b": self._levels(m, sorted((p for p in moved if changed[p]), reverse=True)),
                    "a": self._levels(m, sorted(p for p in moved if not changed[p])),
                    "u": book.u,
                    "seq": self._seq,
                }
                frame = {"topic": topic, "type": "delta", "ts": stamp, "data": data, "cts": stamp}
                self._emit(category, topic, frame)
            if changed:
                self._tickers(category, sym, m)

    def _ticker_data(self, category: str, sym: str, m: SymbolMarket) -> dict[str, str]:
        st = m.stats()
        bid, ask = m.best_bid() or 0, m.best_ask() or 0
        linear: dict[str, str] = {}
        if category == "linear":  # what tells clients' parsers a perpetual from a spot pair
            linear = {
                "markPrice": m.price_str(m.mid_t),
                "indexPrice": m.price_str(m.mid_t),
                "fundingRate": "0.0001",
                "nextFundingTime": str(_ms() // 28_800_000 * 28_800_000 + 28_800_000),
                "openInterest": "1000",
                "openInterestValue": f"{1000 * m.mid_t / m.price_scale:.2f}",
            }
        else:
            linear = {"usdIndexPrice": m.price_str(m.mid_t)}
        return {
            **linear,
            "symbol": sym,
            "lastPrice": m.price_str(st.last_t),
            "highPrice24h": m.price_str(st.high_t),
            "lowPrice24h": m.price_str(st.low_t),
            "prevPrice24h": m.price_str(st.open_t),
            "volume24h": m.amount_str(st.volume_t),
            "turnover24h": f"{st.quote_volume:.4f}",
            "price24hPcnt": f"{(st.last_t - st.open_t) / max(st.open_t, 1):.4f}",
            "bid1Price": m.price_str(bid),
            "bid1Size": m.amount_str(m.level_amount(bid)),
            "ask1Price": m.price_str(ask),
            "ask1Size": m.amount_str(m.level_amount(ask)),
        }

    def _tickers(self, category: str, sym: str, m: SymbolMarket) -> None:
        topic = f"tickers.{sym}"
        if not self.subscribers.get((category, topic)):
            return
        data = self._ticker_data(category, sym, m)
        self._seq += 1
        if category == "spot":
            frame = {"topic": topic, "ts": _ms(), "type": "snapshot", "cs": self._seq, "data": data}
            self._emit(category, topic, frame)
            return
        sent = self._ticker_sent.get((category, sym))
        delta = {k: v for k, v in data.items() if sent is None or sent.get(k) != v}
        self._ticker_sent[(category, sym)] = data
        delta["symbol"] = sym
        kind = "snapshot" if sent is None else "delta"
        frame = {"topic": topic, "type": kind, "data": delta, "cs": self._seq, "ts": _ms()}
        self._emit(category, topic, frame)

    def _trade_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        for (category, sym), m in self.markets.items():
            t = m.trade(_ms())
            topic = f"publicTrade.{sym}"
            if not self.subscribers.get((category, topic)):
                continue
            self._seq += 1
            trade_id = str(t.id) if category == "spot" else str(uuid.UUID(int=t.id))
            trade = {
                "i": trade_id,
                "T": t.mts,
                "p": m.price_str(t.price_t),
                "v": m.amount_str(t.amount_t),
                "S": "Buy" if t.amount_t > 0 else "Sell",
                "seq": self._seq,
                "s": sym,
                "BT": False,
                "RPI": False,
            }
            frame = {"id": f"{topic}-{t.id}", "topic": topic, "ts": _ms(), "type": "snapshot"}
            frame["data"] = [trade]
            self._emit(category, topic, frame)

    def _idle_job(self, now: float) -> None:
        limit = self.config.idle_close * self.time_scale
        t = time.monotonic()
        for conn in list(self.connections.values()):
            assert isinstance(conn, BybitConnection)
            if t - conn.last_seen > limit and not conn.topics:
                self.spawn(conn.ws.close(1000, "idle"))

    # -- connections ------------------------------------------------------------------------------

    def _make_connection(self, cid: int, ws: ServerConnection, path: str) -> SimConnection:
        return BybitConnection(self, cid, ws, path)

    def _accepts_path(self, path: str, query: Mapping[str, str]) -> bool:
        return path in ("/v5/private", *(f"/v5/public/{c}" for c in _CATEGORIES))

    def _on_close(self, conn: SimConnection) -> None:
        assert isinstance(conn, BybitConnection)
        for topic in conn.topics:
            subs = self.subscribers.get((conn.category, topic))
            if subs is not None:
                subs.pop(conn.id, None)
                if not subs:
                    del self.subscribers[(conn.category, topic)]
        conn.topics.clear()

    def _ack(self, conn: BybitConnection, op: str, req_id: object, ok: bool, msg: str) -> None:
        body: dict[str, object] = {"success": ok, "ret_msg": msg, "conn_id": conn.conn_id}
        if req_id is not None or conn.category == "linear":
            body["req_id"] = "" if req_id is None else req_id
        body["op"] = op
        conn.send(dumps(body).encode())

    def _on_message(self, conn: SimConnection, message: str | bytes) -> bool:
        assert isinstance(conn, BybitConnection)
        conn.last_seen = time.monotonic()
        try:
            req = json.loads(message)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            self._ack(conn, "", None, False, "error:request not json")
            return True
        op, req_id = req.get("op"), req.get("req_id")
        if op == "ping":
            if conn.category == "private":
                body = {
                    "req_id": req_id,
                    "op": "pong",
                    "args": [str(_ms())],
                    "conn_id": conn.conn_id,
                }
                conn.send(dumps(body).encode())
            else:
                self._ack(conn, "ping", req_id, True, "pong")
            return True
        if op == "auth":
            args = req.get("args")
            ok = isinstance(args, list) and len(args) == 3 and bool(args[0])
            self._ack(conn, "auth", req_id, ok, "" if ok else "error:signature verification failed")
            return True
        args = req.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            self._ack(conn, str(op or ""), req_id, False, f"error:unsupported op {op}")
            return True
        if conn.category == "private":
            self._ack(conn, op, req_id, True, "")
            return True
        if len(args) > _MAX_ARGS[conn.category]:
            self._ack(conn, op, req_id, False, f"error:args size >{_MAX_ARGS[conn.category]}")
            return True
        for topic in args:
            if not self._valid(conn.category, topic):
                self._ack(conn, op, req_id, False, f"error:handler not found,topic:{topic}")
                return True
        limit = self.faults.max_channels
        if op == "subscribe" and limit is not None and len({*conn.topics, *args}) > limit:
            self._ack(conn, op, req_id, False, f"error:topics over the limit of {limit}")
            return True
        ok_msg = "subscribe" if conn.category == "spot" else ""
        self._ack(conn, op, req_id, True, ok_msg if op == "subscribe" else "")
        for topic in args:
            key = (conn.category, topic)
            if op == "unsubscribe":
                conn.topics.pop(topic, None)
                subs = self.subscribers.get(key)
                if subs is not None:
                    subs.pop(conn.id, None)
                    if not subs:
                        del self.subscribers[key]
                continue
            conn.topics[topic] = None
            self.subscribers.setdefault(key, {})[conn.id] = conn
            self._first(conn, topic)
        return True

    def _valid(self, category: str, topic: object) -> bool:
        if not isinstance(topic, str):
            return False
        parts = topic.split(".")
        if len(parts) == 2 and parts[0] in ("tickers", "publicTrade"):
            return (category, parts[1]) in self.markets
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1] in {str(d) for d in _DEPTHS}:
            return (category, parts[2]) in self.markets
        return False

    def _first(self, conn: BybitConnection, topic: str) -> None:
        """What a new subscriber gets at once: a book snapshot, the full linear ticker."""
        parts = topic.split(".")
        if parts[0] == "orderbook":
            key = (conn.category, topic)
            self.books.setdefault(key, _Book(int(parts[1])))
            m = self.markets[(conn.category, parts[2])]
            conn.send(dumps(self._book_frame(conn.category, topic, m, "snapshot")).encode())
        elif parts[0] == "tickers" and conn.category == "linear":
            m = self.markets[(conn.category, parts[1])]
            data = self._ticker_data(conn.category, parts[1], m)
            frame = {"topic": topic, "type": "snapshot", "data": data, "cs": 1, "ts": _ms()}
            conn.send(dumps(frame).encode())

    # -- faults -----------------------------------------------------------------------------------

    def fault_info(self, code: int) -> int:
        if code != 20051:
            raise FaultError("bybit: info code=20051 emulates an engine restart (books at u=1)")
        return self._restart()

    def fault_server_shutdown(self) -> int:
        return self._restart()

    def _restart(self) -> int:
        """Every book topic restarts: a snapshot with ``u = 1`` to all its subscribers."""
        sent = 0
        for (category, topic), book in self.books.items():
            book.u = 0
            if self.subscribers.get((category, topic)):
                m = self.markets[(category, topic.split(".")[2])]
                self._emit(category, topic, self._book_frame(category, topic, m, "snapshot"))
                sent += 1
        return sent
