"""The private half of the USD-M futures simulator: listen keys and the futures WebSocket API.

Spot's bookkeeping (:mod:`wsgate.sim.binance_account`: API keys, HMAC checks, listen keys
that live 60 minutes) with the futures shapes:

* REST ``POST/PUT/DELETE /fapi/v1/listenKey`` (``X-MBX-APIKEY``). On fapi the listen key
  belongs to the account: ``PUT`` and ``DELETE`` act on the account's live key (a
  ``listenKey`` parameter, which python-binance sends, is accepted), ``POST`` and ``PUT``
  answer ``{"listenKey": ...}``.
* ``/ws-fapi/v1`` answers ``order.place`` (signed like spot's), ``account.balance``,
  ``userDataStream.start/ping/stop`` and ``ping``/``time``.
* Placing an order emits ``ORDER_TRADE_UPDATE`` (NEW, then TRADE for a MARKET order) and
  ``ACCOUNT_UPDATE`` (balances and the position) to the account's listen key.
"""

from __future__ import annotations

from typing import Any

from wsgate.sim.binance_account import Accounts, Emit, _Account, _OrderAsk

__all__ = ["UsdmAccounts"]


class UsdmAccounts(Accounts):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positions: dict[tuple[str, str], float] = {}  # (symbol, position side) -> amount

    def _account_key(self, api_key: str, asked: str) -> str:
        """The listen key a PUT/DELETE acts on: the one asked for, else the account's."""
        if asked:
            return asked
        live = [k for k in self.keys_of(api_key) if self.live_key(k) is not None]
        return live[0] if live else ""

    def _kept_alive(self, key: str) -> dict[str, Any]:
        return {"listenKey": key}

    def ws_api(self, req: object, emit: Emit) -> tuple[dict[str, Any], tuple[str, int] | None]:
        if isinstance(req, dict) and req.get("method") == "account.balance":
            params = req.get("params", {})
            api_key, err = self._verify(req.get("id"), params if isinstance(params, dict) else {})
            if err is not None:
                return err, None
            return self._ok(req.get("id"), self._balances(api_key)), None
        if isinstance(req, dict) and req.get("method") == "userDataStream.subscribe.signature":
            return self._fail(req.get("id"), 400, -1100, "Unknown method."), None
        return super().ws_api(req, emit)

    def _balances(self, api_key: str) -> list[dict[str, Any]]:
        bal = self._accounts[api_key].balances if api_key in self._accounts else {}
        return [
            {
                "accountAlias": "sim",
                "asset": a,
                "balance": f"{v:.8f}",
                "availableBalance": f"{v:.8f}",
            }
            for a, v in bal.items()
        ]

    def _place(self, rid: object, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        ask = self._order_ask(rid, params)
        if not isinstance(ask, _OrderAsk):
            return ask
        api_key, symbol, side, kind, qty = ask.api_key, ask.symbol, ask.side, ask.kind, ask.qty
        price, order_id, client_id, now = ask.price, ask.order_id, ask.client_id, ask.now
        pos_side = str(params.get("positionSide", "BOTH"))
        order = {
            "s": symbol,
            "c": client_id,
            "S": side,
            "o": kind,
            "f": str(params.get("timeInForce", "GTC")),
            "q": f"{qty:.3f}",
            "p": f"{price:.2f}" if kind != "MARKET" else "0",
            "ap": "0",
            "sp": "0",
            "i": order_id,
            "l": "0",
            "z": "0",
            "L": "0",
            "N": "USDT",
            "n": "0",
            "T": now,
            "t": 0,
            "b": "0",
            "a": "0",
            "m": False,
            "R": str(params.get("reduceOnly", "false")).lower() == "true",
            "wt": "CONTRACT_PRICE",
            "ot": kind,
            "ps": pos_side,
            "cp": False,
            "rp": "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        }
        emit(api_key, _update(now, {**order, "x": "NEW", "X": "NEW"}))
        status, executed = "NEW", "0"
        if kind == "MARKET":
            status, executed = "FILLED", f"{qty:.3f}"
            fee = qty * price * 0.0004
            fill = {
                "x": "TRADE",
                "X": "FILLED",
                "l": executed,
                "z": executed,
                "L": f"{price:.2f}",
                "ap": f"{price:.2f}",
                "n": f"{fee:.8f}",
                "t": next(self._trade_ids),
            }
            emit(api_key, _update(now, {**order, **fill}))
            emit(
                api_key, self._account_update(api_key, now, symbol, side, qty, price, fee, pos_side)
            )
        return self._ok(
            rid,
            {
                "orderId": order_id,
                "symbol": symbol,
                "status": status,
                "clientOrderId": client_id,
                "price": order["p"],
                "avgPrice": f"{price:.2f}" if kind == "MARKET" else "0.00",
                "origQty": f"{qty:.3f}",
                "executedQty": executed,
                "cumQty": executed,
                "cumQuote": f"{qty * price:.2f}" if kind == "MARKET" else "0",
                "timeInForce": order["f"],
                "type": kind,
                "reduceOnly": order["R"],
                "closePosition": False,
                "side": side,
                "positionSide": pos_side,
                "stopPrice": "0",
                "workingType": "CONTRACT_PRICE",
                "priceProtect": False,
                "origType": kind,
                "priceMatch": "NONE",
                "selfTradePreventionMode": "EXPIRE_MAKER",
                "goodTillDate": 0,
                "updateTime": now,
            },
        )

    def _account_update(
        self,
        api_key: str,
        now: int,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        fee: float,
        pos_side: str,
    ) -> dict[str, Any]:
        bal = self._accounts.setdefault(api_key, _Account()).balances
        usdt = bal["USDT"] = bal.get("USDT", 0.0) - fee
        amount = self.positions.get((symbol, pos_side), 0.0) + (qty if side == "BUY" else -qty)
        self.positions[(symbol, pos_side)] = amount
        return {
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": now,
            "a": {
                "m": "ORDER",
                "B": [{"a": "USDT", "wb": f"{usdt:.8f}", "cw": f"{usdt:.8f}", "bc": "0"}],
                "P": [
                    {
                        "s": symbol,
                        "pa": f"{amount:.3f}",
                        "ep": f"{price:.2f}",
                        "bep": f"{price:.2f}",
                        "cr": "0",
                        "up": "0",
                        "mt": "cross",
                        "iw": "0",
                        "ps": pos_side,
                    }
                ],
            },
        }


def _update(now: int, order: dict[str, Any]) -> dict[str, Any]:
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": order}
