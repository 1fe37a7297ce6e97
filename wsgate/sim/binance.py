"""Binance spot WebSocket Streams simulator, with the REST depth snapshot on the same port.

Depth update ids are global per symbol: every book step that changes a level advances the
symbol's ``update_id``, and each depth cadence flushes the levels changed since its last
flush as one ``depthUpdate`` with ``U = previous u + 1``. Cadences are counted in book steps
(``depth@100ms`` every step at the default 10 steps/s), so a REST snapshot's
``lastUpdateId`` always equals the ``u`` of an emitted ``@100ms`` event and a client running
the documented algorithm gets a contiguous book.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from wsgate.runtime.downstream.httpbody import request_body
from wsgate.sim.binance_account import Accounts
from wsgate.sim.market import SymbolMarket
from wsgate.sim.server import SimConnection, SimServer, dumps, json_response

__all__ = ["BinanceConfig", "BinanceConnection", "BinanceSim"]

_S = 1000
KLINE_INTERVALS = {
    "1s": _S,
    "1m": 60 * _S,
    "3m": 180 * _S,
    "5m": 300 * _S,
    "15m": 900 * _S,
    "30m": 1800 * _S,
    "1h": 3600 * _S,
    "2h": 7200 * _S,
    "4h": 14400 * _S,
    "6h": 21600 * _S,
    "8h": 28800 * _S,
    "12h": 43200 * _S,
    "1d": 86400 * _S,
    "3d": 3 * 86400 * _S,
    "1w": 7 * 86400 * _S,
    "1M": 30 * 86400 * _S,
}
_SIMPLE_KINDS = ("trade", "aggTrade", "bookTicker", "ticker", "miniTicker")
_DEPTH_KINDS = {"depth": 1.0, "depth@1000ms": 1.0, "depth@100ms": 0.1}
WS_API_PATH = "/ws-api/v3"


def _ms() -> int:
    return int(time.time() * 1000)


def _level(market: SymbolMarket, price_t: int) -> list[str]:
    return [market.price_str(price_t), market.amount_str(market.level_amount(price_t))]


@dataclass(frozen=True)
class BinanceConfig:
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt")
    book_rate: float = 10.0  # book steps per second per symbol
    trades_rate: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 60.0
    max_lifetime: float = 86400.0
    shutdown_grace: float = 1.0  # serverShutdown precedes the close by this much
    max_messages_per_second: int = 5
    max_streams: int = 1024


class BinanceConnection(SimConnection):
    def __init__(self, sim: BinanceSim, cid: int, ws: ServerConnection, path: str) -> None:
        super().__init__(sim, cid, ws, path)
        self.combined = path.startswith("/stream")
        self.streams: dict[str, None] = {}
        self.recent: deque[float] = deque()
        self.timers: list[Any] = []

    def channel_count(self) -> int:
        return len(self.streams)


class _Depth:
    """One depth cadence of one symbol: levels changed since its last flush."""

    def __init__(self, stream: str, every_steps: int, first_id: int) -> None:
        self.stream = stream
        self.every_steps = every_steps
        self.last_u = first_id
        self.dirty: dict[int, bool] = {}


class BinanceSim(SimServer):
    name = "binance"
    ws_api_path = WS_API_PATH  # the WebSocket API on this host
    listen_key_rest = "/api/v3/userDataStream"  # create, keep alive, close a listen key
    depth_default_speed = "1000ms"  # <symbol>@depth is <symbol>@depth@1000ms

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        json_style: str = "compact",
        symbols: Sequence[str] = BinanceConfig.symbols,
        book_rate: float = BinanceConfig.book_rate,
        trades_rate: float = BinanceConfig.trades_rate,
        ping_interval: float = BinanceConfig.ping_interval,
        ping_timeout: float = BinanceConfig.ping_timeout,
        max_lifetime: float = BinanceConfig.max_lifetime,
        shutdown_grace: float = BinanceConfig.shutdown_grace,
        max_messages_per_second: int = BinanceConfig.max_messages_per_second,
        max_streams: int = BinanceConfig.max_streams,
    ) -> None:
        super().__init__(host=host, port=port, time_scale=time_scale, json_style=json_style)
        syms = tuple(s.lower() for s in symbols)
        self.config = BinanceConfig(
            syms,
            book_rate,
            trades_rate,
            ping_interval,
            ping_timeout,
            max_lifetime,
            shutdown_grace,
            max_messages_per_second,
            max_streams,
        )
        self.rng = random.Random(seed)
        self.markets = {
            s: SymbolMarket(s.upper(), random.Random(self.rng.getrandbits(64))) for s in syms
        }
        now = _ms()
        for market in self.markets.values():
            market.seed_tape(now)
        self.subscribers: dict[str, dict[int, BinanceConnection]] = {}
        self._steps = 0
        self._agg_id = {s: self.rng.randrange(10**8, 2 * 10**8) for s in syms}
        self._depth = {
            s: [
                _Depth(f"{s}@depth", max(1, round(1.0 * book_rate)), m.update_id),
                _Depth(f"{s}@depth@100ms", max(1, round(0.1 * book_rate)), m.update_id),
            ]
            for s, m in self.markets.items()
        }
        self._top: dict[str, tuple[int, int, int, int]] = {}
        self.accounts = Accounts(random.Random(self.rng.getrandbits(64)), _ms)
        self.ws_api_subs: dict[str, list[tuple[BinanceConnection, int]]] = {}

    @property
    def rest_url(self) -> str:
        return f"{self.http_url}/api/v3"

    def stream_limit(self) -> int:
        override = self.faults.max_channels
        return self.config.max_streams if override is None else override

    # -- jobs -----------------------------------------------------------------------------------

    def _serve_options(self) -> dict[str, Any]:
        k = self.time_scale
        return {
            "ping_interval": self.config.ping_interval * k,
            "ping_timeout": self.config.ping_timeout * k,
        }

    def _install_jobs(self) -> None:
        k = self.time_scale
        self.add_job(k / self.config.book_rate, self._book_job, "book")
        self.add_job(k / self.config.trades_rate, self._trade_job, "trades")
        self.add_job(k * 1.0, self._ticker_job, "ticker")
        self.add_job(k * 1.0, lambda now: self._kline_job(now, second=True), "kline 1s")
        self.add_job(k * 2.0, lambda now: self._kline_job(now, second=False), "kline")

    def _book_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        self._steps += 1
        for sym, market in self.markets.items():
            changed = market.step()
            for depth in self._depth[sym]:
                depth.dirty.update(changed)
                if self._steps % depth.every_steps == 0:
                    self._flush_depth(market, depth)
            self._book_ticker(sym, market)

    def _flush_depth(self, market: SymbolMarket, depth: _Depth) -> None:
        """The diff of the levels changed since the stream's last event, to its listeners."""
        if market.update_id == depth.last_u:
            return
        prev, depth.last_u = depth.last_u, market.update_id
        dirty, depth.dirty = depth.dirty, {}
        names = [depth.stream]
        if depth.stream.endswith("@depth"):  # the default speed, also spelt out
            names.append(f"{depth.stream}@{self.depth_default_speed}")
        if not any(self._listened(n) for n in names):
            return
        prices = sorted(dirty, reverse=True)  # bids from the best down, asks from the best up
        bids = [_level(market, p) for p in prices if dirty[p]]
        asks = [_level(market, p) for p in reversed(prices) if not dirty[p]]
        event = self._depth_update(market, prev, bids, asks)
        for name in names:
            self._emit(name, event)

    def _depth_update(
        self, market: SymbolMarket, prev: int, bids: list[list[str]], asks: list[list[str]]
    ) -> dict[str, object]:
        return {
            "e": "depthUpdate",
            "E": _ms(),
            "s": market.symbol,
            "U": prev + 1,
            "u": market.update_id,
            "b": bids,
            "a": asks,
        }

    def _book_ticker(self, sym: str, market: SymbolMarket) -> None:
        """The best bid and ask, to the symbol's listeners when either moved."""
        bid, ask = market.best_bid() or 0, market.best_ask() or 0
        top = (bid, market.level_amount(bid), ask, market.level_amount(ask))
        if self._top.get(sym) == top:
            return
        self._top[sym] = top
        stream = f"{sym}@bookTicker"
        if self._listened(stream):
            self._emit(stream, self._book_ticker_event(market, top))

    def _book_ticker_event(
        self, market: SymbolMarket, top: tuple[int, int, int, int]
    ) -> dict[str, object]:
        bid, bid_amount, ask, ask_amount = top
        return {
            "u": market.update_id,
            "s": market.symbol,
            "b": market.price_str(bid),
            "B": market.amount_str(bid_amount),
            "a": market.price_str(ask),
            "A": market.amount_str(ask_amount),
        }

    def _trade_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        for sym, market in self.markets.items():
            t = market.trade(_ms())
            self._agg_id[sym] += 1
            agg = self._agg_id[sym]
            # Binance's "m": the buyer is the maker, i.e. the seller was the taker.
            common = {
                "s": market.symbol,
                "p": market.price_str(t.price_t),
                "q": market.amount_str(t.amount_t),
            }
            maker = t.amount_t < 0
            if self._listened(f"{sym}@trade"):
                event = {"e": "trade", "E": _ms(), **common, "t": t.id, "T": t.mts, "m": maker}
                self._emit(f"{sym}@trade", {**event, "M": True})
            if self._listened(f"{sym}@aggTrade"):
                event = {"e": "aggTrade", "E": _ms(), "a": agg, **common, "f": t.id, "l": t.id}
                self._emit(f"{sym}@aggTrade", {**event, "T": t.mts, "m": maker, "M": True})

    def _ticker_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        for sym, market in self.markets.items():
            if self._listened(f"{sym}@ticker"):
                self._emit(f"{sym}@ticker", self._ticker(market, full=True))
            if self._listened(f"{sym}@miniTicker"):
                self._emit(f"{sym}@miniTicker", self._ticker(market, full=False))

    def _ticker(self, m: SymbolMarket, *, full: bool) -> dict[str, object]:
        st = m.stats()
        now = _ms()
        mini: dict[str, object] = {
            "e": "24hrTicker" if full else "24hrMiniTicker",
            "E": now,
            "s": m.symbol,
            "c": m.price_str(st.last_t),
            "o": m.price_str(st.open_t),
            "h": m.price_str(st.high_t),
            "l": m.price_str(st.low_t),
            "v": m.amount_str(st.volume_t),
            "q": f"{st.quote_volume:.8f}",
        }
        if not full:
            return mini
        bid, ask = m.best_bid() or 0, m.best_ask() or 0
        change = st.last_t - st.open_t
        return {
            **mini,
            "p": f"{change / m.price_scale:.8f}",
            "P": f"{100 * change / st.open_t:.3f}",
            "w": f"{st.quote_volume / max(st.volume_t / 10**4, 1e-9):.8f}",
            "x": m.price_str(st.open_t),
            "Q": m.amount_str(m.tape[-1].amount_t) if m.tape else "0.00000000",
            "b": m.price_str(bid),
            "B": m.amount_str(m.level_amount(bid)),
            "a": m.price_str(ask),
            "A": m.amount_str(m.level_amount(ask)),
            "O": now - 86_400_000,
            "C": now,
            "F": st.first_trade,
            "L": st.last_trade,
            "n": st.trades,
        }

    def _kline_job(self, now: float, *, second: bool) -> None:
        if self.faults.data_paused:
            return
        for stream in list(self.subscribers):
            sym, _, kind = stream.partition("@")
            interval = kind[6:] if kind.startswith("kline_") else ""
            if not interval or (interval == "1s") != second:
                continue
            self._emit(stream, self._kline(self.markets[sym], interval))

    def _kline(self, m: SymbolMarket, interval: str) -> dict[str, object]:
        ms = KLINE_INTERVALS[interval]
        now = _ms()
        start = now - now % ms
        c = m.candles(ms).current
        last = m.stats().last_t
        live = c is not None and c.open_ms == start
        k = {
            "t": start,
            "T": start + ms - 1,
            "s": m.symbol,
            "i": interval,
            "f": c.first_trade if live and c else -1,
            "L": c.last_trade if live and c else -1,
            "o": m.price_str(c.open_t if live and c else last),
            "c": m.price_str(c.close_t if live and c else last),
            "h": m.price_str(c.high_t if live and c else last),
            "l": m.price_str(c.low_t if live and c else last),
            "v": m.amount_str(c.volume_t if live and c else 0),
            "n": c.trades if live and c else 0,
            "x": False,
            "q": f"{c.quote_volume if live and c else 0.0:.8f}",
            "V": m.amount_str(c.taker_buy_volume_t if live and c else 0),
            "Q": f"{c.taker_buy_quote if live and c else 0.0:.8f}",
            "B": "0",
        }
        return {"e": "kline", "E": now, "s": m.symbol, "k": k}

    def _listened(self, stream: str) -> bool:
        """Events are only built for streams someone listens to."""
        return bool(self.subscribers.get(stream))

    def _emit(self, stream: str, event: object) -> None:
        subs = self.subscribers.get(stream)
        if subs:
            self._send_to(list(subs.values()), stream, event)

    def _send_to(self, conns: Sequence[BinanceConnection], stream: str, event: object) -> None:
        raw: bytes | None = None
        wrapped: bytes | None = None
        for conn in conns:
            if conn.combined:
                if wrapped is None:
                    wrapped = dumps({"stream": stream, "data": event}).encode()
                conn.send(wrapped)
            else:
                if raw is None:
                    raw = dumps(event).encode()
                conn.send(raw)

    # -- connections ------------------------------------------------------------------------------

    def _make_connection(self, cid: int, ws: ServerConnection, path: str) -> SimConnection:
        return BinanceConnection(self, cid, ws, path)

    def _path_streams(self, path: str, query: Mapping[str, str]) -> list[str] | None:
        if path in ("/ws", "/ws/"):
            return []
        if path.startswith("/ws/"):
            streams = [s for s in path[4:].split("/") if s]
        elif path in ("/stream", "/stream/"):
            streams = [s for s in query.get("streams", "").split("/") if s]
        else:
            return None
        return streams if all(self._valid_stream(s) for s in streams) else None

    def _accepts_path(self, path: str, query: Mapping[str, str]) -> bool:
        if path.rstrip("/") == self.ws_api_path:
            return True
        return self._path_streams(path, query) is not None

    def _valid_stream(self, stream: str) -> bool:
        if self.accounts.live_key(stream) is not None:
            return True  # a listen key: the account's user data stream
        sym, _, kind = stream.partition("@")
        if sym not in self.markets:
            return False
        if kind in _SIMPLE_KINDS or kind in _DEPTH_KINDS:
            return True
        return kind.startswith("kline_") and kind[6:] in KLINE_INTERVALS

    def _on_open(self, conn: SimConnection) -> None:
        assert isinstance(conn, BinanceConnection)
        parts = urlsplit(conn.path)
        for stream in self._path_streams(parts.path, dict(parse_qsl(parts.query))) or []:
            self._add_stream(conn, stream)
        k = self.time_scale
        lifetime = self.config.max_lifetime * k
        grace = min(self.config.shutdown_grace * k, lifetime)
        conn.timers.append(self.later(lifetime - grace, lambda: self._send_shutdown([conn])))
        conn.timers.append(
            self.later(lifetime, lambda: self.spawn(conn.ws.close(1001, "max lifetime")))
        )

    def _on_close(self, conn: SimConnection) -> None:
        assert isinstance(conn, BinanceConnection)
        for timer in conn.timers:
            timer.cancel()
        for stream in conn.streams:
            self._drop_stream(conn, stream)
        conn.streams.clear()
        for api_key, subs in list(self.ws_api_subs.items()):
            subs[:] = [(c, sid) for c, sid in subs if c is not conn]
            if not subs:
                del self.ws_api_subs[api_key]

    def _add_stream(self, conn: BinanceConnection, stream: str) -> None:
        conn.streams[stream] = None
        self.subscribers.setdefault(stream, {})[conn.id] = conn

    def _drop_stream(self, conn: BinanceConnection, stream: str) -> None:
        subs = self.subscribers.get(stream)
        if subs is not None:
            subs.pop(conn.id, None)
            if not subs:
                del self.subscribers[stream]

    def _on_message(self, conn: SimConnection, message: str | bytes) -> bool:
        assert isinstance(conn, BinanceConnection)
        if conn.path.startswith(self.ws_api_path):
            return self._ws_api(conn, message)
        now = time.monotonic()
        conn.recent.append(now)
        while conn.recent and now - conn.recent[0] >= 1.0:
            conn.recent.popleft()
        if len(conn.recent) > self.config.max_messages_per_second:
            conn.close_with = (1008, "Too many requests")
            return False
        try:
            req = json.loads(message)
        except ValueError as exc:
            conn.send_obj({"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None})
            return True
        if not isinstance(req, dict):
            conn.send_obj({"error": {"code": 2, "msg": "Invalid request"}, "id": None})
            return True
        req_id = req.get("id")
        reply = self._request(conn, req, req_id)
        conn.send_obj({**reply, "id": req_id})
        return True

    def _request(
        self, conn: BinanceConnection, req: dict[str, Any], req_id: object
    ) -> dict[str, object]:
        def error(code: int, msg: str) -> dict[str, object]:
            return {"error": {"code": code, "msg": msg}}

        if not isinstance(req_id, int) or isinstance(req_id, bool) or req_id < 0:
            return error(2, "Invalid request: request ID must be an unsigned integer")
        method = req.get("method")
        params = req.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams)}
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return error(2, "Invalid request: params must be a list of stream names")
            bad = [p for p in params if not self._valid_stream(p)]
            if bad:
                return error(2, f"Invalid request: unknown stream {bad[0]!r}")
            if method == "SUBSCRIBE":
                if len({*conn.streams, *params}) > self.stream_limit():
                    return error(
                        2, f"Invalid request: too many streams (max {self.stream_limit()})"
                    )
                for p in params:
                    self._add_stream(conn, p)
            else:
                for p in params:
                    if p in conn.streams:
                        del conn.streams[p]
                        self._drop_stream(conn, p)
            return {"result": None}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not isinstance(params, list) or not params or params[0] != "combined":
                return error(0, "Unknown property")
            if method == "GET_PROPERTY":
                return {"result": conn.combined}
            if len(params) != 2 or not isinstance(params[1], bool):
                return error(1, "Invalid value type: expected Boolean")
            conn.combined = params[1]
            return {"result": None}
        return error(
            2,
            f"Invalid request: unknown variant {method!r}, expected one of SUBSCRIBE, "
            "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY",
        )

    # -- user data and the WebSocket API ----------------------------------------------------------

    def _ws_api(self, conn: BinanceConnection, message: str | bytes) -> bool:
        try:
            req = json.loads(message)
        except ValueError:
            conn.send_obj({"id": None, "status": 400, "error": {"code": -1102, "msg": "bad JSON"}})
            return True
        answer, sub = self.accounts.ws_api(req, self._emit_user)
        if sub is not None:
            self.ws_api_subs.setdefault(sub[0], []).append((conn, sub[1]))
        if isinstance(req, dict) and req.get("method") == "userDataStream.unsubscribe":
            sid = (req.get("params") or {}).get("subscriptionId")
            for subs in self.ws_api_subs.values():
                subs[:] = [(c, s) for c, s in subs if not (c is conn and s == sid)]
        conn.send_obj(answer)
        return True

    def _emit_user(self, api_key: str, event: dict[str, Any]) -> None:
        """An account event to its listen-key streams and WebSocket API subscriptions."""
        for key in self.accounts.keys_of(api_key):
            self._emit(key, event)
        for conn, sid in self.ws_api_subs.get(api_key, []):
            conn.send_obj({"subscriptionId": sid, "event": event})

    def _http_request(
        self, ws: ServerConnection, request: Request, path: str, query: Mapping[str, str]
    ) -> Response | None:
        if path.rstrip("/") != self.listen_key_rest:
            return super()._http_request(ws, request, path, query)
        status, body, closed = self.accounts.rest(
            request.method, query, request.headers, request_body(request)
        )
        if closed is not None:
            self._emit(closed, {"e": "listenKeyExpired", "E": _ms(), "listenKey": closed})
            for conn in list(self.subscribers.get(closed, {}).values()):
                conn.streams.pop(closed, None)
                self._drop_stream(conn, closed)
        return json_response(ws, status, body, self.json_style)

    # -- REST -------------------------------------------------------------------------------------

    def _http(self, ws: ServerConnection, path: str, query: Mapping[str, str]) -> Response | None:
        if path in ("/api/v3/trades", "/api/v3/aggTrades"):
            return self._trades_rest(ws, path, query)
        if path != "/api/v3/depth":
            return None
        style = self.json_style
        market = self.markets.get(query.get("symbol", "").lower())
        if market is None:
            return json_response(ws, 400, {"code": -1121, "msg": "Invalid symbol."}, style)
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 5000:
            msg = "Illegal characters found in parameter 'limit'."
            return json_response(ws, 400, {"code": -1100, "msg": msg}, style)
        bids, asks = market.sides()
        return json_response(
            ws,
            200,
            {
                "lastUpdateId": market.update_id,
                "bids": [[market.price_str(p), market.amount_str(a)] for p, _, a in bids[:limit]],
                "asks": [[market.price_str(p), market.amount_str(a)] for p, _, a in asks[:limit]],
            },
            style,
        )

    def _trades_rest(self, ws: ServerConnection, path: str, query: Mapping[str, str]) -> Response:
        """``/trades`` (the most recent, ascending) and ``/aggTrades?fromId=`` from the tape
        (the simulator keeps its last 30 trades: older ones are gone, as a gap test needs)."""
        style = self.json_style
        sym = query.get("symbol", "").lower()
        market = self.markets.get(sym)
        if market is None:
            return json_response(ws, 400, {"code": -1121, "msg": "Invalid symbol."}, style)
        try:
            limit = int(query.get("limit", "500"))
            from_id = int(query["fromId"]) if "fromId" in query else None
        except ValueError:
            limit, from_id = -1, None
        if not 1 <= limit <= 1000:
            return json_response(ws, 400, {"code": -1100, "msg": "Illegal limit."}, style)
        tape = list(market.tape)
        offset = self._agg_id[sym] - market.trade_id  # one aggregate per simulated trade
        rows: list[dict[str, object]] = []
        if path.endswith("/aggTrades"):
            for t in tape:
                agg = t.id + offset
                if from_id is None or agg >= from_id:
                    rows.append(
                        {
                            "a": agg,
                            "p": market.price_str(t.price_t),
                            "q": market.amount_str(t.amount_t),
                            "f": t.id,
                            "l": t.id,
                            "T": t.mts,
                            "m": t.amount_t < 0,
                            "M": True,
                        }
                    )
            rows = rows[:limit] if from_id is not None else rows[-limit:]
        else:
            for t in tape[-limit:]:
                price, qty = market.price_str(t.price_t), market.amount_str(t.amount_t)
                rows.append(
                    {
                        "id": t.id,
                        "price": price,
                        "qty": qty,
                        "quoteQty": f"{float(price) * float(qty):.8f}",
                        "time": t.mts,
                        "isBuyerMaker": t.amount_t < 0,
                        "isBestMatch": True,
                    }
                )
        return json_response(ws, 200, rows, style)

    # -- faults -----------------------------------------------------------------------------------

    def _send_shutdown(self, conns: Sequence[SimConnection]) -> int:
        event = {"e": "serverShutdown", "E": _ms()}
        raw = dumps(event).encode()
        wrapped = dumps({"stream": "!serverShutdown", "data": event}).encode()
        for conn in conns:
            assert isinstance(conn, BinanceConnection)
            conn.send(wrapped if conn.combined else raw)
        return len(conns)

    def fault_server_shutdown(self) -> int:
        sent = self._send_shutdown(list(self.connections.values()))
        self.close_all_later(self.config.shutdown_grace * self.time_scale, 1001, "server shutdown")
        return sent
