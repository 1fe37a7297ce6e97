"""What both simulators share: the listening socket, connection bookkeeping, the frame writer
(latency fault, slow-consumer guard), the HTTP side door (``/_sim/fault``, ``/_sim/stats``,
REST) and one scheduler task that drives every periodic job in a fixed order.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

from wsgate.redact import mask_url
from wsgate.runtime.downstream.httpbody import BodyServerConnection
from wsgate.sim.faults import FaultError, Faults, FaultStatistics
from wsgate.sim.jsonstyle import STYLES, restyle

__all__ = ["ConnectionStats", "SimConnection", "SimServer", "SimStatistics", "dumps"]

logger = logging.getLogger("wsgate.sim")

_MAX_WRITE_BUFFER = 16 * 1024 * 1024


def dumps(obj: object) -> str:
    """Compact JSON, the way exchanges write it."""
    return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True)
class ConnectionStats:
    id: int
    path: str
    remote: str
    age: float
    frames_sent: int
    bytes_sent: int
    messages_received: int
    channels: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SimStatistics:
    name: str
    url: str
    handshakes_accepted: int
    handshakes_rejected: int
    connections_open: int
    connections_total: int
    frames_sent: int
    bytes_sent: int
    messages_received: int
    slow_consumer_aborts: int
    http_requests: int
    faults: FaultStatistics
    connections: tuple[ConnectionStats, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "connections"}
        out["faults"] = self.faults.as_dict()
        out["connections"] = [c.as_dict() for c in self.connections]
        return out


class SimConnection:
    """One accepted WebSocket plus its counters and its delayed-frame queue."""

    def __init__(self, sim: SimServer, cid: int, ws: ServerConnection, path: str) -> None:
        self.sim = sim
        self.id = cid
        self.ws = ws
        self.path = path
        self.opened_at = time.monotonic()
        self.frames_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.close_with: tuple[int, str] = (1000, "")  # used when the protocol stops reading
        self._out: list[bytes] = []

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id}, path={self.path!r}, "
            f"sent={self.frames_sent}, received={self.messages_received})"
        )

    def channel_count(self) -> int:
        return 0

    @property
    def open(self) -> bool:
        return self.ws.protocol.state is State.OPEN

    def send(self, data: bytes) -> None:
        """Queue one text frame (already UTF-8) for this connection, honouring latency."""
        if self.sim.json_style != "compact":
            data = self.sim.styled(data)
        latency = self.sim.faults.latency_s
        if latency <= 0.0 and not self._delayed:
            self._write(data)
            return
        loop = asyncio.get_running_loop()
        self._delayed.append((loop.time() + latency, data))
        if self._timer is None:
            self._timer = loop.call_at(self._delayed[0][0], self._flush_delayed)

    def send_obj(self, obj: object) -> None:
        self.send(dumps(obj).encode())

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self.cancel_timers()
        self.ws.transport.abort()

    def cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._delayed.clear()
        self._out.clear()

    def _flush_delayed(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            self._write(delayed.popleft()[1])
        if delayed:
            self._timer = asyncio.get_running_loop().call_at(delayed[0][0], self._flush_delayed)

    def _write(self, data: bytes) -> None:
        # Frames are coalesced and written once per loop iteration: one syscall for a burst
        # instead of one per frame, which is what keeps the sim off the critical path.
        if not self._out:
            self.sim.mark_dirty(self)
        self._out.append(self.sim.frame(data))
        self.frames_sent += 1
        self.bytes_sent += len(data)

    def flush(self) -> None:
        out, self._out = self._out, []
        ws = self.ws
        if not out or ws.protocol.state is not State.OPEN:
            return
        transport = ws.transport
        # No backpressure on a fan-out: a client that cannot keep up is cut off, as exchanges do.
        if transport.get_write_buffer_size() > self.sim.max_write_buffer:
            logger.warning("sim %s: aborting slow consumer %r", self.sim.name, self)
            self.sim.slow_consumer_aborts += 1
            self.abort()
            return
        transport.write(b"".join(out))


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    interval: float = field(compare=False)
    callback: Callable[[float], None] = field(compare=False)
    name: str = field(compare=False)


class SimServer:
    """Base of BitfinexSim and BinanceSim; subclasses speak the protocol."""

    name = "sim"
    url_suffix = ""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        max_write_buffer: int = _MAX_WRITE_BUFFER,
        json_style: str = "compact",
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if json_style not in STYLES:
            raise ValueError(f"json_style: expected one of {', '.join(STYLES)}, got {json_style!r}")
        # "spaced"/"pretty": write JSON the way other exchange-compatible servers do.
        self.json_style = json_style
        self._styled_src: bytes | None = None
        self._styled_out = b""
        self.host = host
        self.port = port
        self.time_scale = time_scale
        self.max_write_buffer = max_write_buffer
        self.faults = Faults(self.name, self, time.monotonic)
        self.connections: dict[int, SimConnection] = {}
        self.handshakes_accepted = 0
        self.handshakes_rejected = 0
        self.connections_total = 0
        self.slow_consumer_aborts = 0
        self.http_requests = 0
        self._closed_frames_sent = 0
        self._closed_bytes_sent = 0
        self._closed_received = 0
        self._next_cid = 0
        self._server: Server | None = None
        self._jobs: list[_Job] = []
        self._job_seq = 0
        self._scheduler: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._wakeup = asyncio.Event()
        self._dirty: list[SimConnection] = []
        self._last_data: bytes | None = None
        self._last_frame = b""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={self.url!r}, open={len(self.connections)}, "
            f"accepted={self.handshakes_accepted}, rejected={self.handshakes_rejected})"
        )

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.url_suffix}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._install_jobs()
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            create_connection=BodyServerConnection,  # REST calls with a form body (PUT)
            compression=None,
            max_size=2**20,
            **self._serve_options(),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._scheduler = asyncio.create_task(self._run_scheduler(), name=f"sim-{self.name}")
        logger.info("sim %s listening on %s", self.name, self.url)

    async def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            # wait() does not re-raise the task's own cancellation, only ours.
            await asyncio.wait([self._scheduler])
            self._scheduler = None
        for conn in list(self.connections.values()):
            conn.cancel_timers()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close(close_connections=True, code=1001, reason="simulator stopping")
            await self._server.wait_closed()
            self._server = None
        logger.info("sim %s stopped", self.name)

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- frame writer ---------------------------------------------------------------------------

    def frame(self, data: bytes) -> bytes:
        """A server-to-client text frame (unmasked, no extension: compression is off).

        Built once per message: consecutive sends of the same bytes reuse the last frame.
        """
        if data is self._last_data:
            return self._last_frame
        n = len(data)
        if n < 126:
            head = bytes((0x81, n))
        elif n < 65536:
            head = bytes((0x81, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x81, 127)) + n.to_bytes(8, "big")
        self._last_data, self._last_frame = data, head + data
        return self._last_frame

    def styled(self, data: bytes) -> bytes:
        """``data`` (compact JSON) in this sim's ``json_style``; a frame shared by many
        connections is re-formatted once."""
        if data is not self._styled_src:
            self._styled_src = data
            self._styled_out = restyle(data.decode(), self.json_style).encode()
        return self._styled_out

    def mark_dirty(self, conn: SimConnection) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush_dirty)
        self._dirty.append(conn)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    # -- scheduling -----------------------------------------------------------------------------

    def add_job(self, interval: float, callback: Callable[[float], None], name: str) -> None:
        """Run ``callback(now)`` every ``interval`` seconds (already scaled) on the sim loop."""
        self._job_seq += 1
        heapq.heappush(
            self._jobs, _Job(time.monotonic() + interval, self._job_seq, interval, callback, name)
        )
        self._wakeup.set()

    async def _run_scheduler(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = self._jobs[0].due - loop.time()
            # sleep(0) on overload still yields to the socket handlers.
            await asyncio.sleep(max(delay, 0.0))
            now = loop.time()
            job = heapq.heappop(self._jobs)
            if job.due > now:
                heapq.heappush(self._jobs, job)  # a job added meanwhile is due earlier
                continue
            try:
                job.callback(now)
            except Exception:
                logger.exception("sim %s: job %s failed", self.name, job.name)
            # Skip missed ticks instead of bursting to catch up after a pause.
            job.due = max(job.due + job.interval, now)
            heapq.heappush(self._jobs, job)

    def later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, callback)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_all_later(self, delay: float, code: int, reason: str) -> None:
        """Close the connections open now (not those opened during the grace) after ``delay``.

        That is what an exchange restarting one server does: a client that reconnects
        promptly lands on a healthy server and keeps its new connection.
        """
        doomed = list(self.connections.values())

        def close_all() -> None:
            for conn in doomed:
                if self.connections.get(conn.id) is conn:
                    self.spawn(conn.ws.close(code, reason))

        self.later(delay, close_all)

    # -- connections ----------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        self._next_cid += 1
        path = ws.request.path if ws.request is not None else "/"
        conn = self._make_connection(self._next_cid, ws, path)
        self.connections[conn.id] = conn
        self.handshakes_accepted += 1
        self.connections_total += 1
        logger.debug("sim %s: connection %d opened on %s", self.name, conn.id, mask_url(path))
        try:
            self._on_open(conn)
            async for message in ws:
                conn.messages_received += 1
                if not self._on_message(conn, message):
                    await ws.close(*conn.close_with)
                    break
        except Exception as exc:
            if (
                not isinstance(exc, OSError | ConnectionError)
                and "ConnectionClosed" not in type(exc).__name__
            ):
                logger.exception("sim %s: connection %d failed", self.name, conn.id)
        finally:
            conn.cancel_timers()
            self.connections.pop(conn.id, None)
            self._closed_frames_sent += conn.frames_sent
            self._closed_bytes_sent += conn.bytes_sent
            self._closed_received += conn.messages_received
            self._on_close(conn)
            logger.debug("sim %s: connection %d closed", self.name, conn.id)

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        if parts.path.startswith("/_sim/"):
            self.http_requests += 1
            return self._sim_endpoint(ws, parts.path, query)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade:
            self.http_requests += 1
            rest = self._http_request(ws, request, parts.path, query)
            if rest is not None:
                return rest
            return json_response(ws, 404, {"code": -1, "msg": f"no such endpoint {parts.path}"})
        rejection = self.faults.take_handshake_rejection()
        if rejection is not None:
            status, retry_after = rejection
            self.handshakes_rejected += 1
            resp = ws.respond(status, f"{HTTPStatus(status).phrase}\n")
            if retry_after is not None:
                resp.headers["Retry-After"] = str(max(1, round(retry_after)))
            return resp
        if not self._accepts_path(parts.path, query):
            self.handshakes_rejected += 1
            return ws.respond(404, f"no WebSocket endpoint at {parts.path}\n")
        return None

    def _sim_endpoint(self, ws: ServerConnection, path: str, query: dict[str, str]) -> Response:
        if path == "/_sim/stats":
            return json_response(ws, 200, self.statistics().as_dict())
        if path == "/_sim/fault":
            kind = query.pop("kind", "")
            try:
                return json_response(ws, 200, self.faults.apply(kind, query))
            except FaultError as exc:
                return json_response(ws, 400, {"ok": False, "error": str(exc)})
        return json_response(ws, 404, {"ok": False, "error": f"unknown sim endpoint {path}"})

    # -- fault target (shared parts) -----------------------------------------------------------

    def fault_drop(self, n: int | None) -> int:
        victims = list(self.connections.values())
        if n is not None:
            victims = victims[:n]
        for conn in victims:
            conn.abort()
        return len(victims)

    def fault_malformed(self, count: int) -> int:
        frames = [g.encode() for g in _GARBAGE]
        conns = list(self.connections.values())
        for conn in conns:
            for i in range(count):
                conn.send(frames[i % len(frames)])
        return len(conns)

    def fault_info(self, code: int) -> int:
        raise FaultError(f"info events are not part of the {self.name} protocol")

    def fault_server_shutdown(self) -> int:
        raise FaultError(f"serverShutdown is not part of the {self.name} protocol")

    def fault_resume(self) -> None:
        """Hook: data may flow again (stall or maintenance over)."""

    # -- statistics -----------------------------------------------------------------------------

    def statistics(self) -> SimStatistics:
        now = time.monotonic()
        conns = tuple(
            ConnectionStats(
                id=c.id,
                path=c.path,
                remote=_remote(c.ws),
                age=now - c.opened_at,
                frames_sent=c.frames_sent,
                bytes_sent=c.bytes_sent,
                messages_received=c.messages_received,
                channels=c.channel_count(),
            )
            for c in self.connections.values()
        )
        return SimStatistics(
            name=self.name,
            url=self.url,
            handshakes_accepted=self.handshakes_accepted,
            handshakes_rejected=self.handshakes_rejected,
            connections_open=len(self.connections),
            connections_total=self.connections_total,
            frames_sent=self._closed_frames_sent + sum(c.frames_sent for c in conns),
            bytes_sent=self._closed_bytes_sent + sum(c.bytes_sent for c in conns),
            messages_received=self._closed_received + sum(c.messages_received for c in conns),
            slow_consumer_aborts=self.slow_consumer_aborts,
            http_requests=self.http_requests,
            faults=self.faults.statistics(),
            connections=conns,
        )

    # -- subclass hooks -------------------------------------------------------------------------

    def _serve_options(self) -> dict[str, Any]:
        return {"ping_interval": None}

    def _install_jobs(self) -> None:
        """Register periodic jobs with :meth:`add_job`."""

    def _make_connection(self, cid: int, ws: ServerConnection, path: str) -> SimConnection:
        return SimConnection(self, cid, ws, path)

    def _accepts_path(self, path: str, query: Mapping[str, str]) -> bool:
        return True

    def _http_request(
        self, ws: ServerConnection, request: Request, path: str, query: Mapping[str, str]
    ) -> Response | None:
        """A plain HTTP request (any method); GETs go to :meth:`_http` by default."""
        if request.method != "GET":
            return None
        return self._http(ws, path, query)

    def _http(self, ws: ServerConnection, path: str, query: Mapping[str, str]) -> Response | None:
        return None

    def _on_open(self, conn: SimConnection) -> None:
        """Hook: a connection was accepted."""

    def _on_message(self, conn: SimConnection, message: str | bytes) -> bool:
        """Hook: a client message; return False to stop reading (the connection is closing)."""
        return True

    def _on_close(self, conn: SimConnection) -> None:
        """Hook: a connection is gone."""


# Invalid JSON, then valid JSON of shapes no exchange sends.
_GARBAGE = (
    '{"event":"info","vers',
    "not json at all",
    "[1,2,",
    "[]",
    '{"unexpected":true}',
    '[null,"hb"]',
    '"just a string"',
    "[12345,{}]",
)


def json_response(
    ws: ServerConnection, status: int, obj: object, style: str = "compact"
) -> Response:
    resp = ws.respond(status, restyle(dumps(obj), style))
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = "application/json"
    return resp


def _remote(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
    except (TypeError, ValueError, OSError):
        return "?"
    return f"{host}:{port}"
