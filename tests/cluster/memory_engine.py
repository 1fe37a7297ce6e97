"""A hand-written in-memory implementation of the engine seam, for node-level tests.

Several :class:`MemoryEngine` objects (one per node) share one :class:`MemoryServer`,
like clients of one NATS server. ``server.down()`` drops every link (and
``connect`` fails until ``server.up()``); the data survives, as with JetStream file
storage. KV semantics follow NATS: revisions are one sequence per bucket, create
fails on a present key, update on a moved revision, and a watch replays the last value
of every key (delete markers included), then ``None``, then changes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NoReturn

from wsgate.cluster.engine import EngineStatistics, Handler, KvEntry, WatchCallback
from wsgate.errors import ClusterError, KeyConflict, NoResponders

__all__ = ["MemoryEngine", "MemoryServer"]


@dataclass
class _Bucket:
    seq: int = 0
    last: dict[str, KvEntry] = field(default_factory=dict)
    watchers: list[asyncio.Queue[KvEntry]] = field(default_factory=list)


class MemoryServer:
    def __init__(self) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.subjects: dict[str, Handler] = {}
        self.is_up = True
        self.links: list[MemoryEngine] = []
        # Set = serving; cleared = stalled (a frozen server: links stay, nothing moves).
        self.running = asyncio.Event()
        self.running.set()

    def down(self) -> None:
        self.is_up = False
        for engine in list(self.links):
            engine.drop()
        self.subjects.clear()

    def up(self) -> None:
        self.is_up = True

    def stall(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()


class MemoryBucket:
    def __init__(self, engine: MemoryEngine, name: str) -> None:
        self.engine = engine
        self.name = name

    def _b(self) -> _Bucket:
        self.engine.check()
        return self.engine.server.buckets[self.name]

    async def _write(self, key: str, value: bytes, deleted: bool = False) -> int:
        await self.engine.server.running.wait()
        b = self._b()
        b.seq += 1
        entry = KvEntry(key, value, b.seq, deleted)
        b.last[key] = entry
        for q in b.watchers:
            q.put_nowait(entry)
        return b.seq

    async def get(self, key: str) -> KvEntry | None:
        e = self._b().last.get(key)
        return None if e is None or e.deleted else e

    async def create(self, key: str, value: bytes) -> int:
        e = self._b().last.get(key)
        if e is not None and not e.deleted:
            raise KeyConflict(f"{self.name}/{key} exists")
        return await self._write(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        e = self._b().last.get(key)
        if e is None or e.revision != last:
            raise KeyConflict(f"{self.name}/{key} is not at {last}")
        return await self._write(key, value)

    async def put(self, key: str, value: bytes) -> int:
        return await self._write(key, value)

    async def delete(self, key: str) -> None:
        await self._write(key, b"", deleted=True)

    async def follow(self, on_entry: WatchCallback, keys: str = ">") -> NoReturn:
        b = self._b()
        q: asyncio.Queue[KvEntry] = asyncio.Queue()
        prefix = keys[:-1] if keys.endswith(">") else None

        def wanted(e: KvEntry) -> bool:
            return e.key.startswith(prefix) if prefix is not None else e.key == keys

        for e in sorted(b.last.values(), key=lambda e: e.revision):
            if wanted(e):
                on_entry(e)
        on_entry(None)
        b.watchers.append(q)
        try:
            while True:
                entry = await q.get()
                await self.engine.server.running.wait()
                if wanted(entry):
                    on_entry(entry)
        finally:
            b.watchers.remove(q)


class _Served:
    def __init__(self, server: MemoryServer, subject: str) -> None:
        self.server, self.subject = server, subject

    async def stop(self) -> None:
        self.server.subjects.pop(self.subject, None)


class MemoryEngine:
    def __init__(self, server: MemoryServer) -> None:
        self.server = server
        self._linked = False
        self._closed = asyncio.Event()
        self._closed.set()
        self.connects = 0
        self._delivering: set[asyncio.Future[bytes | None]] = set()

    @property
    def connected(self) -> bool:
        return self._linked

    def check(self) -> None:
        if not self._linked:
            raise ClusterError("not connected")

    def drop(self) -> None:
        self._linked = False
        self._closed.set()
        if self in self.server.links:
            self.server.links.remove(self)

    async def connect(self, timeout: float) -> bool:  # noqa: ASYNC109
        if not self.server.is_up:
            return False
        self._linked = True
        self._closed.clear()
        self.server.links.append(self)
        self.connects += 1
        return True

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def bucket(self, name: str, *, ttl: float | None, history: int = 1) -> MemoryBucket:
        self.check()
        self.server.buckets.setdefault(name, _Bucket())
        return MemoryBucket(self, name)

    async def publish(self, subject: str, data: bytes) -> None:
        self.check()
        handler = self.server.subjects.get(subject)
        if handler is not None:
            await handler(data)

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        if not self._linked:
            return False
        handler = self.server.subjects.get(subject)
        if handler is not None:
            # Delivered in a later turn, in order (tasks start in the order created).
            task = asyncio.ensure_future(handler(data))
            self._delivering.add(task)
            task.add_done_callback(self._delivering.discard)
        return True

    def send_now(self) -> None:
        pass  # publish_nowait delivers already

    async def serve(self, subject: str, handler: Handler) -> _Served:
        self.check()
        self.server.subjects[subject] = handler
        return _Served(self.server, subject)

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:  # noqa: ASYNC109
        self.check()
        handler = self.server.subjects.get(subject)
        if handler is None:
            raise NoResponders(f"no node answers on {subject}")
        reply = await asyncio.wait_for(handler(data), timeout)
        if reply is None:
            raise ClusterError(f"no answer on {subject}")
        return reply

    async def close(self) -> None:
        self.drop()

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            self._linked, "memory" if self._linked else None, self.connects, 0, 0, None
        )
