"""Binance diff-depth continuity across re-homing: the I/O half of :mod:`binance_depth`.

For each shared ``<symbol>@depth`` subscription of a Binance route the hub passes every
upstream event through :meth:`DepthSync.on_data`. A pure
:class:`~wsgate.dialects.binance_depth.DepthBook` decides; this module fetches REST
snapshots (``<rest_url>/depth``, through the same bounded :class:`RestProxy` GET the route's
pass-through uses), emits the synthetic bridge event, and closes the depth sessions with 1013
when a gap cannot be bridged (REST down, a gap before the first snapshot): a clean close
makes a bot resync on its own, while a silent gap would corrupt its book.

Routes without ``rest_url`` get no DepthSync: bots there see the exchange's ids as they come.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import cast

from wsgate.core.subscriptions import Subscription, SubscriptionRegistry
from wsgate.core.types import DialectName
from wsgate.dialects import base as d
from wsgate.dialects.binance_depth import (
    Action,
    DepthBook,
    DepthBookStatistics,
    Phase,
    Snapshot,
    SnapshotOutcome,
    parse_event,
    parse_snapshot,
    render_event,
)
from wsgate.dialects.jsonspan import int_span
from wsgate.runtime.downstream.rest_proxy import RestProxy
from wsgate.runtime.routing.seams import CloseSessions, Deliver
from wsgate.runtime.system.faults import Faults
from wsgate.urls import join_url

__all__ = ["DepthSync", "DepthSyncStats"]

log = logging.getLogger("wsgate.depth")

SNAPSHOT_LIMIT = 1000  # Binance weight 50; deeper levels are kept from the diffs
RESYNC_ATTEMPTS = 3  # snapshot fetches (failed or too old) before the sessions are closed
RETRY_BASE = 0.25  # seconds, doubled per attempt
SEED_RETRY_CAP = 30.0
CLOSE_CODE = 1013
CLOSE_REASON = "depth resync failed; reconnect and fetch a new snapshot"
# Spot chains diff depth by U == u + 1, USD-M futures by pu == previous u.
DEPTH_DIALECTS = frozenset({DialectName.BINANCE, DialectName.BINANCE_USDM})


@dataclass(frozen=True)
class DepthSyncStats:
    tracked: int
    snapshots: int
    snapshot_failures: int
    bridges: int
    failures: int
    books: dict[str, DepthBookStatistics]


@dataclass(eq=False)
class _Track:
    sub: Subscription
    key: d.SubKey
    book: DepthBook
    stream: str
    task: asyncio.Task[None] | None = None


class DepthSync:
    def __init__(
        self,
        route: str,
        rest_url: str,
        registry: SubscriptionRegistry,
        *,
        faults: Faults,
        deliver: Deliver,
        close_sessions: CloseSessions,
        snapshot_limit: int = SNAPSHOT_LIMIT,
        futures: bool = False,
    ) -> None:
        self.futures = futures  # USD-M: the pu chain (binance_depth.DepthBook)
        self.route = route
        self.registry = registry  # to tell a live subscription from a dropped one
        self.faults = faults
        self.deliver = deliver
        self.close_sessions = close_sessions
        self.rest_url = rest_url.rstrip("/")
        self.snapshot_limit = snapshot_limit
        self.rest = RestProxy()
        self.tracks: dict[d.SubKey, _Track] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.snapshots = 0
        self.snapshot_failures = 0
        self.bridges = 0
        self.failures = 0

    def __repr__(self) -> str:
        return f"<DepthSync {self.rest_url} tracked={len(self.tracks)} bridges={self.bridges}>"

    def statistics(self) -> DepthSyncStats:
        return DepthSyncStats(
            len(self.tracks),
            self.snapshots,
            self.snapshot_failures,
            self.bridges,
            self.failures,
            {str(k): t.book.statistics() for k, t in self.tracks.items()},
        )

    async def run(self) -> None:
        """Owns the snapshot fetches; runs inside the hub's TaskGroup until it stops."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await asyncio.Event().wait()
        finally:
            self._tg = None
            await self.rest.aclose()

    # ---------------------------------------------------------------- hot path
    def on_data(self, sub: Subscription, ev: d.ChannelData) -> d.ChannelData | None:
        """The event to fan out (maybe with ``U`` rewritten), or None to withhold it."""
        key = cast(d.SubKey, sub.key)
        if key.channel != "depth" or ev.kind is not d.DataKind.DATA:
            return ev
        tr = self.tracks.get(key)
        if tr is None or tr.sub is not sub:
            tr = self._track(sub, key, str(ev.channel))
        dev = parse_event(ev.text[ev.start : ev.end])
        if dev is None:
            return ev
        act = tr.book.observe(dev)
        out: d.ChannelData | None = None
        if act is Action.DELIVER:
            out = ev
        elif act is Action.REWRITE:
            out = _with_field(ev, "pu" if self.futures else "U", tr.book.rewrite_u)
        elif act is Action.BRIDGE:
            self._emit_bridge(tr)
        elif act is Action.FAIL:
            self._close_sessions(tr)
            return None
        if tr.book.wants_snapshot and tr.task is None:
            self._start_fetch(tr)
        return out

    def _track(self, sub: Subscription, key: d.SubKey, stream: str) -> _Track:
        registry = self.registry
        for k, t in list(self.tracks.items()):
            if registry.get(k) is not t.sub:
                del self.tracks[k]  # a dropped subscription; its fetch loop notices and ends
        book = DepthBook(stream, snapshot_limit=self.snapshot_limit, futures=self.futures)
        tr = self.tracks[key] = _Track(sub, key, book, stream)
        return tr

    # ---------------------------------------------------------------- actions
    def _emit_bridge(self, tr: _Track) -> None:
        bridge = tr.book.take_bridge()
        if bridge is None:
            return
        self.bridges += 1
        head = '{"stream":' + json.dumps(tr.stream) + ',"data":'
        text = head + render_event(bridge) + "}"
        ev = d.ChannelData(tr.stream, d.DataKind.DATA, text, len(head), len(text) - 1)
        log.info(
            "route %s: %s bridged U=%d..u=%d (%d bids, %d asks changed)",
            self.route,
            tr.stream,
            bridge.first,
            bridge.last,
            len(bridge.bids),
            len(bridge.asks),
        )
        self.deliver(tr.sub, ev)

    def _close_sessions(self, tr: _Track) -> None:
        self.failures += 1
        n = self.close_sessions(tr.sub, CLOSE_CODE, CLOSE_REASON)
        if n:
            log.warning(
                "route %s: %s continuity lost; closed %d session(s) with %d",
                self.route,
                tr.stream,
                n,
                CLOSE_CODE,
            )

    def _start_fetch(self, tr: _Track) -> None:
        if self._tg is None:  # not running (stopping): nothing can bridge the gap
            if tr.book.phase is Phase.RESYNC:
                tr.book.fail("the depth sync is not running")
                self._close_sessions(tr)
            return
        tr.task = self._tg.create_task(self._fetch_loop(tr), name=f"depth-{tr.stream}")

    async def _fetch_loop(self, tr: _Track) -> None:
        try:
            await self._fetch_until_done(tr)
        except Exception as exc:  # a bug here must not end the hub's TaskGroup
            self.faults.record("depth.fetch", exc, f"route {self.route}: {tr.stream}")
            if self.tracks.get(tr.key) is tr and tr.book.phase is Phase.RESYNC:
                tr.book.fail("snapshot loop failed")
                self._close_sessions(tr)
        finally:
            tr.task = None

    async def _fetch_until_done(self, tr: _Track) -> None:
        attempts = 0
        while tr.book.wants_snapshot and self.tracks.get(tr.key) is tr:
            snap = await self._fetch(tr)
            if self.tracks.get(tr.key) is not tr:
                return
            resyncing = tr.book.phase is Phase.RESYNC
            outcome = SnapshotOutcome.REFETCH if snap is None else tr.book.on_snapshot(snap)
            if outcome is SnapshotOutcome.DONE:
                self._emit_bridge(tr)  # nothing to emit after a first seed
                return
            if outcome is not SnapshotOutcome.REFETCH:
                return  # WAITING: the next events complete it; IGNORED: not wanted any more
            attempts += 1
            if resyncing and attempts >= RESYNC_ATTEMPTS:
                tr.book.fail(f"no usable REST snapshot after {attempts} attempt(s)")
                self._close_sessions(tr)
                return
            limit = 2.0 if resyncing else SEED_RETRY_CAP
            await asyncio.sleep(min(limit, RETRY_BASE * 2 ** (attempts - 1)))

    async def _fetch(self, tr: _Track) -> Snapshot | None:
        symbol = tr.book.symbol or cast(d.SubKey, tr.sub.key).symbol.upper()
        url = join_url(self.rest_url, f"/depth?symbol={symbol}&limit={self.snapshot_limit}")
        resp = await self.rest.fetch(url)
        if resp.status_code == 200:
            try:
                snap = parse_snapshot(bytes(resp.body))
            except ValueError as exc:
                log.warning("route %s: %s: bad snapshot: %s", self.route, url, exc)
            else:
                self.snapshots += 1
                return snap
        else:
            log.warning("route %s: %s answered %d", self.route, url, resp.status_code)
        self.snapshot_failures += 1
        return None


def _with_field(ev: d.ChannelData, name: str, value: int) -> d.ChannelData:
    """The same frame with ``"U"`` (futures: ``"pu"``) replaced: string slicing, every other
    byte untouched."""
    text = ev.text
    span = int_span(text, ev.start, ev.end, f'"{name}":')
    if span is None:
        return ev
    i, j = span
    new = str(value)
    return d.ChannelData(
        ev.channel, ev.kind, text[:i] + new + text[j:], ev.start, ev.end + len(new) - (j - i), ev.ts
    )
