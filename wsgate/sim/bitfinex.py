"""Bitfinex v2 WebSocket simulator: public channels, conf flags, auth and order input.

Channel ids are allocated per feed, so every connection subscribed to the same channel gets
the same ``chanId`` and, when it has no framing flags, the very same encoded frame. A feed
that loses its last subscriber is dropped; subscribing again allocates a new id.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from wsgate.sim.bitfinex_feeds import (
    BOOK_LENGTHS,
    BOOK_PRECISIONS,
    CANDLE_FRAMES,
    BookFeed,
    CandlesFeed,
    Feed,
    StatusFeed,
    Sub,
    TickerFeed,
    TradesFeed,
)
from wsgate.sim.market import SymbolMarket, base_asset, num
from wsgate.sim.server import SimConnection, SimServer, dumps

__all__ = ["FLAG_CHECKSUM", "FLAG_SEQ_ALL", "FLAG_TIMESTAMP", "BitfinexConnection", "BitfinexSim"]

logger = logging.getLogger("wsgate.sim")

FLAG_TIMESTAMP = 32768
FLAG_SEQ_ALL = 65536
FLAG_CHECKSUM = 131072
_FRAMING = FLAG_TIMESTAMP | FLAG_SEQ_ALL

_INFO_MSG = {
    20051: "Stopping. Please try to reconnect",
    20060: "Entering in Maintenance mode. Please pause any activity and resume after "
    "receiving the info message 20061 (it should take 120 seconds at most).",
    20061: "Maintenance ended. You can resume normal activity. It is advised to "
    "unsubscribe/subscribe again all channels.",
}
_ECHO = ("symbol", "pair", "prec", "freq", "len", "key", "subId")


def _ms() -> int:
    return int(time.time() * 1000)


class BitfinexConnection(SimConnection):
    def __init__(self, sim: BitfinexSim, cid: int, ws: ServerConnection, path: str) -> None:
        super().__init__(sim, cid, ws, path)
        self.flags = 0
        self.seq = 0
        self.auth_seq = 0
        self.authenticated = False
        self.subs: dict[int, Sub] = {}
        self.orders: dict[int, list[Any]] = {}

    def channel_count(self) -> int:
        return len(self.subs)

    def send_channel(self, chan_id: int, tail: str, mts: int) -> None:
        """Frame one channel message for this connection (sequence/timestamp flags)."""
        text = f"[{chan_id},{tail}"
        if self.flags & FLAG_SEQ_ALL:
            self.seq += 1
            text += f",{self.seq}"
        if self.flags & FLAG_TIMESTAMP:
            text += f",{mts}"
        self.send((text + "]").encode())

    def send_account(self, tail: str, *, notification: bool = False) -> None:
        """Channel 0: public seq then auth seq (notifications do not advance the auth seq)."""
        text = f"[0,{tail}"
        if self.flags & FLAG_SEQ_ALL:
            self.seq += 1
            if not notification:
                self.auth_seq += 1
            text += f",{self.seq},{self.auth_seq}"
        if self.flags & FLAG_TIMESTAMP:
            text += f",{_ms()}"
        self.send((text + "]").encode())


@dataclass(frozen=True)
class BitfinexConfig:
    symbols: tuple[str, ...] = ("tBTCUSD", "tETHUSD")
    ticker_rate: float = 2.0  # messages per second per channel
    trades_rate: float = 5.0
    book_rate: float = 10.0  # book steps per second per symbol
    status_rate: float = 1.0
    heartbeat_interval: float = 15.0
    channel_limit: int = 25
    api_key: str = "sim-key"
    reconnect_grace: float = 1.0  # after info 20051, before closing
    f1_interval: float = 2.0


class BitfinexSim(SimServer):
    name = "bitfinex"
    url_suffix = "/ws/2"

    def __init__(
        self,
        *,
        seed: int | None = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        json_style: str = "compact",
        symbols: Sequence[str] = BitfinexConfig.symbols,
        ticker_rate: float = BitfinexConfig.ticker_rate,
        trades_rate: float = BitfinexConfig.trades_rate,
        book_rate: float = BitfinexConfig.book_rate,
        status_rate: float = BitfinexConfig.status_rate,
        heartbeat_interval: float = BitfinexConfig.heartbeat_interval,
        channel_limit: int = BitfinexConfig.channel_limit,
        api_key: str = BitfinexConfig.api_key,
        reconnect_grace: float = BitfinexConfig.reconnect_grace,
    ) -> None:
        super().__init__(host=host, port=port, time_scale=time_scale, json_style=json_style)
        self.config = BitfinexConfig(
            tuple(symbols),
            ticker_rate,
            trades_rate,
            book_rate,
            status_rate,
            heartbeat_interval,
            channel_limit,
            api_key,
            reconnect_grace,
        )
        self.rng = random.Random(seed)
        self.markets = {
            s: SymbolMarket(s, random.Random(self.rng.getrandbits(64))) for s in symbols
        }
        for market in self.markets.values():
            market.seed_tape(_ms())
        self.feeds: dict[str, Feed] = {}
        self._next_chan_id = self.rng.randrange(10, 1000)
        self._next_order_id = self.rng.randrange(10**10, 2 * 10**10)
        self._server_id = f"{self.rng.getrandbits(128):032x}"

    def channel_limit(self) -> int:
        override = self.faults.max_channels
        return self.config.channel_limit if override is None else override

    # -- jobs -----------------------------------------------------------------------------------

    def _install_jobs(self) -> None:
        cfg, k = self.config, self.time_scale
        for symbol, market in self.markets.items():
            self.add_job(k / cfg.book_rate, self._book_job(market), f"book {symbol}")
            self.add_job(k / cfg.trades_rate, self._trade_job(market), f"trades {symbol}")
            self.add_job(k / cfg.ticker_rate, self._ticker_job(market), f"ticker {symbol}")
        self.add_job(k / cfg.status_rate, self._status_job, "status")
        self.add_job(k * cfg.heartbeat_interval / 5, self._heartbeat_job, "heartbeat")

    def _feeds_of(self, market: SymbolMarket, kind: type[Feed]) -> list[Any]:
        return [f for f in self.feeds.values() if f.market is market and type(f) is kind]

    def _book_job(self, market: SymbolMarket) -> Any:
        def run(now: float) -> None:
            if self.faults.data_paused:
                return
            market.step()
            for feed in self._feeds_of(market, BookFeed):
                if now - feed.last_update < feed.min_interval:
                    continue
                feed.last_update = now
                updates = feed.refresh_view()
                if not updates:
                    continue
                mts = _ms()
                for entry in updates:
                    self._publish(feed, dumps(entry), now, mts)
                cs = feed.checksum()
                if self.faults.take_bad_checksum():
                    cs = cs + 1 if cs < 2**31 - 1 else cs - 1
                self._publish(feed, f'"cs",{cs}', now, mts, only=FLAG_CHECKSUM)

        return run

    def _trade_job(self, market: SymbolMarket) -> Any:
        def run(now: float) -> None:
            if self.faults.data_paused:
                return
            trade = market.trade(_ms())
            mts = _ms()
            for feed in self._feeds_of(market, TradesFeed):
                body = dumps(feed.entry(trade))
                self._publish(feed, f'"te",{body}', now, mts)
                self._publish(feed, f'"tu",{body}', now, mts)
            for feed in self._feeds_of(market, CandlesFeed):
                tail = feed.update_tail()
                if tail is not None:
                    self._publish(feed, tail, now, mts)

        return run

    def _ticker_job(self, market: SymbolMarket) -> Any:
        def run(now: float) -> None:
            if self.faults.data_paused:
                return
            for feed in self._feeds_of(market, TickerFeed):
                self._publish(feed, feed.snapshot_tail(), now, _ms())

        return run

    def _status_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        mts = _ms()
        for feed in list(self.feeds.values()):
            if isinstance(feed, StatusFeed):
                self._publish(feed, dumps(feed.entry(mts)), now, mts)

    def _heartbeat_job(self, now: float) -> None:
        if self.faults.data_paused:
            return
        quiet = self.config.heartbeat_interval * self.time_scale
        mts = _ms()
        for conn in list(self.connections.values()):
            assert isinstance(conn, BitfinexConnection)
            for sub in conn.subs.values():
                if not sub.pending and now - sub.last_sent >= quiet:
                    conn.send_channel(sub.feed.chan_id, '"hb"', mts)
                    sub.last_sent = now

    def _publish(self, feed: Feed, tail: str, now: float, mts: int, only: int = 0) -> None:
        """Send one channel message to every subscriber; encode once for unflagged ones."""
        shared: bytes | None = None
        for sub in feed.subs:
            conn = sub.conn
            if sub.pending or (only and not conn.flags & only):
                continue
            sub.last_sent = now
            if conn.flags & _FRAMING:
                conn.send_channel(feed.chan_id, tail, mts)
            else:
                if shared is None:
                    shared = f"[{feed.chan_id},{tail}]".encode()
                conn.send(shared)

    def _send_snapshot(self, sub: Sub, now: float) -> None:
        sub.pending = False
        sub.last_sent = now
        feed = sub.feed
        sub.conn.send_channel(feed.chan_id, feed.snapshot_tail(), _ms())
        if isinstance(feed, BookFeed) and sub.conn.flags & FLAG_CHECKSUM:
            sub.conn.send_channel(feed.chan_id, f'"cs",{feed.checksum()}', _ms())

    def fault_resume(self) -> None:
        if self.faults.data_paused:
            return
        now = time.monotonic()
        for conn in list(self.connections.values()):
            assert isinstance(conn, BitfinexConnection)
            for sub in conn.subs.values():
                if sub.pending:
                    self._send_snapshot(sub, now)

    # -- connection protocol --------------------------------------------------------------------

    def _make_connection(self, cid: int, ws: ServerConnection, path: str) -> SimConnection:
        return BitfinexConnection(self, cid, ws, path)

    def _accepts_path(self, path: str, query: Any) -> bool:
        return path in ("/ws/2", "/ws/2/", "/")

    def _on_open(self, conn: SimConnection) -> None:
        status = 0 if self.faults.maintenance else 1
        conn.send_obj(
            {
                "event": "info",
                "version": 2,
                "serverId": self._server_id,
                "platform": {"status": status},
            }
        )

    def _on_close(self, conn: SimConnection) -> None:
        assert isinstance(conn, BitfinexConnection)
        for sub in list(conn.subs.values()):
            self._detach(sub)
        conn.subs.clear()

    def _on_message(self, conn: SimConnection, message: str | bytes) -> bool:
        assert isinstance(conn, BitfinexConnection)
        try:
            msg = json.loads(message)
        except ValueError:
            conn.send_obj({"event": "error", "msg": "invalid JSON", "code": 10000})
            return True
        if isinstance(msg, dict):
            self._on_event(conn, msg)
        elif isinstance(msg, list) and len(msg) >= 2 and msg[0] == 0:
            self._on_input(conn, msg)
        else:
            conn.send_obj({"event": "error", "msg": "event: invalid", "code": 10000})
        return True

    def _on_event(self, conn: BitfinexConnection, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if event == "ping":
            conn.send_obj({"event": "pong", "ts": _ms(), "cid": msg.get("cid")})
        elif event == "conf":
            flags = msg.get("flags")
            if isinstance(flags, int) and not isinstance(flags, bool) and flags >= 0:
                conn.flags = flags
                conn.send_obj({"event": "conf", "status": "OK", "flags": flags})
            else:
                conn.send_obj({"event": "conf", "status": "FAILED", "flags": flags})
        elif event == "subscribe":
            self._subscribe(conn, msg)
        elif event == "unsubscribe":
            self._unsubscribe(conn, msg)
        elif event == "auth":
            self._auth(conn, msg)
        else:
            conn.send_obj({"event": "error", "msg": "event: invalid", "code": 10000})

    # -- subscriptions --------------------------------------------------------------------------

    def _subscribe(self, conn: BitfinexConnection, msg: dict[str, Any]) -> None:
        echo = {k: msg[k] for k in _ECHO if k in msg}
        channel = msg.get("channel")

        def error(code: int, text: str) -> None:
            conn.send_obj({"event": "error", "msg": text, "code": code, "channel": channel, **echo})

        if channel not in ("ticker", "trades", "book", "candles", "status"):
            return error(10302, "channel: unknown")
        built = self._feed_spec(channel, msg, echo)
        if isinstance(built, str):
            return error(10300, built)
        key, factory = built
        feed = self.feeds.get(key)
        if feed is not None and any(s.feed is feed for s in conn.subs.values()):
            return error(10301, "subscribe: dup")
        if len(conn.subs) >= self.channel_limit():
            return error(10305, "subscribe: limit")
        if feed is None:
            self._next_chan_id += 1
            feed = self.feeds[key] = factory(self._next_chan_id)
        sub = Sub(conn, feed)
        feed.subs.append(sub)
        conn.subs[feed.chan_id] = sub
        conn.send_obj({"event": "subscribed", "channel": channel, "chanId": feed.chan_id, **echo})
        if not self.faults.data_paused:
            self._send_snapshot(sub, time.monotonic())

    def _feed_spec(self, channel: str, msg: dict[str, Any], echo: dict[str, Any]) -> Any:
        """(feed key, factory(chan_id) -> Feed) or an error text; fills defaults into echo."""
        if channel in ("candles", "status"):
            key = msg.get("key")
            if not isinstance(key, str):
                return "key: invalid"
            if channel == "candles":
                parts = key.split(":")
                if len(parts) != 3 or parts[0] != "trade" or parts[1] not in CANDLE_FRAMES:
                    return "key: invalid"
                candle_market = self.markets.get(parts[2])
                if candle_market is None:
                    return "symbol: invalid"
                frame_ms = CANDLE_FRAMES[parts[1]]
                return f"candles|{key}", lambda cid: CandlesFeed(
                    f"candles|{key}", cid, candle_market, interval_ms=frame_ms
                )
            parts = key.split(":")
            status_market = next(
                (
                    m
                    for m in self.markets.values()
                    if len(parts) == 3 and base_asset(parts[1]) == base_asset(m.symbol)
                ),
                None,
            )
            if parts[0] != "deriv" or status_market is None:
                return "key: invalid"
            return f"status|{key}", lambda cid: StatusFeed(f"status|{key}", cid, status_market)
        symbol = msg.get("symbol")
        if symbol is None and isinstance(msg.get("pair"), str):
            symbol = "t" + msg["pair"]
        market = self.markets.get(symbol) if isinstance(symbol, str) else None
        if market is None:
            return "symbol: invalid"
        echo.setdefault("symbol", market.symbol)
        echo.setdefault("pair", market.symbol[1:])
        if channel == "ticker":
            return f"ticker|{symbol}", lambda cid: TickerFeed(f"ticker|{symbol}", cid, market)
        if channel == "trades":
            return f"trades|{symbol}", lambda cid: TradesFeed(f"trades|{symbol}", cid, market)
        prec = msg.get("prec", "P0")
        freq = msg.get("freq", "F0")
        length = msg.get("len", "25")
        if prec not in BOOK_PRECISIONS:
            return "prec: invalid"
        if freq not in ("F0", "F1"):
            return "freq: invalid"
        try:
            n = int(length)
        except (TypeError, ValueError):
            return "len: invalid"
        if n not in BOOK_LENGTHS:
            return "len: invalid"
        echo.update(prec=prec, freq=freq, len=str(n))
        key = f"book|{symbol}|{prec}|{freq}|{n}"
        interval = self.config.f1_interval * self.time_scale if freq == "F1" else 0.0
        return key, lambda cid: BookFeed(
            key, cid, market, prec=prec, freq=freq, length=n, min_interval=interval
        )

    def _unsubscribe(self, conn: BitfinexConnection, msg: dict[str, Any]) -> None:
        chan_id = msg.get("chanId")
        sub = conn.subs.pop(chan_id, None) if isinstance(chan_id, int) else None
        if sub is None:
            conn.send_obj(
                {"event": "error", "msg": "unsubscribe: invalid", "code": 10400, "chanId": chan_id}
            )
            return
        self._detach(sub)
        conn.send_obj({"event": "unsubscribed", "status": "OK", "chanId": chan_id})

    def _detach(self, sub: Sub) -> None:
        feed = sub.feed
        if sub in feed.subs:
            feed.subs.remove(sub)
        if not feed.subs:
            self.feeds.pop(feed.key, None)

    # -- authenticated surface --------------------------------------------------------------------

    def _auth(self, conn: BitfinexConnection, msg: dict[str, Any]) -> None:
        if conn.authenticated:
            conn.send_obj(
                {
                    "event": "auth",
                    "status": "FAILED",
                    "chanId": 0,
                    "msg": "auth: dup",
                    "code": 10100,
                }
            )
            return
        if msg.get("apiKey") != self.config.api_key:
            conn.send_obj(
                {
                    "event": "auth",
                    "status": "FAILED",
                    "chanId": 0,
                    "msg": "apikey: invalid",
                    "code": 10100,
                }
            )
            return
        conn.authenticated = True
        conn.send_obj(
            {
                "event": "auth",
                "status": "OK",
                "chanId": 0,
                "userId": 1,
                "dms": msg.get("dms"),
                "auth_id": f"{self.rng.getrandbits(128):032x}",
                "caps": {"orders": {"read": 1, "write": 1}, "wallets": {"read": 1, "write": 0}},
            }
        )
        conn.send_account('"ps",[]')
        conn.send_account('"ws",[]')
        conn.send_account('"os",[]')

    def _on_input(self, conn: BitfinexConnection, msg: list[Any]) -> None:
        if not conn.authenticated:
            conn.send_obj({"event": "error", "msg": "auth: not authenticated", "code": 10100})
            return
        op = msg[1]
        payload = msg[3] if len(msg) > 3 and isinstance(msg[3], dict) else {}
        if op == "on":
            self._new_order(conn, payload)
        elif op == "oc":
            self._cancel_order(conn, payload)
        else:
            self._notify(conn, f"{op}-req", None, "ERROR", f"input {op!r} not supported by the sim")

    def _notify(
        self, conn: BitfinexConnection, kind: str, info: object, status: str, text: str
    ) -> None:
        conn.send_account(
            dumps(["n", [_ms(), kind, None, None, info, None, status, text]])[1:-1],
            notification=True,
        )

    def _new_order(self, conn: BitfinexConnection, p: dict[str, Any]) -> None:
        market = self.markets.get(p.get("symbol", ""))
        otype = p.get("type")
        try:
            amount = float(p.get("amount", ""))
            price = (
                float(p["price"])
                if "price" in p
                else (market.mid_t / market.price_scale if market else 0.0)
            )
        except (TypeError, ValueError):
            amount = price = 0.0
        if market is None or not isinstance(otype, str) or amount == 0.0 or price <= 0.0:
            self._notify(
                conn, "on-req", None, "ERROR", "Invalid order: check symbol, type, amount, price"
            )
            return
        self._next_order_id += 1
        mts = _ms()
        order: list[Any] = [None] * 32
        order[0] = self._next_order_id
        order[1] = p.get("gid")
        order[2] = p.get("cid")
        order[3] = market.symbol
        order[4] = order[5] = mts
        order[6] = num(amount)
        order[7] = num(amount)
        order[8] = otype
        order[12] = p.get("flags", 0)
        order[13] = "ACTIVE"
        order[16] = num(price)
        order[17] = 0
        order[18] = 0
        order[19] = 0
        order[23] = 0
        order[31] = p.get("meta", {})
        conn.orders[order[0]] = order
        side = "buy" if amount > 0 else "sell"
        size = f"{abs(num(amount))} {base_asset(market.symbol)}"
        text = f"Submitting {otype.lower()} {side} order for {size}."
        self._notify(conn, "on-req", order, "SUCCESS", text)
        conn.send_account(dumps(["on", order])[1:-1])

    def _cancel_order(self, conn: BitfinexConnection, p: dict[str, Any]) -> None:
        order_id = p.get("id")
        order = conn.orders.pop(order_id, None) if isinstance(order_id, int) else None
        if order is None:
            self._notify(conn, "oc-req", None, "ERROR", "Order not found.")
            return
        order[13] = "CANCELED"
        order[5] = _ms()
        self._notify(
            conn,
            "oc-req",
            order,
            "SUCCESS",
            f"Submitted for cancellation; waiting for confirmation (ID: {order[0]}).",
        )
        conn.send_account(dumps(["oc", order])[1:-1])

    # -- faults -----------------------------------------------------------------------------------

    def fault_info(self, code: int) -> int:
        frame = dumps({"event": "info", "code": code, "msg": _INFO_MSG[code]}).encode()
        conns = list(self.connections.values())
        for conn in conns:
            conn.send(frame)
        if code == 20051:
            self.close_all_later(
                self.config.reconnect_grace * self.time_scale, 1012, "server restart"
            )
        return len(conns)
