"""Exchange budgets for the whole cluster: one ledger per budget in the KV store.

A host that a ``share = "cluster"`` route connects to has its connect budget counted for
the cluster: key ``connect.<host>`` in the bucket ``<name>-budgets`` holds the ledger
(:mod:`wsgate.core.budget_ledger`). A connect reads it, decides with
:func:`~wsgate.core.budget_ledger.decide_take`, and writes it back with compare-and-set
(update at the revision it read); another node's write in between is a conflict, and the
take reads again, at most ``MAX_TRIES`` times within ``TAKE_TIMEOUT``. One take is a
*slice* for every connect of this node waiting at that moment (capped by
:func:`~wsgate.core.budget_ledger.slice_size`): a pool that reconnects 40 connections
writes the ledger a few times, not 40, and the tokens are used at once (a slice is
usable for ``CONNECT_HOLD`` seconds). No frame ever waits on this.

Without the link (or when NATS does not answer in time) a node grants from its **local
share**: the budget divided by the nodes it knows that have not left, counted against everything
it last saw in the ledger plus its own grants since. Those offline grants are written
into the ledger with the next successful write, so the other nodes count them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsgate.cluster.engine import Engine, KvBucket, KvEntry
from wsgate.config.schema import ClusterConfig
from wsgate.core.budget_ledger import (
    Ledger,
    Slice,
    decide_take,
    local_share,
    slice_size,
    window_margin,
)
from wsgate.errors import KeyConflict

__all__ = ["BudgetStatistics", "ClusterBudgets"]

log = logging.getLogger("wsgate.cluster")

MAX_TRIES = 8  # compare-and-set attempts per take before asking the caller to come back
TAKE_TIMEOUT = 2.0  # one take, every attempt included; past it the local share answers
# After a take that could not reach the ledger on a link that still looks up (a stalled
# server), the next takes go to the local share at once for this long, or until the link
# is replaced: a pool of waiting connects must not pay TAKE_TIMEOUT one after another.
UNREACHABLE_FOR = 5.0
CONNECT_HOLD = 2.0  # a connect slot is used at once; this bounds "at once"
WATCH_RETRY = 1.0
_KEY_CHARS = re.compile(r"[^-_=.a-zA-Z0-9]")


@dataclass(frozen=True)
class BudgetStatistics:
    """One cluster budget as this node sees it (status, ``status --cluster``, metrics)."""

    budget: str  # the ledger's key, e.g. connect.api.binance.com_443
    limit: int
    window: float
    mode: str  # cluster | local share
    used: int  # tokens occupying the budget across the cluster (window + hold + margin)
    used_here: int  # ... of them this node's
    share: int  # what this node may use alone without the ledger
    granted: int
    slices: int  # ledger writes that granted them
    granted_local: int  # tokens taken from the local share
    waits: int
    last_wait: float
    conflicts: int  # compare-and-set writes that lost to another node's
    contention: int  # takes that ran out of attempts
    errors: int  # takes that could not reach the ledger


@dataclass(eq=False)
class _Budget:
    key: str
    limit: int
    per: float
    seen: Ledger = field(default_factory=Ledger)  # as last read, written or watched
    unsynced: tuple[Slice, ...] = ()  # granted from the local share, not yet in the ledger
    mode: str = "cluster"  # cluster | local share
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one take at a time per node
    waiting: int = 0  # callers in take_connect now: the size of the next slice
    pool: int = 0  # tokens of the last slice not handed out yet
    pool_until: float = 0.0  # ... usable until then (the slice's end)
    granted: int = 0
    slices: int = 0  # slices taken (a slice serves every connect waiting when it is taken)
    local_grants: int = 0
    waits: int = 0
    conflicts: int = 0
    contention: int = 0  # takes that ran out of attempts
    errors: int = 0
    corrupt: int = 0
    last_wait: float = 0.0


class ClusterBudgets:
    """The :class:`~wsgate.runtime.upstream.budgets.SharedBudget` on a cluster engine."""

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        engine: Engine,
        *,
        live_nodes: Callable[[], int],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.engine = engine
        self.live_nodes = live_nodes
        self.clock = clock  # wall clock: the ledger is shared between hosts
        self.rng = rng or random.Random()
        self._bucket: KvBucket | None = None
        self._bucket_link = 0  # the engine's connect count when the bucket was opened
        self._unreachable: tuple[int, float] | None = None  # (link, until) after a timeout
        self._budgets: dict[str, _Budget] = {}

    def __repr__(self) -> str:
        return f"<ClusterBudgets {self.cfg.name} budgets={sorted(self._budgets)}>"

    def _budget(self, key: str, limit: int, per: float) -> _Budget:
        b = self._budgets.get(key)
        if b is None:
            b = self._budgets[key] = _Budget(key, limit, per)
        b.limit, b.per = limit, per  # a reload may change them
        return b

    async def _link(self) -> KvBucket | None:
        if not self.engine.connected:
            self._bucket = None
            return None
        # A bucket belongs to one link: after a reconnect (which a take between two links
        # may never notice as "not connected") it is opened again.
        link = self.engine.statistics().connects
        if self._unreachable is not None:
            bad_link, until = self._unreachable
            if link == bad_link and time.monotonic() < until:
                return None
            self._unreachable = None
        if self._bucket is None or self._bucket_link != link:
            self._bucket = await self.engine.bucket(f"{self.cfg.name}-budgets", ttl=None)
            self._bucket_link = link
        return self._bucket

    async def run(self) -> None:
        """Watch the ledgers, so status shows the cluster's use and a node that loses the
        link counts what the others took until then. Owned by the daemon's TaskGroup."""
        while True:
            try:
                bucket = await self._link()
                if bucket is not None:
                    async with asyncio.TaskGroup() as tg:
                        watch = tg.create_task(bucket.follow(self._on_entry))
                        await self.engine.wait_closed()  # a watch need not notice by itself
                        watch.cancel()
            except Exception as exc:  # the link went: watch again on the next one
                self._bucket = None
                log.debug("cluster budgets: watch ended (%r)", exc)
            await asyncio.sleep(WATCH_RETRY)

    def _on_entry(self, entry: KvEntry | None) -> None:
        if entry is None:
            return
        b = self._budgets.get(entry.key)
        if b is None:
            b = self._budgets[entry.key] = _Budget(entry.key, 0, 0.0)  # limits on first use
        if entry.deleted:
            b.seen = Ledger()
            return
        with contextlib.suppress(ValueError):
            b.seen = Ledger.from_bytes(entry.value)

    # ------------------------------------------------------------------ taking

    async def take_connect(self, host: str, count: int, per: float) -> float:
        b = self._budget("connect." + _KEY_CHARS.sub("_", host), count, per)
        b.waiting += 1
        try:
            async with b.lock:
                # A short window (OKX: a second) gets a shorter hold than 2 s.
                return await self._take_one(b, min(CONNECT_HOLD, per / 10))
        finally:
            b.waiting -= 1

    async def _take_one(self, b: _Budget, hold: float) -> float:
        """One token: from the current slice, else a new slice for every caller waiting
        now (at most :func:`slice_size`, so one node does not take the whole budget)."""
        if b.pool > 0 and self.clock() < b.pool_until:
            b.pool -= 1
            b.granted += 1
            return 0.0
        b.pool = 0
        want = max(1, min(b.waiting, slice_size(b.limit, self.live_nodes())))
        try:
            async with asyncio.timeout(TAKE_TIMEOUT):
                bucket = await self._link()
                if bucket is not None:
                    return await self._take(bucket, b, want, hold)
        except Exception as exc:  # timeouts, a lost link: the engine's errors vary
            b.errors += 1
            self._bucket = None
            link = self.engine.statistics().connects
            self._unreachable = (link, time.monotonic() + UNREACHABLE_FOR)
            log.warning("cluster budget %s: the ledger is out of reach (%r)", b.key, exc)
        return self._take_local(b, want, hold)

    def _granted(self, b: _Budget, grant: Slice) -> float:
        b.slices += 1
        b.granted += 1
        b.pool, b.pool_until = grant.count - 1, grant.end
        return 0.0

    async def _take(self, bucket: KvBucket, b: _Budget, want: int, hold: float) -> float:
        for _ in range(MAX_TRIES):
            entry = await bucket.get(b.key)
            ledger = Ledger()
            if entry is not None:
                try:
                    ledger = Ledger.from_bytes(entry.value)
                except ValueError as exc:  # overwritten below: a ledger every node reads
                    b.corrupt += 1
                    log.warning("cluster budget %s: %s; starting it again", b.key, exc)
            ledger = ledger.with_grants(b.unsynced)
            d = decide_take(
                ledger,
                node=self.node_id,
                want=want,
                limit=b.limit,
                per=b.per,
                hold=hold,
                now=self.clock(),
                margin=window_margin(b.per),
                at_least=1,
            )
            write = d.ledger if d.ledger is not None else (ledger if b.unsynced else None)
            if write is not None:
                try:
                    if entry is None:
                        await bucket.create(b.key, write.to_bytes())
                    else:
                        await bucket.update(b.key, write.to_bytes(), entry.revision)
                except KeyConflict:
                    b.conflicts += 1
                    await asyncio.sleep(self.rng.uniform(0.0, 0.01))
                    continue
            if b.mode != "cluster":
                log.info("cluster budget %s: counted in the cluster ledger again", b.key)
            b.mode, b.unsynced = "cluster", ()
            b.seen = write if write is not None else ledger
            if d.ok and d.ledger is not None:
                return self._granted(b, d.ledger.grants[-1])
            return self._wait(b, d.wait)
        b.contention += 1
        return self._wait(b, self.rng.uniform(0.05, 0.25))

    def _take_local(self, b: _Budget, want: int, hold: float) -> float:
        """No ledger: this node's share, against all it knows the cluster has used."""
        if b.mode != "local share":
            log.warning(
                "cluster budget %s: no cluster link; using this node's share (%d of %d)",
                b.key,
                self._share(b),
                b.limit,
            )
        b.mode = "local share"
        ledger = b.seen.with_grants(b.unsynced)
        d = decide_take(
            ledger,
            node=self.node_id,
            want=want,
            limit=self._share(b),
            per=b.per,
            hold=hold,
            now=self.clock(),
            margin=window_margin(b.per),
            at_least=1,
        )
        if d.ledger is not None:
            b.seen = d.ledger
        if not d.ok or d.ledger is None:
            return self._wait(b, d.wait)
        grant = d.ledger.grants[-1]
        b.unsynced = (*b.unsynced, grant)
        b.local_grants += grant.count
        return self._granted(b, grant)

    def _share(self, b: _Budget) -> int:
        return local_share(b.limit, self.live_nodes())

    @staticmethod
    def _wait(b: _Budget, wait: float) -> float:
        b.waits += 1
        b.last_wait = wait
        return max(wait, 0.001)

    # ------------------------------------------------------------------ reporting

    def connect_snapshot(self, host: str) -> dict[str, Any] | None:
        b = self._budgets.get("connect." + _KEY_CHARS.sub("_", host))
        return None if b is None or b.limit <= 0 else self._doc(b)

    def _stats(self, b: _Budget) -> BudgetStatistics:
        now = self.clock()
        seen = b.seen.with_grants(b.unsynced)
        margin = window_margin(b.per)
        return BudgetStatistics(
            budget=b.key,
            limit=b.limit,
            window=b.per,
            mode=b.mode,
            used=seen.used(now, b.per, margin),
            used_here=seen.used_by(self.node_id, now, b.per, margin),
            share=self._share(b),
            granted=b.granted,
            slices=b.slices,
            granted_local=b.local_grants,
            waits=b.waits,
            last_wait=round(b.last_wait, 3),
            conflicts=b.conflicts,
            contention=b.contention,
            errors=b.errors,
        )

    def _doc(self, b: _Budget) -> dict[str, Any]:
        return dataclasses.asdict(self._stats(b))

    def statistics(self) -> tuple[BudgetStatistics, ...]:
        """Every budget this node uses (ledgers of budgets it never took from are left out)."""
        return tuple(self._stats(b) for _, b in sorted(self._budgets.items()) if b.limit > 0)

    def snapshot(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(st) for st in self.statistics()]
