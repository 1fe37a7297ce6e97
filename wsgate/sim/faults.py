"""Fault injection shared by both simulators.

A :class:`Faults` object holds the fault *state* a simulator consults on every frame (stall,
latency, handshake rejection, channel limit, maintenance) and forwards *actions* (drop, info,
serverShutdown, malformed frames) to the simulator that owns it through the small
:class:`FaultTarget` protocol. Tests call the methods in-process; at run time the same methods
are reachable over HTTP on the simulator's own port (``GET /_sim/fault?kind=...``) through
:meth:`Faults.apply`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["FaultError", "FaultStatistics", "FaultTarget", "Faults"]

logger = logging.getLogger("wsgate.sim")

_INFO_CODES = (20051, 20060, 20061)
_REJECT_STATUSES = (429, 503)


class FaultError(ValueError):
    """A fault request is malformed or not supported by this simulator."""


class FaultTarget(Protocol):
    """What a simulator must offer so that :class:`Faults` can act on it."""

    def fault_drop(self, n: int | None) -> int: ...
    def fault_info(self, code: int) -> int: ...
    def fault_server_shutdown(self) -> int: ...
    def fault_malformed(self, count: int) -> int: ...
    def fault_resume(self) -> None: ...


@dataclass(frozen=True)
class FaultStatistics:
    stalled: bool
    maintenance: bool
    latency_ms: float
    reject_status: int | None
    reject_remaining: int
    channel_limit: int | None
    counts: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "stalled": self.stalled,
            "maintenance": self.maintenance,
            "latency_ms": self.latency_ms,
            "reject_status": self.reject_status,
            "reject_remaining": self.reject_remaining,
            "channel_limit": self.channel_limit,
            "counts": dict(self.counts),
        }


class Faults:
    """Fault state and actions for one simulator. ``clock`` is the event loop's ``time``."""

    def __init__(self, name: str, target: FaultTarget, clock: Callable[[], float]) -> None:
        self.name = name
        self._target = target
        self._clock = clock
        self._stalled_until: float | None = None
        self.maintenance = False
        self.latency_s = 0.0  # seconds added before every outgoing frame
        self.max_channels: int | None = None
        self._reject_status: int | None = None
        self._reject_remaining = 0
        self._reject_retry_after: float | None = None
        self._bad_checksums = 0
        self._counts: dict[str, int] = {}

    def __repr__(self) -> str:
        active = [k for k, on in self._active().items() if on]
        return f"Faults({self.name!r}, active={active})"

    # -- state consulted by the simulator on the hot path ----------------------------------------

    @property
    def stalled(self) -> bool:
        until = self._stalled_until
        if until is None:
            return False
        if self._clock() >= until:
            self._stalled_until = None
            logger.info("sim %s: stall ended after its duration", self.name)
            self._target.fault_resume()
            return False
        return True

    @property
    def data_paused(self) -> bool:
        """Channel data and heartbeats are withheld (stall or maintenance)."""
        return self.maintenance or self.stalled

    def take_handshake_rejection(self) -> tuple[int, float | None] | None:
        """Consume one pending rejection: (status, retry_after) or None to accept."""
        if self._reject_remaining <= 0 or self._reject_status is None:
            return None
        self._reject_remaining -= 1
        self._count("handshake_rejected")
        return self._reject_status, self._reject_retry_after

    def take_bad_checksum(self) -> bool:
        """Consume one pending corrupted book checksum (Bitfinex): True to send a wrong ``cs``."""
        if self._bad_checksums <= 0:
            return False
        self._bad_checksums -= 1
        self._count("bad_checksum_sent")
        return True

    # -- faults ------------------------------------------------------------------------------

    def drop(self, n: int | None = None) -> int:
        """Abort (TCP reset, no close frame) ``n`` connections, or all; returns how many."""
        if n is not None and n < 0:
            raise FaultError("drop: n must be >= 0")
        done = self._target.fault_drop(n)
        self._record("drop", "n=%s dropped=%d", n, done)
        return done

    def stall(self, seconds: float | None = None) -> None:
        """Keep TCP and ping/pong alive but withhold channel data and heartbeats."""
        if seconds is not None and seconds <= 0:
            raise FaultError("stall: seconds must be > 0")
        self._stalled_until = math.inf if seconds is None else self._clock() + seconds
        self._record("stall", "seconds=%s", seconds)

    def resume(self) -> None:
        """End a stall (and a maintenance window) now."""
        was = self._stalled_until is not None or self.maintenance
        self._stalled_until = None
        self.maintenance = False
        self._record("resume", "was_paused=%s", was)
        self._target.fault_resume()

    def latency(self, ms: float) -> None:
        """Delay every outgoing frame by ``ms`` milliseconds (0 disables)."""
        if ms < 0:
            raise FaultError("latency: ms must be >= 0")
        self.latency_s = ms / 1000.0
        self._record("latency", "ms=%s", ms)

    def info(self, code: int) -> int:
        """Bitfinex info event: 20051 restart, 20060 maintenance start, 20061 maintenance end."""
        if code not in _INFO_CODES:
            raise FaultError(f"info: code must be one of {_INFO_CODES}, got {code}")
        if code == 20060:
            self.maintenance = True
        elif code == 20061:
            self.maintenance = False
        sent = self._target.fault_info(code)
        self._record("info", "code=%d sent=%d", code, sent)
        if code == 20061:
            self._target.fault_resume()
        return sent

    def server_shutdown(self) -> int:
        """Binance ``serverShutdown`` event, then close every connection after the grace."""
        sent = self._target.fault_server_shutdown()
        self._record("server_shutdown", "sent=%d", sent)
        return sent

    def reject_handshakes(
        self, status: int = 429, count: int = 1, retry_after: float | None = None
    ) -> None:
        """Answer the next ``count`` handshakes with HTTP ``status`` (429 carries Retry-After)."""
        if status not in _REJECT_STATUSES:
            raise FaultError(f"reject_handshakes: status must be one of {_REJECT_STATUSES}")
        if count < 0:
            raise FaultError("reject_handshakes: count must be >= 0")
        if status == 429 and retry_after is None:
            retry_after = 1.0
        self._reject_status = status
        self._reject_remaining = count
        self._reject_retry_after = retry_after
        self._record(
            "reject_handshakes", "status=%d count=%d retry_after=%s", status, count, retry_after
        )

    def channel_limit(self, n: int) -> None:
        """Set the maximum channels (Bitfinex) / streams (Binance) per connection."""
        if n < 0:
            raise FaultError("channel_limit: n must be >= 0")
        self.max_channels = n
        self._record("channel_limit", "n=%d", n)

    def malformed(self, count: int = 1) -> int:
        """Send ``count`` garbage frames (bad JSON, wrong shapes) to every connection."""
        if count < 1:
            raise FaultError("malformed: count must be >= 1")
        sent = self._target.fault_malformed(count)
        self._record("malformed", "count=%d connections=%d", count, sent)
        return sent

    def bad_checksum(self, count: int = 1) -> None:
        """Make the next ``count`` book checksum frames wrong (a book gone silently bad)."""
        if count < 1:
            raise FaultError("bad_checksum: count must be >= 1")
        self._bad_checksums += count
        self._record("bad_checksum", "count=%d", count)

    def clear(self) -> None:
        """Forget every standing fault (stall, maintenance, latency, rejections, limits)."""
        self._stalled_until = None
        self.maintenance = False
        self.latency_s = 0.0
        self.max_channels = None
        self._reject_status = None
        self._reject_remaining = 0
        self._reject_retry_after = None
        self._bad_checksums = 0
        self._record("clear", "")
        self._target.fault_resume()

    # -- HTTP entry point ----------------------------------------------------------------------

    def apply(self, kind: str, params: Mapping[str, str]) -> dict[str, object]:
        """Run a fault named by ``kind`` with string parameters (from a query string)."""
        try:
            result: object = None
            if kind == "drop":
                result = self.drop(_opt_int(params, "n"))
            elif kind == "stall":
                self.stall(_opt_float(params, "seconds"))
            elif kind == "resume":
                self.resume()
            elif kind == "latency":
                self.latency(_req_float(params, "ms"))
            elif kind == "info":
                result = self.info(int(_req_float(params, "code")))
            elif kind == "server_shutdown":
                result = self.server_shutdown()
            elif kind == "reject_handshakes":
                self.reject_handshakes(
                    _opt_int(params, "status") or 429,
                    _opt_int(params, "count") or 1,
                    _opt_float(params, "retry_after"),
                )
            elif kind == "channel_limit":
                self.channel_limit(int(_req_float(params, "n")))
            elif kind == "malformed":
                result = self.malformed(_opt_int(params, "count") or 1)
            elif kind == "bad_checksum":
                self.bad_checksum(_opt_int(params, "count") or 1)
            elif kind == "clear":
                self.clear()
            else:
                raise FaultError(f"unknown fault kind {kind!r}")
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
        return {"ok": True, "kind": kind, "result": result, "faults": self.statistics().as_dict()}

    def statistics(self) -> FaultStatistics:
        return FaultStatistics(
            stalled=self.stalled,
            maintenance=self.maintenance,
            latency_ms=self.latency_s * 1000.0,
            reject_status=self._reject_status if self._reject_remaining else None,
            reject_remaining=self._reject_remaining,
            channel_limit=self.max_channels,
            counts=dict(self._counts),
        )

    # -- internals ------------------------------------------------------------------------------

    def _active(self) -> dict[str, bool]:
        return {
            "stall": self._stalled_until is not None,
            "maintenance": self.maintenance,
            "latency": self.latency_s > 0,
            "reject": self._reject_remaining > 0,
            "channel_limit": self.max_channels is not None,
        }

    def _count(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1

    def _record(self, kind: str, fmt: str, *args: object) -> None:
        self._count(kind)
        logger.warning("sim %s: fault %s " + fmt, self.name, kind, *args)


def _opt_int(params: Mapping[str, str], key: str) -> int | None:
    value = params.get(key)
    return None if value in (None, "") else int(value)


def _opt_float(params: Mapping[str, str], key: str) -> float | None:
    value = params.get(key)
    return None if value in (None, "") else float(value)


def _req_float(params: Mapping[str, str], key: str) -> float:
    value = params.get(key)
    if value is None or value == "":
        raise FaultError(f"missing parameter {key!r}")
    return float(value)
