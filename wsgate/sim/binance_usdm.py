"""Binance USD-M futures (fstream) simulator: the 2026 path split, ``pu``-chained depth, the
``/fapi/v1/depth`` REST snapshot on the same port.

Paths as the venue serves them: ``/public/ws|stream`` carries the book streams (``@depth*``,
``@bookTicker``) and raw ``@trade``, ``/market/ws|stream`` the rest, and the legacy ``/ws``
and ``/stream`` carry only ``/public`` streams. A stream subscribed on a path that does not
carry it is acknowledged and then stays silent, as on the real host: clients (and wsgate)
must route it.

User data (:mod:`wsgate.sim.binance_usdm_account`): listen keys through
``POST/PUT/DELETE /fapi/v1/listenKey``, streamed on ``/private/ws?listenKey=<k>[&events=a/b]``,
``/private/ws/<k>`` and ``/private/stream?listenKey=<k>`` (the legacy ``/ws/<k>`` is accepted
and stays silent, as the retired root does); the futures WebSocket API on ``/ws-fapi/v1``.

Depth update ids: every book step that changes a level advances the symbol's internal id
``k``; the wire id is ``10 k``, and an event covering ids ``a+1..b`` carries ``pu = 10 a``,
``U = 10 a + 5`` and ``u = 10 b``. So ``U`` is never ``pu + 1`` (as on futures, where the
spot rule reports false gaps) and a REST ``lastUpdateId`` always equals some event's ``u``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from wsgate.sim.binance import KLINE_INTERVALS, BinanceConnection, BinanceSim, _Depth
from wsgate.sim.binance_usdm_account import UsdmAccounts
from wsgate.sim.market import SymbolMarket
from wsgate.sim.server import SimConnection, json_response

__all__ = ["WS_API_PATH", "BinanceUsdmSim", "wire_id"]

WS_API_PATH = "/ws-fapi/v1"  # on ws-fapi.binance.com; here on the same port

_SIMPLE = ("aggTrade", "trade", "bookTicker", "ticker", "miniTicker", "markPrice", "markPrice@1s")
_PUBLIC = ("depth", "bookTicker", "trade")  # prefixes of the kinds /public carries
_DEPTH = {"depth@100ms": 1, "depth": 2, "depth@250ms": 2, "depth@500ms": 5}  # in 100 ms steps
_PARTIAL = {"": 2, "@100ms": 1, "@500ms": 5}
_LIMITS = (5, 10, 20, 50, 100, 500, 1000)


def wire_id(k: int) -> int:
    return 10 * k


def _ms() -> int:
    return int(time.time() * 1000)


def _carries(path: str, kind: str) -> bool:
    """Whether a connection on ``path`` delivers streams of ``kind`` (the 2026 split)."""
    public = kind.startswith(_PUBLIC)
    if path.startswith("/market"):
        return not public
    return public  # /public and the legacy root


class BinanceUsdmSim(BinanceSim):
    name = "binance_usdm"
    ws_api_path = WS_API_PATH
    listen_key_rest = "/fapi/v1/listenKey"
    depth_default_speed = "250ms"

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        json_style: str = "compact",
        symbols: Sequence[str] = ("btcusdt", "ethusdt"),
        book_rate: float = 10.0,
        trades_rate: float = 5.0,
        ping_interval: float = 180.0,
        ping_timeout: float = 600.0,
        max_lifetime: float = 86400.0,
        max_messages_per_second: int = 10,
        max_streams: int = 1024,
    ) -> None:
        super().__init__(
            seed=seed,
            host=host,
            port=port,
            time_scale=time_scale,
            json_style=json_style,
            symbols=symbols,
            book_rate=book_rate,
            trades_rate=trades_rate,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_lifetime=max_lifetime,
            shutdown_grace=0.0,
            max_messages_per_second=max_messages_per_second,
            max_streams=max_streams,
        )
        steps = max(1.0, book_rate / 10.0)  # book steps per 100 ms
        self._depth = {
            s: [
                _Depth(f"{s}@{kind}", max(1, round(every * steps)), m.update_id)
                for kind, every in _DEPTH.items()
            ]
            for s, m in self.markets.items()
        }
        self._partial_last: dict[str, int] = {}
        self._mark_steps = 0
        self.accounts = UsdmAccounts(random.Random(self.rng.getrandbits(64)), _ms)
        self._events: dict[int, frozenset[str]] = {}  # /private connection id -> events=

    @property
    def rest_url(self) -> str:
        return f"{self.http_url}/fapi/v1"

    def _install_jobs(self) -> None:
        super()._install_jobs()
        self.add_job(self.time_scale * 1.0, self._mark_job, "markPrice")

    # -- book -------------------------------------------------------------------------------------

    def _book_job(self, now: float) -> None:
        super()._book_job(now)
        if self.faults.data_paused:
            return
        for sym, market in self.markets.items():
            for suffix, every in _PARTIAL.items():
                if self._steps % max(1, round(every * max(1.0, self.config.book_rate / 10))):
                    continue
                for n in (5, 10, 20):
                    stream = f"{sym}@depth{n}{suffix}"
                    if self._listened(stream):
                        self._emit(stream, self._partial(market, stream, n))

    def _partial(self, market: SymbolMarket, stream: str, n: int) -> dict[str, object]:
        prev = self._partial_last.get(stream, market.update_id)
        self._partial_last[stream] = market.update_id
        bids, asks = market.sides()
        now = _ms()
        return {
            "e": "depthUpdate",
            "E": now,
            "T": now,
            "s": market.symbol,
            "U": wire_id(prev) + 5,
            "u": wire_id(market.update_id),
            "pu": wire_id(prev),
            "b": [[market.price_str(p), market.amount_str(a)] for p, _, a in bids[:n]],
            "a": [[market.price_str(p), market.amount_str(-a)] for p, _, a in asks[:n]],
        }

    def _depth_update(
        self, market: SymbolMarket, prev: int, bids: list[list[str]], asks: list[list[str]]
    ) -> dict[str, object]:
        now = _ms()
        return {
            "e": "depthUpdate",
            "E": now,
            "T": now,
            "s": market.symbol,
            "U": wire_id(prev) + 5,
            "u": wire_id(market.update_id),
            "pu": wire_id(prev),
            "b": bids,
            "a": asks,
        }

    def _book_ticker_event(
        self, market: SymbolMarket, top: tuple[int, int, int, int]
    ) -> dict[str, object]:
        bid, bid_amount, ask, ask_amount = top
        now = _ms()
        return {
            "e": "bookTicker",
            "u": wire_id(market.update_id),
            "E": now,
            "T": now,
            "s": market.symbol,
            "b": market.price_str(bid),
            "B": market.amount_str(bid_amount),
            "a": market.price_str(ask),
            "A": market.amount_str(ask_amount),
        }

    def _mark_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        self._mark_steps += 1
        for sym, market in self.markets.items():
            for stream, every in ((f"{sym}@markPrice@1s", 1), (f"{sym}@markPrice", 3)):
                if self._mark_steps % every == 0 and self._listened(stream):
                    self._emit(stream, self._mark(market))

    def _mark(self, m: SymbolMarket) -> dict[str, object]:
        now = _ms()
        price = m.price_str(m.mid_t)
        return {
            "e": "markPriceUpdate",
            "E": now,
            "s": m.symbol,
            "p": price,
            "i": price,
            "P": price,
            "r": "0.00010000",
            "T": now - now % 28_800_000 + 28_800_000,
        }

    # -- connections ------------------------------------------------------------------------------

    def _path_streams(self, path: str, query: Mapping[str, str]) -> list[str] | None:
        for prefix in ("/public", "/market"):
            if path == prefix or path.startswith(prefix + "/"):
                path = path[len(prefix) :] or "/"
                break
        return super()._path_streams(path, query)

    def _accepts_path(self, path: str, query: Mapping[str, str]) -> bool:
        if path.startswith("/private/"):
            return bool(_private_key(path, query))
        if path.rstrip("/") == WS_API_PATH:
            return True
        return self._path_streams(path, query) is not None

    def _valid_stream(self, stream: str) -> bool:
        sym, _, kind = stream.partition("@")
        if sym not in self.markets:
            return False
        if kind in _SIMPLE or kind in _DEPTH:
            return True
        for n in (5, 10, 20):
            for suffix in _PARTIAL:
                if kind == f"depth{n}{suffix}":
                    return True
        return kind.startswith("kline_") and kind[6:] in KLINE_INTERVALS and kind[6:] != "1s"

    def _make_connection(self, cid: int, ws: ServerConnection, path: str) -> SimConnection:
        conn = BinanceConnection(self, cid, ws, path)
        conn.combined = "/stream" in path.split("?")[0]
        return conn

    def _add_stream(self, conn: BinanceConnection, stream: str) -> None:
        conn.streams[stream] = None
        if _carries(conn.path, stream.partition("@")[2]):  # else: acknowledged, silent
            self.subscribers.setdefault(stream, {})[conn.id] = conn

    def _on_open(self, conn: SimConnection) -> None:
        assert isinstance(conn, BinanceConnection)
        if conn.path.startswith(WS_API_PATH):
            return
        if conn.path.startswith("/private"):
            parts = urlsplit(conn.path)
            q = dict(parse_qsl(parts.query))
            key = _private_key(parts.path, q)
            if self.accounts.live_key(key) is not None:
                conn.streams[key] = None
                self.subscribers.setdefault(key, {})[conn.id] = conn
                if q.get("events"):
                    self._events[conn.id] = frozenset(q["events"].split("/"))
            return
        path, _, query = conn.path.partition("?")
        q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        for stream in self._path_streams(path, q) or []:
            self._add_stream(conn, stream)
        # fstream has no serverShutdown event: the 24 h close just happens.
        lifetime = self.config.max_lifetime * self.time_scale
        conn.timers.append(
            self.later(lifetime, lambda: self.spawn(conn.ws.close(1001, "max lifetime")))
        )

    def _on_close(self, conn: SimConnection) -> None:
        super()._on_close(conn)
        self._events.pop(conn.id, None)

    def _emit_user(self, api_key: str, event: dict[str, Any]) -> None:
        """An account event to its listen keys' connections that asked for its kind."""
        for key in self.accounts.keys_of(api_key):
            conns = [
                c
                for c in self.subscribers.get(key, {}).values()
                if event.get("e") in self._events.get(c.id, (event.get("e"),))
            ]
            self._send_to(conns, key, event)

    def _request(
        self, conn: BinanceConnection, req: dict[str, Any], req_id: object
    ) -> dict[str, object]:
        if req.get("method") in ("SET_PROPERTY", "GET_PROPERTY"):
            return {"error": {"code": 2, "msg": "Invalid request: unknown method"}}
        return super()._request(conn, req, req_id)

    # -- REST -------------------------------------------------------------------------------------

    def _http(self, ws: ServerConnection, path: str, query: Mapping[str, str]) -> Response | None:
        if path != "/fapi/v1/depth":
            return None
        market = self.markets.get(query.get("symbol", "").lower())
        if market is None:
            return json_response(
                ws, 400, {"code": -1121, "msg": "Invalid symbol."}, self.json_style
            )
        try:
            limit = int(query.get("limit", "500"))
        except ValueError:
            limit = -1
        if limit not in _LIMITS:
            return json_response(
                ws,
                400,
                {"code": -4021, "msg": "Invalid depth limit.", "limits": _LIMITS},
                self.json_style,
            )
        bids, asks = market.sides()
        now = _ms()
        return json_response(
            ws,
            200,
            {
                "lastUpdateId": wire_id(market.update_id),
                "E": now,
                "T": now,
                "bids": [[market.price_str(p), market.amount_str(a)] for p, _, a in bids[:limit]],
                "asks": [[market.price_str(p), market.amount_str(-a)] for p, _, a in asks[:limit]],
            },
            self.json_style,
        )

    # -- faults -----------------------------------------------------------------------------------

    def fault_server_shutdown(self) -> int:
        """fstream announces nothing: the lifetime close arrives unannounced (1001)."""
        n = len(self.connections)
        self.close_all_later(0.0, 1001, "max lifetime")
        return n


def _private_key(path: str, query: Mapping[str, str]) -> str:
    """The listen key of a ``/private`` path: ``?listenKey=`` or ``/private/ws/<key>``."""
    if path.rstrip("/") in ("/private/ws", "/private/stream"):
        return query.get("listenKey", "")
    if path.startswith("/private/ws/"):
        return path[len("/private/ws/") :].strip("/")
    return ""
