"""Small shared vocabulary: enums used by config, core and runtime alike."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ConnectionType", "DialectName", "Severity", "StrategyName"]


class ConnectionType(StrEnum):
    MARKET_DATA = "market_data"
    USER_DATA = "user_data"
    TRADING = "trading"
    SYSTEM = "system"

    @property
    def authenticated(self) -> bool:
        return self in (ConnectionType.USER_DATA, ConnectionType.TRADING)


class DialectName(StrEnum):
    RAW = "raw"
    BITFINEX = "bitfinex"
    BINANCE = "binance"
    BINANCE_USDM = "binance_usdm"
    OKX = "okx"
    BYBIT = "bybit"


class StrategyName(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_CONNECTIONS = "least_connections"
    LEAST_LOAD = "least_load"
    WEIGHTED_ROUND_ROBIN = "weighted_round_robin"
    LEAST_LATENCY = "least_latency"
    HEALTH_BASED = "health_based"
    ADAPTIVE = "adaptive"  # automatic choice among the six above (core.adaptive)
    PEAK_EWMA = "peak_ewma"  # P2C on peak-EWMA RTT x load x errors x health (Finagle-style)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]
