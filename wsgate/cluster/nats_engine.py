"""The NATS implementation of the cluster engine (nats-py; JetStream for the KV buckets).

One client connection per link, opened with ``allow_reconnect=False``: when the server
goes away the connection closes, every watch and subscription opened on it ends, and the
caller (:class:`wsgate.cluster.node.ClusterNode`) reconnects with its own backoff and
re-opens them. Publishes therefore fail fast while the link is down instead of piling up
in a client-side buffer. KV buckets use file storage, so silences, acks and claims
survive a restart of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, NoReturn

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from wsgate.cluster.engine import EngineStatistics, Handler, KvEntry, WatchCallback
from wsgate.config.schema import ClusterConfig
from wsgate.errors import ClusterError, KeyConflict, NoResponders
from wsgate.redact import mask_url

__all__ = ["NatsEngine"]

log = logging.getLogger("wsgate.cluster")

_DELETE_OPS = ("DEL", "PURGE")
# nats-py's client-side send buffer (its default); publish_nowait refuses beyond it.
PENDING_SIZE = 2 * 1024 * 1024
_PUB_OVERHEAD = 64  # "PUB <subject> <size>\r\n...\r\n" beyond the subject and payload
_DIRECT_WRITE_BELOW = 256 * 1024  # socket buffer beyond which send_now leaves it to nats-py


def _tcp_writer(nc: Client | None) -> asyncio.StreamWriter | None:
    """The asyncio writer under nats-py's TCP (or TLS) transport, if it is one."""
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    return writer if isinstance(writer, asyncio.StreamWriter) else None


def _tls_context(cfg: ClusterConfig) -> ssl.SSLContext | None:
    wants_tls = any(s.startswith(("tls://", "wss://")) for s in cfg.servers)
    if not (wants_tls or cfg.tls_ca_file or cfg.tls_cert_file):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
    if cfg.tls_cert_file:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    return ctx


class NatsBucket:
    """A :class:`~wsgate.cluster.engine.KvBucket` over a JetStream KV bucket."""

    def __init__(self, kv: KeyValue, name: str) -> None:
        self._kv = kv
        self.name = name

    def __repr__(self) -> str:
        return f"<NatsBucket {self.name}>"

    async def get(self, key: str) -> KvEntry | None:
        try:
            e = await self._kv.get(key)
        except nats.js.errors.NotFoundError:  # absent, deleted or purged
            return None
        return KvEntry(key, e.value or b"", int(e.revision or 0))

    async def create(self, key: str, value: bytes) -> int:
        try:
            return int(await self._kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyConflict(f"{self.name}/{key} already exists") from exc

    async def update(self, key: str, value: bytes, last: int) -> int:
        try:
            return int(await self._kv.update(key, value, last=last))
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyConflict(f"{self.name}/{key} is no longer at revision {last}") from exc

    async def put(self, key: str, value: bytes) -> int:
        return int(await self._kv.put(key, value))

    async def delete(self, key: str) -> None:
        await self._kv.delete(key)

    async def follow(self, on_entry: WatchCallback, keys: str = ">") -> NoReturn:
        watcher = await self._kv.watch(keys)
        try:
            async for e in watcher:
                if e is None:
                    on_entry(None)
                    continue
                deleted = e.operation in _DELETE_OPS
                on_entry(KvEntry(e.key, e.value or b"", int(e.revision or 0), deleted))
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await watcher.stop()  # type: ignore[no-untyped-call]
        raise ClusterError(f"watch of {self.name} ended")


class _Served:
    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


class NatsEngine:
    """A :class:`~wsgate.cluster.engine.Engine` on one NATS connection at a time."""

    def __init__(self, cfg: ClusterConfig, client_name: str) -> None:
        self.cfg = cfg
        self.client_name = client_name
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._closed = asyncio.Event()
        self._closed.set()
        self._connects = 0
        self._failures = 0
        self._disconnects = 0
        self._last_error: str | None = None
        self._suspended = 0  # publish_nowait calls that found nats-py waiting
        self.sent_now = 0  # turns whose publishes send_now wrote itself
        # JetStream API calls are bounded (a fresh server's first bucket can take a second or
        # two); heartbeats bound their own wait more tightly.
        self._api_timeout = 5.0

    def __repr__(self) -> str:
        servers = ",".join(mask_url(u) for u in self.cfg.servers)
        return f"<NatsEngine {servers} connected={self.connected}>"

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self, timeout: float) -> bool:  # noqa: ASYNC109
        if self.connected:
            return True

        async def on_error(exc: Exception) -> None:
            self._last_error = str(exc) or type(exc).__name__

        async def on_closed() -> None:
            if not self._closed.is_set():
                self._disconnects += 1
                log.warning("cluster engine link to NATS lost")
            self._closed.set()

        ping = max(1, round(self.cfg.node_down_after / 2))
        try:
            async with asyncio.timeout(timeout):
                nc = await nats.connect(
                    servers=list(self.cfg.servers),
                    name=self.client_name,
                    allow_reconnect=False,
                    connect_timeout=max(1, round(timeout)),
                    ping_interval=ping,
                    pending_size=PENDING_SIZE,
                    max_outstanding_pings=2,
                    tls=_tls_context(self.cfg),
                    user_credentials=self.cfg.credentials_file,
                    error_cb=on_error,
                    disconnected_cb=on_closed,
                    closed_cb=on_closed,
                )
        except (TimeoutError, OSError, nats.errors.Error, ssl.SSLError) as exc:
            self._failures += 1
            self._last_error = str(exc) or type(exc).__name__
            return False
        self._nc = nc
        self._js = nc.jetstream(timeout=self._api_timeout)
        self._closed.clear()
        self._connects += 1
        self._last_error = None
        return True

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _jetstream(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise ClusterError("not connected to NATS")
        return self._js

    async def bucket(self, name: str, *, ttl: float | None, history: int = 1) -> NatsBucket:
        js = self._jetstream()
        try:
            kv = await js.create_key_value(
                KeyValueConfig(bucket=name, history=history, ttl=ttl, storage=StorageType.FILE)
            )
        except nats.js.errors.BadRequestError as exc:
            # Created earlier with other settings (another version, another TTL): use it.
            log.warning("KV bucket %s exists with other settings (%s); using it", name, exc)
            kv = await js.key_value(name)
        return NatsBucket(kv, name)

    async def publish(self, subject: str, data: bytes) -> None:
        if self._nc is None or not self.connected:
            raise ClusterError("not connected to NATS")
        await self._nc.publish(subject, data)

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        nc = self._nc
        if nc is None or not self.connected:
            return False
        if nc.pending_data_size + len(subject) + len(data) + _PUB_OVERHEAD > PENDING_SIZE:
            return False  # the link is behind: publish() would wait for a forced flush
        # nats-py's publish() is a coroutine that suspends only for that forced flush (or
        # a full flusher queue, whose put is the last thing it awaits): with room in the
        # buffer it runs to the end in one step, appending the PUB and waking its flusher.
        # Driving it here saves the loop turn of a publishing task per message.
        coro = nc.publish(subject, data)
        try:
            coro.send(None)
        except StopIteration:
            return True
        except Exception as exc:  # too large, connection closing: lost, like a failed publish
            self._last_error = str(exc) or type(exc).__name__
            return False
        # It waited after all (a nats-py whose publish works otherwise; the test of this
        # method fails then): the PUB is queued, the wait is given up.
        coro.close()
        self._suspended += 1
        return False

    def send_now(self) -> None:
        # nats-py writes what publish() appended in its flusher task, one loop turn later.
        # Writing it here, at the end of the turn that published it (after the sessions'
        # writes), measured ~250 µs off an owner's and its followers' p50 at 1k msg/s
        # (docs/BENCHMARKS.md). It needs nats-py's internals (the pending list and the
        # asyncio writer of its TCP transport): where they are not as expected (another
        # nats-py, a WebSocket transport) or the socket is behind, nats-py's flusher
        # writes as usual. tests/cluster/test_nats_publish.py fails when this path is off.
        nc = self._nc
        writer = _tcp_writer(nc)
        if nc is None or writer is None or not self.connected:
            return
        pending = getattr(nc, "_pending", None)
        if not isinstance(pending, list) or not pending:
            return
        if writer.transport.get_write_buffer_size() > _DIRECT_WRITE_BELOW:
            return  # behind: nats-py's flusher waits for the socket (drain)
        writer.writelines(pending)
        nc._pending = []
        nc._pending_data_size = 0
        self.sent_now += 1

    async def serve(self, subject: str, handler: Handler) -> _Served:
        if self._nc is None or not self.connected:
            raise ClusterError("not connected to NATS")

        async def on_msg(msg: Msg) -> None:
            try:
                reply = await handler(msg.data)
                if reply is not None and msg.reply:
                    await msg.respond(reply)
            except Exception:  # one bad request must not end the subscription
                log.exception("cluster handler for %s failed", subject)

        return _Served(await self._nc.subscribe(subject, cb=on_msg))

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:  # noqa: ASYNC109
        if self._nc is None or not self.connected:
            raise ClusterError("not connected to NATS")
        try:
            msg = await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"no node answers on {subject}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise ClusterError(f"no answer on {subject} within {timeout:g}s") from exc
        return bytes(msg.data)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._closed.set()  # first: our own close is not a lost link
        if nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await nc.close()

    def statistics(self) -> EngineStatistics:
        url = self._nc.connected_url if self._nc is not None and self.connected else None
        return EngineStatistics(
            connected=self.connected,
            server=f"{url.hostname}:{url.port}" if url is not None else None,
            connects=self._connects,
            connect_failures=self._failures,
            disconnects=self._disconnects,
            last_error=self._last_error,
        )
