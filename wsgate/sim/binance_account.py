"""The private half of the Binance simulator: API keys, listen keys, the WebSocket API.

* REST ``POST/PUT/DELETE /api/v3/userDataStream`` (``X-MBX-APIKEY`` header; the
  listen key in the query or a form body) create, keep alive and close listen keys.
  ``POST`` for a key that already has a live listen key returns that one, as Binance does.
* ``/ws/<listenKey>`` (and ``SUBSCRIBE`` to a listen key on ``/ws`` or ``/stream``)
  streams the account's user data events.
* ``/ws-api/v3`` answers ``ping``, ``time``, ``order.place`` (signed: HMAC-SHA256 over the
  sorted, url-encoded parameters, as the official clients sign), ``userDataStream.start/
  ping/stop`` and ``userDataStream.subscribe.signature`` / ``userDataStream.unsubscribe``.
* Placing an order emits ``executionReport`` (NEW, then TRADE for a MARKET order) and
  ``outboundAccountPosition`` to every listen key and WebSocket API subscription of the
  account.

Answers have Binance's shapes: ``{"id", "status", "result", "rateLimits"}`` on the
WebSocket API, ``{"code", "msg"}`` errors on REST. Pure bookkeeping: the owning
simulator sends what :class:`Accounts` returns.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["DEFAULT_API_KEYS", "LISTEN_KEY_TTL_MS", "Accounts", "ListenKey"]

DEFAULT_API_KEYS = {"simApiKey0000000000000001": "simSecret0000000000000001"}
LISTEN_KEY_TTL_MS = 60 * 60 * 1000  # a listen key lives 60 minutes after its last keepalive
_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
]

_BAD_KEY = "Invalid API-key, IP, or permissions for action."
_NO_KEY = "This listenKey does not exist."
Emit = Callable[[str, dict[str, Any]], None]  # (api key, event): the sim delivers it


@dataclass
class ListenKey:
    key: str
    api_key: str
    expires_at: int
    keepalives: int = 0


@dataclass
class _Account:
    balances: dict[str, float] = field(default_factory=lambda: {"BTC": 1.0, "USDT": 100000.0})


@dataclass(frozen=True)
class _OrderAsk:
    """A signed ``order.place`` that passed the checks, with its ids and time given."""

    api_key: str
    symbol: str
    side: str
    kind: str
    qty: float
    price: float
    order_id: int
    client_id: str
    now: int


class Accounts:
    def __init__(
        self,
        rng: random.Random,
        clock_ms: Callable[[], int],
        api_keys: Mapping[str, str] = DEFAULT_API_KEYS,
    ) -> None:
        self.keys = dict(api_keys)
        self._rng = rng
        self._now = clock_ms
        self.listen_keys: dict[str, ListenKey] = {}
        self._accounts: dict[str, _Account] = {k: _Account() for k in self.keys}
        self._order_ids = itertools.count(1000)
        self._trade_ids = itertools.count(500)
        self._sub_ids = itertools.count(0)
        self.orders_placed = 0
        self.keepalives = 0
        self.rest_requests = 0

    # ---------------------------------------------------------------- listen keys
    def live_key(self, key: str) -> ListenKey | None:
        lk = self.listen_keys.get(key)
        if lk is None:
            return None
        if lk.expires_at <= self._now():
            del self.listen_keys[key]
            return None
        return lk

    def keys_of(self, api_key: str) -> list[str]:
        return [k for k, lk in self.listen_keys.items() if lk.api_key == api_key]

    def _create(self, api_key: str) -> str:
        for key in self.keys_of(api_key):
            lk = self.live_key(key)
            if lk is not None:
                lk.expires_at = self._now() + LISTEN_KEY_TTL_MS
                return key
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        key = ""
        while not any(c.isdigit() for c in key):  # Binance's keys mix letters and digits
            key = "".join(self._rng.choice(alphabet) for _ in range(60))
        self.listen_keys[key] = ListenKey(key, api_key, self._now() + LISTEN_KEY_TTL_MS)
        return key

    def _keepalive(self, api_key: str, key: str) -> bool:
        lk = self.live_key(key)
        if lk is None or lk.api_key != api_key:
            return False
        lk.expires_at = self._now() + LISTEN_KEY_TTL_MS
        lk.keepalives += 1
        self.keepalives += 1
        return True

    def _close(self, api_key: str, key: str) -> bool:
        lk = self.live_key(key)
        if lk is None or lk.api_key != api_key:
            return False
        del self.listen_keys[key]
        return True

    def _account_key(self, api_key: str, asked: str) -> str:
        """The listen key a keepalive or close acts on: on spot, the one the request names."""
        return asked

    def _kept_alive(self, key: str) -> dict[str, Any]:
        """What a successful keepalive answers: spot's answer is empty."""
        return {}

    # ---------------------------------------------------------------- REST
    def rest(
        self, method: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], str | None]:
        """The listen-key path (spot ``/api/v3/userDataStream``, futures ``/fapi/v1/listenKey``):
        (status, JSON body, listen key closed or None)."""
        self.rest_requests += 1
        api_key = headers.get("X-MBX-APIKEY", "")
        if api_key not in self.keys:
            return 401, {"code": -2015, "msg": _BAD_KEY}, None
        params = dict(query)
        if body:
            params.update(parse_qsl(body.decode("utf-8", "replace")))
        if method == "POST":
            return 200, {"listenKey": self._create(api_key)}, None
        key = self._account_key(api_key, params.get("listenKey", ""))
        if method == "PUT":
            if self._keepalive(api_key, key):
                return 200, self._kept_alive(key), None
            return 400, {"code": -1125, "msg": _NO_KEY}, None
        if method == "DELETE":
            if self._close(api_key, key):
                return 200, {}, key
            return 400, {"code": -1125, "msg": _NO_KEY}, None
        return 405, {"code": -1, "msg": f"method {method} not allowed"}, None

    # ---------------------------------------------------------------- WebSocket API
    def ws_api(self, req: object, emit: Emit) -> tuple[dict[str, Any], tuple[str, int] | None]:
        """One WebSocket API request: (answer, new subscription (api key, id) or None)."""
        if not isinstance(req, dict):
            return self._fail(None, 400, -1102, "Malformed request."), None
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params", {})
        if not isinstance(params, dict):
            return self._fail(rid, 400, -1102, "Parameter 'params' must be an object."), None
        if method == "ping":
            return self._ok(rid, {}), None
        if method == "time":
            return self._ok(rid, {"serverTime": self._now()}), None
        if method in ("userDataStream.start", "userDataStream.ping", "userDataStream.stop"):
            return self._listen_key_method(rid, method, params), None
        if method == "userDataStream.subscribe.signature":
            api_key, err = self._verify(rid, params)
            if err is not None:
                return err, None
            sub = next(self._sub_ids)
            return self._ok(rid, {"subscriptionId": sub}), (api_key, sub)
        if method == "userDataStream.unsubscribe":
            return self._ok(rid, {}), None
        if method == "order.place":
            return self._place(rid, params, emit), None
        return self._fail(rid, 400, -1100, f"Unknown method {method!r}."), None

    def _listen_key_method(
        self, rid: object, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        api_key = str(params.get("apiKey", ""))
        if api_key not in self.keys:
            return self._fail(rid, 401, -2015, _BAD_KEY)
        if method == "userDataStream.start":
            return self._ok(rid, {"listenKey": self._create(api_key)})
        key = self._account_key(api_key, str(params.get("listenKey", "")))
        if method.endswith("ping"):
            if not self._keepalive(api_key, key):
                return self._fail(rid, 400, -1125, _NO_KEY)
            return self._ok(rid, self._kept_alive(key))
        if not self._close(api_key, key):
            return self._fail(rid, 400, -1125, _NO_KEY)
        return self._ok(rid, {})

    def _verify(self, rid: object, params: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        api_key = str(params.get("apiKey", ""))
        secret = self.keys.get(api_key)
        if secret is None:
            return api_key, self._fail(rid, 401, -2015, _BAD_KEY)
        # Values as Binance reads them off the JSON: true/false, not Python's True/False.
        payload = urlencode(
            sorted((k, _as_signed(v)) for k, v in params.items() if k != "signature")
        )
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(params.get("signature", ""))):
            return api_key, self._fail(rid, 400, -1022, "Signature for this request is not valid.")
        return api_key, None

    def _order_ask(self, rid: object, params: dict[str, Any]) -> _OrderAsk | dict[str, Any]:
        """The checked order of an ``order.place``, or the error to answer."""
        api_key, err = self._verify(rid, params)
        if err is not None:
            return err
        try:
            symbol = str(params["symbol"]).upper()
            side = str(params["side"]).upper()
            kind = str(params["type"]).upper()
            qty = float(params["quantity"])
        except (KeyError, ValueError):
            return self._fail(rid, 400, -1102, "Mandatory parameter missing or malformed.")
        if side not in ("BUY", "SELL") or qty <= 0:
            return self._fail(rid, 400, -1102, "Bad side or quantity.")
        price = float(params.get("price", 0) or 0) or 30000.0
        order_id = next(self._order_ids)
        client_id = str(params.get("newClientOrderId") or f"sim{order_id}")
        self.orders_placed += 1
        return _OrderAsk(api_key, symbol, side, kind, qty, price, order_id, client_id, self._now())

    def _place(self, rid: object, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        ask = self._order_ask(rid, params)
        if not isinstance(ask, _OrderAsk):
            return ask
        api_key, symbol, side, kind, qty = ask.api_key, ask.symbol, ask.side, ask.kind, ask.qty
        price, order_id, client_id, now = ask.price, ask.order_id, ask.client_id, ask.now
        base = {
            "e": "executionReport",
            "E": now,
            "s": symbol,
            "c": client_id,
            "S": side,
            "o": kind,
            "f": str(params.get("timeInForce", "GTC")),
            "q": f"{qty:.8f}",
            "p": f"{price:.2f}" if kind != "MARKET" else "0.00000000",
            "i": order_id,
            "T": now,
            "O": now,
        }
        emit(api_key, {**base, "x": "NEW", "X": "NEW", "l": "0.00000000", "z": "0.00000000"})
        status = "NEW"
        if kind == "MARKET":
            status = "FILLED"
            trade = next(self._trade_ids)
            emit(
                api_key,
                {
                    **base,
                    "x": "TRADE",
                    "X": "FILLED",
                    "l": f"{qty:.8f}",
                    "z": f"{qty:.8f}",
                    "L": f"{price:.2f}",
                    "t": trade,
                },
            )
            bal = self._accounts.setdefault(api_key, _Account()).balances
            sign = 1.0 if side == "BUY" else -1.0
            bal["BTC"] = bal.get("BTC", 0.0) + sign * qty
            bal["USDT"] = bal.get("USDT", 0.0) - sign * qty * price
            emit(
                api_key,
                {
                    "e": "outboundAccountPosition",
                    "E": now,
                    "u": now,
                    "B": [{"a": a, "f": f"{v:.8f}", "l": "0.00000000"} for a, v in bal.items()],
                },
            )
        return self._ok(
            rid,
            {
                "symbol": symbol,
                "orderId": order_id,
                "clientOrderId": client_id,
                "transactTime": now,
                "status": status,
                "type": kind,
                "side": side,
                "origQty": f"{qty:.8f}",
            },
        )

    @staticmethod
    def _ok(rid: object, result: dict[str, Any] | list[Any]) -> dict[str, Any]:
        return {"id": rid, "status": 200, "result": result, "rateLimits": _RATE_LIMITS}

    @staticmethod
    def _fail(rid: object, status: int, code: int, msg: str) -> dict[str, Any]:
        return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}


def _as_signed(value: object) -> str:
    """A JSON parameter value as it enters the signed query string."""
    return value if isinstance(value, str) else json.dumps(value)
