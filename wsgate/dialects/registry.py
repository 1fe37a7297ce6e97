"""Dialect lookup by name, so the hub and config never import a dialect module directly."""

from __future__ import annotations

from wsgate.core.types import DialectName
from wsgate.dialects.base import Dialect
from wsgate.dialects.binance import BinanceDialect
from wsgate.dialects.binance_usdm import BinanceUsdmDialect
from wsgate.dialects.bitfinex import BitfinexDialect
from wsgate.dialects.bybit import BybitDialect
from wsgate.dialects.okx import OkxDialect
from wsgate.dialects.raw import RawDialect

__all__ = ["dialect_for"]


def dialect_for(name: DialectName | str) -> Dialect:
    """A fresh dialect object (they hold only small caches, one per route is fine)."""
    match DialectName(name):
        case DialectName.BITFINEX:
            return BitfinexDialect()
        case DialectName.BINANCE:
            return BinanceDialect()
        case DialectName.BINANCE_USDM:
            return BinanceUsdmDialect()
        case DialectName.OKX:
            return OkxDialect()
        case DialectName.BYBIT:
            return BybitDialect()
        case DialectName.RAW:
            return RawDialect()
