"""The cluster engine seam: what wsgate needs from a distributed engine, and nothing more.

Three primitives carry the whole cluster (control plane now, data plane next):

* **KV buckets** (:class:`KvBucket`): get, create-if-absent, update-with-revision
  (compare-and-set), put, delete, and a watch that first replays the current value of
  every key, then says "caught up" (``None``), then streams changes. Membership,
  notification claims, silences, acks and subscription leases are all KV keys. A bucket
  has an optional TTL (seconds since the key's last write).
* **pub/sub** (:meth:`Engine.publish`, :meth:`Engine.serve`): at-most-once messages on
  subjects under the cluster name (frames between nodes).
* **request/reply** (:meth:`Engine.request`, :meth:`Engine.serve` with a reply): ask one
  node, with a timeout (``status --cluster``, a channel's state for a new follower).

The link is one connection at a time: :meth:`Engine.connect` tries once (bounded), and
:meth:`Engine.wait_closed` returns when it is gone; everything opened on a link (watches,
subscriptions) dies with it and the caller re-opens it on the next link. That keeps the
reconnect policy (backoff) in the caller, where it is visible and testable, and means
nothing ever queues behind a dead link. NATS is the one implementation
(:mod:`wsgate.cluster.nats_engine`); another engine (Redis) would implement this protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

__all__ = ["Engine", "EngineStatistics", "Handler", "KvBucket", "KvEntry", "Subscription"]


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    revision: int
    deleted: bool = False


# A watch callback gets every entry, and None once it has replayed the bucket's current state.
WatchCallback = Callable[[KvEntry | None], None]
# A served subject's handler: the request's payload in, the reply (or None for no reply) out.
Handler = Callable[[bytes], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    connected: bool
    server: str | None
    connects: int
    connect_failures: int
    disconnects: int
    last_error: str | None


class Subscription(Protocol):
    async def stop(self) -> None: ...


class KvBucket(Protocol):
    name: str

    async def get(self, key: str) -> KvEntry | None:
        """The current entry, or None when absent or deleted."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if absent; the new revision. Raises KeyConflict when present."""
        ...

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Write only if the key's revision is still ``last``. Raises KeyConflict otherwise."""
        ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def delete(self, key: str) -> None: ...

    async def follow(self, on_entry: WatchCallback, keys: str = ">") -> NoReturn:
        """Replay current values, signal None, then stream changes until cancelled; ``keys``
        is a subject-style filter (``route.>``: one route's leases)."""
        ...


class Engine(Protocol):
    @property
    def connected(self) -> bool: ...

    async def connect(self, timeout: float) -> bool:  # noqa: ASYNC109 - a bound, not a sleep
        """Try to open a link once; False (reason in statistics) when it failed."""
        ...

    async def wait_closed(self) -> None:
        """Return when the current link is gone (at once when there is none)."""
        ...

    async def bucket(self, name: str, *, ttl: float | None, history: int = 1) -> KvBucket:
        """Open (creating if needed) a persistent KV bucket on the current link."""
        ...

    async def publish(self, subject: str, data: bytes) -> None: ...

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        """Hand ``data`` to the link in this loop turn, never waiting (the data plane's
        frames): False when it cannot go at once (no link, the link's send buffer full,
        too large); the caller counts the loss."""
        ...

    def send_now(self) -> None:
        """Write what :meth:`publish_nowait` handed over in this turn now, when the
        client would otherwise write it in a later turn (a no-op where it cannot)."""
        ...

    async def serve(self, subject: str, handler: Handler) -> Subscription:
        """Call ``handler`` for each message on ``subject``; reply with what it returns."""
        ...

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:  # noqa: ASYNC109
        """One reply within ``timeout``; raises ClusterError on timeout or no responder."""
        ...

    async def close(self) -> None: ...

    def statistics(self) -> EngineStatistics: ...
