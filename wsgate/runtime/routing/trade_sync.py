"""Binance trade/aggTrade continuity across re-homing: the I/O half of :mod:`binance_trades`.

For each shared ``<symbol>@trade`` / ``@aggTrade`` subscription of a Binance route the hub
passes every upstream event through :meth:`TradeSync.on_data`. A pure
:class:`~wsgate.dialects.binance_trades.TradeContinuity` decides; this module fetches the
missed trades from the route's ``rest_url`` (``/trades``, ``/aggTrades?fromId=``) while the
new stream's frames are held, and delivers them, once and in order, before the held frames.
Without ``rest_url``, on a REST failure or past :data:`FETCH_TIMEOUT`, the held frames go
out at once and the gap is announced (counted, logged): a trade stream late by seconds is
worse for a bot than a gap it is told about.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from wsgate.core.subscriptions import Subscription, SubscriptionRegistry
from wsgate.core.types import DialectName
from wsgate.dialects import base as d
from wsgate.dialects.binance_trades import (
    BridgeResult,
    TradeAction,
    TradeContinuity,
    rest_path,
)
from wsgate.runtime.downstream.rest_proxy import RestProxy
from wsgate.runtime.routing.seams import Deliver
from wsgate.runtime.system.faults import Faults
from wsgate.urls import join_url

__all__ = ["TRADE_DIALECTS", "TradeSync", "TradeSyncStats"]

log = logging.getLogger("wsgate.trades")

TRADE_DIALECTS = frozenset({DialectName.BINANCE, DialectName.BINANCE_USDM})
CHANNELS = frozenset({"trade", "aggTrade"})
FETCH_TIMEOUT = 3.0  # seconds the new stream's trades may be held for a bridge


@dataclass(frozen=True)
class TradeSyncStats:
    tracked: int
    bridged: int  # gaps whose missed trades were all recovered and sent once
    announced: int  # gaps that could not be (fully) recovered
    trades_bridged: int
    trades_lost: int
    duplicates: int
    fetch_failures: int


@dataclass(eq=False)
class _Track:
    sub: Subscription
    key: d.SubKey
    cont: TradeContinuity
    task: asyncio.Task[None] | None = None


class TradeSync:
    def __init__(
        self,
        route: str,
        rest_url: str | None,
        registry: SubscriptionRegistry,
        *,
        faults: Faults,
        deliver: Deliver,
    ) -> None:
        self.route = route
        self.rest_url = rest_url.rstrip("/") if rest_url else None
        self.registry = registry
        self.faults = faults
        self.deliver = deliver
        self.rest = RestProxy()
        # By subscription (identity: cheaper than hashing its key on every frame).
        self.tracks: dict[Subscription, _Track] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.fetch_failures = 0
        # Counters of tracks that are gone (their subscription was dropped) stay counted.
        self._gone = TradeSyncStats(0, 0, 0, 0, 0, 0, 0)

    def __repr__(self) -> str:
        return f"<TradeSync {self.route} tracked={len(self.tracks)}>"

    def statistics(self) -> TradeSyncStats:
        g = self._gone
        conts = [t.cont for t in self.tracks.values()]
        return TradeSyncStats(
            len(self.tracks),
            g.bridged + sum(c.bridged for c in conts),
            g.announced + sum(c.announced for c in conts),
            g.trades_bridged + sum(c.trades_bridged for c in conts),
            g.trades_lost + sum(c.lost for c in conts),
            g.duplicates + sum(c.duplicates for c in conts),
            self.fetch_failures,
        )

    async def run(self) -> None:
        """Owns the fetches; runs inside the hub's TaskGroup until it stops."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await asyncio.Event().wait()
        finally:
            self._tg = None
            await self.rest.aclose()

    # ---------------------------------------------------------------- hot path
    def on_data(self, sub: Subscription, ev: d.ChannelData) -> d.ChannelData | None:
        """The event to fan out, or None (a duplicate, or held behind a fetch)."""
        tr = self.tracks.get(sub)
        if tr is None:
            key = cast(d.SubKey, sub.key)
            if key.channel not in CHANNELS:
                return ev
            tr = self._track(sub, key)
        if ev.kind is not d.DataKind.DATA:
            return ev
        tid = tr.cont.id_of(ev)
        if tid is None:
            return ev
        act = tr.cont.observe(tid, ev)
        if act is TradeAction.DELIVER:
            return ev
        if act is TradeAction.FETCH:
            self._start_fetch(tr)
        elif act is TradeAction.HOLD and tr.cont.over_limit:
            self._release(tr, tr.cont.give_up(), "too many frames held")
        return None

    def _track(self, sub: Subscription, key: d.SubKey) -> _Track:
        for s, t in list(self.tracks.items()):
            if self.registry.get(t.key) is not s:  # a dropped subscription
                self._forget(s)
        tr = self.tracks[sub] = _Track(sub, key, TradeContinuity(key))
        return tr

    def _forget(self, sub: Subscription) -> None:
        t = self.tracks.pop(sub)
        g, c = self._gone, t.cont
        self._gone = TradeSyncStats(
            0,
            g.bridged + c.bridged,
            g.announced + c.announced,
            g.trades_bridged + c.trades_bridged,
            g.trades_lost + c.lost,
            g.duplicates + c.duplicates,
            0,
        )
        if t.task is not None:
            t.task.cancel()

    # ---------------------------------------------------------------- actions
    def _start_fetch(self, tr: _Track) -> None:
        if self.rest_url is None or self._tg is None:
            self._release(tr, tr.cont.give_up(), "no rest_url to fetch the missed trades from")
            return
        tr.task = self._tg.create_task(self._fetch(tr), name=f"trades-{tr.key.name}")

    async def _fetch(self, tr: _Track) -> None:
        assert self.rest_url is not None
        url = join_url(self.rest_url, rest_path(tr.key, tr.cont.missed_after()))
        body: bytes | None = None
        reason = ""
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                resp = await self.rest.fetch(url)
            if resp.status_code == 200:
                body = bytes(resp.body)
            else:
                reason = f"{url} answered {resp.status_code}"
        except TimeoutError:
            reason = f"{url} took longer than {FETCH_TIMEOUT:g}s"
        except Exception as exc:  # the stream must go on whatever REST does
            self.faults.record("trades.fetch", exc, f"route {self.route}")
            reason = f"{url} failed: {exc!r}"
        finally:
            tr.task = None
        if self.tracks.get(tr.sub) is not tr or not tr.cont.fetching:
            return  # the subscription went away, or the held frames went out meanwhile
        if body is None:
            self.fetch_failures += 1
            result = tr.cont.give_up()
        else:
            result = tr.cont.bridge(body)
        self._release(tr, result, reason)

    def _release(self, tr: _Track, result: BridgeResult, reason: str) -> None:
        if tr.task is not None:
            tr.task.cancel()
            tr.task = None
        if result.bridged:
            log.info(
                "route %s: %s gap bridged: %d missed trade(s) sent once from REST",
                self.route,
                tr.key.name,
                result.recovered,
            )
        else:
            log.warning(
                "route %s: %s gap announced: %d trade(s) missed, %d recovered%s",
                self.route,
                tr.key.name,
                result.lost + result.recovered,
                result.recovered,
                f" ({reason})" if reason else "",
            )
        for frame in result.frames:
            self.deliver(tr.sub, frame)
