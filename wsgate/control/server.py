"""The control socket: JSON lines over a Unix stream socket, with peer-credential checks.

Lifecycle: ``start()`` refuses a path held by a live daemon, replaces a stale socket
file, binds the socket mode 0660 (group ``read_gid``) and listens; ``close()`` stops
accepting, cancels every connection with a bounded wait and removes the socket file.

Permission levels (see :func:`permitted`): uid 0 and the daemon's own uid may run
everything; members of ``read_gid`` may run read methods; members of ``admin_gid`` may
run every method. ``hello`` is open to anyone who can connect, so a CLI can always
negotiate and explain what it may do.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import json
import logging
import os
import pwd
import socket
import stat
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, cast

from wsgate.control import wire
from wsgate.control.admission import IDLE_TIMEOUT, Admission
from wsgate.control.schema import Schema
from wsgate.errors import ControlError
from wsgate.logthrottle import Throttled
from wsgate.version import __version__

__all__ = [
    "Caller",
    "ControlServer",
    "ControlServerStatistics",
    "Handler",
    "HandlerFunc",
    "ServerState",
    "StreamFunc",
    "ensure_socket_dir",
    "peer_caller",
    "permitted",
]

log = logging.getLogger("wsgate.control")

Params = dict[str, Any]
HandlerFunc = Callable[[Params, "Caller"], Awaitable[Any]]
StreamFunc = Callable[[Params, "Caller"], AsyncIterator[tuple[str, Any]]]

_SUN_PATH_MAX = 107  # 108 bytes in struct sockaddr_un, one kept for the NUL
_CLOSE_GRACE = 2.0  # seconds close() waits for cancelled connections to finish
_PEERCRED = struct.Struct("3i")
_DIR_MODE = 0o750  # as the unit's RuntimeDirectoryMode: the control group may traverse


def ensure_socket_dir(path: str, gid: int | None) -> list[str]:
    """Create the socket's missing directories as systemd's ``RuntimeDirectory`` would.

    Each one is mode 0750 and, when ``gid`` is given, owned by that group, so members of
    the control group can reach the socket inside. Directories that exist are left
    alone (systemd or the operator made them). Returns the ones created, outermost first.
    """
    missing: list[str] = []
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(d) and d not in missing:
        missing.append(d)
        d = os.path.dirname(d)
    missing.reverse()
    for d in missing:
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, _DIR_MODE)
        os.chmod(d, _DIR_MODE)  # mkdir's mode is filtered by the umask
        if gid is not None:
            _chgrp(d, gid)
    return missing


def _chgrp(path: str, gid: int) -> None:
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        raise ControlError(
            wire.INVALID_CONFIG,
            f"cannot give {path} to group {gid}: the daemon's user is not a member; add it "
            "to the group or change daemon.control_group",
        ) from None


@dataclass(frozen=True)
class Handler:
    """One control method. ``func`` returns the result, or (``stream=True``) yields events.

    ``params`` is the method's schema: the server checks every request against it and
    passes ``func`` the clean parameters, so a handler never sees a wrong type or range.
    """

    func: HandlerFunc | StreamFunc
    mutating: bool = False
    stream: bool = False
    params: Schema | None = None


@dataclass(frozen=True)
class Caller:
    """The peer process of a connection, from ``SO_PEERCRED`` plus its group list."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


@dataclass(frozen=True)
class ControlServerStatistics:
    state: str
    connections_open: int
    connections_total: int
    streams_open: int
    requests: int
    mutating_requests: int
    errors: Mapping[str, int]  # error code -> count
    refused_connections: int = 0  # over the total or per-uid cap
    idle_closed: int = 0


class ServerState(enum.IntEnum):
    NEW = 0
    LISTENING = 1
    CLOSED = 2


def permitted(
    caller: Caller,
    mutating: bool,
    *,
    daemon_uid: int,
    read_gid: int | None,
    admin_gid: int | None,
) -> bool:
    """Whether ``caller`` may run a read (``mutating=False``) or mutating method."""
    if caller.uid in (0, daemon_uid):
        return True
    if admin_gid is not None and admin_gid in caller.groups:
        return True
    if mutating:
        return False
    return read_gid is not None and read_gid in caller.groups


def peer_caller(sock: socket.socket | Any) -> Caller:
    """Read the peer's pid/uid/gid with ``SO_PEERCRED`` and resolve its supplementary groups.

    ``SO_PEERCRED`` gives only the effective gid, so membership of the read/admin groups
    comes from the group database for the peer's user name.
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    groups = {gid}
    try:
        groups.update(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        pass  # a uid without a passwd entry has only its effective gid
    return Caller(pid=pid, uid=uid, gid=gid, groups=frozenset(groups))


def _request_id(line: bytes) -> wire.RequestId:
    """Best-effort id of an undecodable request, so even its error reply can be matched."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, int | str) and not isinstance(rid, bool) else None


class _CloseConnection(Exception):
    """Internal: the reply has been sent and this connection must be closed."""


class ControlServer:
    def __init__(
        self,
        path: str,
        handlers: Mapping[str, Handler],
        *,
        daemon_uid: int | None = None,
        read_gid: int | None = None,
        admin_gid: int | None = None,
        socket_dirs: list[str] | None = None,
        admission: Admission | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """``socket_dirs``: directories the caller created for the socket
        (:func:`ensure_socket_dir`); :meth:`set_groups` re-groups them with the socket."""
        if "hello" in handlers:
            raise ValueError("'hello' is built into ControlServer; do not register it")
        self.path = path
        self._handlers = dict(handlers)
        self._daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
        self._read_gid = read_gid
        self._admin_gid = admin_gid
        self._socket_dirs = list(socket_dirs or ())
        self._admission = admission or Admission()
        self._idle_timeout = idle_timeout
        self._idle_closed = 0
        self._refusals = Throttled(log, logging.WARNING)
        self._state = ServerState.NEW
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we bound
        self._connections: set[asyncio.Task[None]] = set()
        self._connections_total = 0
        self._streams_open = 0
        self._requests = 0
        self._mutating = 0
        self._errors: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------------

    def _set_state(self, state: ServerState) -> None:
        log.debug("control server %s: %s -> %s", self.path, self._state.name, state.name)
        self._state = state

    @property
    def state(self) -> ServerState:
        return self._state

    async def start(self) -> None:
        """Bind and listen; raise ``ControlError`` if the path is unusable or taken."""
        if self._state is not ServerState.NEW:
            raise RuntimeError(f"ControlServer.start() called in state {self._state.name}")
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ControlError(
                wire.INVALID_CONFIG,
                f"control socket path {self.path!r} is longer than {_SUN_PATH_MAX} bytes; "
                "choose a shorter daemon.control_socket",
            )
        self._ensure_parent_dir()
        self._clear_path()
        sock = self._bind()
        try:
            # A burst of CLI/monitoring clients must queue, not get EAGAIN (default 100).
            self._server = await asyncio.start_unix_server(
                self._on_connect, sock=sock, limit=wire.MAX_LINE, backlog=1024
            )
        except BaseException:
            sock.close()
            self._unlink_own_socket()
            raise
        self._set_state(ServerState.LISTENING)
        log.info("control socket listening on %s", self.path)

    async def close(self, grace: float = _CLOSE_GRACE) -> None:
        """Stop accepting, cancel connections (wait at most ``grace`` s), remove the socket."""
        if self._state is ServerState.CLOSED:
            return
        self._set_state(ServerState.CLOSED)
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks and grace > 0:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                log.warning("%d control connection(s) did not finish on close", len(pending))
        if self._server is not None and grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._server.wait_closed()
        self._unlink_own_socket()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _ensure_parent_dir(self) -> None:
        # Readers need search permission on the directory to reach the socket.
        self._socket_dirs += ensure_socket_dir(self.path, self._read_gid)

    def set_groups(self, read_gid: int | None, admin_gid: int | None) -> None:
        """Apply new read/admin groups at once: the next request of every connection,
        open ones included, is judged by them; the socket (and the directories this
        daemon created for it) change group so new readers can reach it."""
        self._read_gid, self._admin_gid = read_gid, admin_gid
        gid = read_gid if read_gid is not None else os.getgid()
        for d in self._socket_dirs:
            _chgrp(d, gid)
        if self._inode is not None:
            _chgrp(self.path, gid)
        log.info("control socket %s: read group %s, admin group %s", self.path, read_gid, admin_gid)

    def _clear_path(self) -> None:
        # Python 3.11's create_unix_server silently unlinks whatever socket is at the
        # path, which would steal a running daemon's socket: probe it first.
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(
                wire.CONFLICT,
                f"{self.path} exists and is not a socket; remove it or choose another "
                "daemon.control_socket",
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing stale control socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except OSError as exc:
            # EAGAIN: a live daemon with a full backlog; anything else: we cannot tell.
            if exc.errno not in (errno.EAGAIN, errno.EACCES) and not isinstance(exc, TimeoutError):
                raise
        finally:
            probe.close()
        raise ControlError(
            wire.CONFLICT,
            f"another wsgate daemon is listening on {self.path}; stop it first "
            "(`wsgate stop`) or choose another daemon.control_socket",
        )

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The umask makes the file appear 0660 from its first instant; chmod/chown then
        # run before listen(), so no one can connect while the mode or group is wrong.
        old_umask = os.umask(0o117)
        try:
            sock.bind(self.path)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        try:
            os.chmod(self.path, 0o660)
            if self._read_gid is not None:
                _chgrp(self.path, self._read_gid)
            st = os.stat(self.path)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            raise
        self._inode = (st.st_dev, st.st_ino)
        return sock

    def _unlink_own_socket(self) -> None:
        # Only remove the file if it is still the socket we bound, not a successor's.
        if self._inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._inode = None

    # -- connections -----------------------------------------------------------------

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so the connection task is ours: on 3.11, a task that asyncio
        # streams creates for a coroutine callback logs a spurious traceback when
        # close() cancels it.
        if self._state is not ServerState.LISTENING:
            writer.close()
            return
        try:
            raw = writer.get_extra_info("socket").getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size
            )
        except OSError:  # the peer is gone already
            writer.close()
            return
        pid, uid, _gid = _PEERCRED.unpack(raw)
        refused = self._admission.admit(uid, uid in (0, self._daemon_uid))
        if refused is not None:
            # One line and a hang-up, so the CLI can say why; the log gets one line per
            # interval however many arrive.
            self._errors[wire.TOO_MANY_CONNECTIONS] += 1
            writer.write(wire.encode_error(None, wire.TOO_MANY_CONNECTIONS, refused))
            writer.close()
            self._refusals.event(
                f"control: refused a connection from pid={pid} uid={uid}: {refused}"
            )
            return
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        task.add_done_callback(lambda _t: self._admission.release(uid))
        self._connections_total += 1

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            caller = peer_caller(writer.get_extra_info("socket"))
            log.debug("control connection from pid=%d uid=%d", caller.pid, caller.uid)
            await self._serve(reader, writer, caller)
        except (_CloseConnection, ConnectionError):
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, caller: Caller
    ) -> None:
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout):
                    line = await reader.readline()
            except TimeoutError:
                # An idle connection holds a descriptor for nothing; the CLI reconnects.
                self._idle_closed += 1
                log.debug(
                    "control: closing idle connection of pid=%d uid=%d", caller.pid, caller.uid
                )
                raise _CloseConnection from None
            except ValueError:
                # StreamReader's limit overran: the rest of the line is unread, so the
                # stream cannot be resynchronised; reply and hang up.
                await self._send_error(
                    writer,
                    None,
                    ControlError(wire.LINE_TOO_LONG, f"request line exceeds {wire.MAX_LINE} bytes"),
                )
                raise _CloseConnection from None
            if not line:
                return  # EOF; a half-closed peer has had all its replies already
            if not line.strip():
                continue
            await self._handle_line(line, writer, caller)

    async def _handle_line(self, line: bytes, writer: asyncio.StreamWriter, caller: Caller) -> None:
        self._requests += 1
        try:
            request = wire.decode_line(line)
        except ControlError as exc:
            await self._send_error(writer, _request_id(line), exc)
            if exc.code != wire.INVALID_PARAMS:
                raise _CloseConnection from None
            return
        rid: wire.RequestId = request.get("id")
        method: str = request["method"]
        params: Params = request["params"]
        try:
            if method == "hello":
                await self._send(writer, wire.encode_result(rid, self._hello(caller)))
                return
            handler = self._authorise(method, caller)
            if handler.params is not None:
                params = handler.params.check(method, params)
            if handler.stream:
                await self._run_stream(rid, handler, params, caller, writer)
            else:
                result = await cast(HandlerFunc, handler.func)(params, caller)
                try:
                    data = wire.encode_result(rid, result)
                except (TypeError, ValueError) as exc:
                    raise ControlError(
                        wire.INTERNAL, f"{method}: result is not JSON-serialisable: {exc}"
                    ) from exc
                await self._send(writer, data)
        except ControlError as exc:
            await self._send_error(writer, rid, exc)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("control method %s failed", method)
            await self._send_error(
                writer, rid, ControlError(wire.INTERNAL, f"{method}: {type(exc).__name__}: {exc}")
            )

    def _authorise(self, method: str, caller: Caller) -> Handler:
        handler = self._handlers.get(method)
        if handler is None:
            raise ControlError(
                wire.UNKNOWN_METHOD,
                f"unknown method {method!r}; the daemon may be older than this CLI",
                {"methods": self.methods()},
            )
        if not permitted(
            caller,
            handler.mutating,
            daemon_uid=self._daemon_uid,
            read_gid=self._read_gid,
            admin_gid=self._admin_gid,
        ):
            level = "admin" if handler.mutating else "read"
            log.warning(
                "control: refused %s (%s) to pid=%d uid=%d", method, level, caller.pid, caller.uid
            )
            raise ControlError(wire.PERMISSION_DENIED, self._refusal(method, level, caller))
        if handler.mutating:
            self._mutating += 1
            log.info("control: %s by pid=%d uid=%d", method, caller.pid, caller.uid)
        return handler

    def _refusal(self, method: str, level: str, caller: Caller) -> str:
        gid = self._admin_gid if level == "admin" else (self._read_gid or self._admin_gid)
        fix = f"run it as root or join group {gid}" if gid is not None else "run it as root"
        return f"uid {caller.uid} may not run {method!r} ({level} access needed); {fix}"

    async def _run_stream(
        self,
        rid: wire.RequestId,
        handler: Handler,
        params: Params,
        caller: Caller,
        writer: asyncio.StreamWriter,
    ) -> None:
        events = cast(StreamFunc, handler.func)(params, caller)
        self._streams_open += 1
        try:
            async for event, data in events:
                await self._send(writer, wire.encode_event(rid, event, data))
            await self._send(writer, wire.encode_done(rid))
        finally:
            self._streams_open -= 1
            # Run the generator's cleanup now (unsubscribe from feeds), not at GC time.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def _hello(self, caller: Caller) -> dict[str, Any]:
        access = "none"
        if permitted(
            caller,
            True,
            daemon_uid=self._daemon_uid,
            read_gid=self._read_gid,
            admin_gid=self._admin_gid,
        ):
            access = "admin"
        elif permitted(
            caller,
            False,
            daemon_uid=self._daemon_uid,
            read_gid=self._read_gid,
            admin_gid=self._admin_gid,
        ):
            access = "read"
        return {
            "proto": wire.PROTO,
            "min_proto": wire.MIN_PROTO,
            "daemon_version": __version__,
            "methods": self.methods(),
            "access": access,
        }

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def _send_error(
        self, writer: asyncio.StreamWriter, rid: wire.RequestId, exc: ControlError
    ) -> None:
        self._errors[exc.code] += 1
        await self._send(writer, wire.encode_error(rid, exc.code, exc.message, exc.details))

    # -- introspection ---------------------------------------------------------------

    def methods(self) -> list[str]:
        return sorted([*self._handlers, "hello"])

    def statistics(self) -> ControlServerStatistics:
        return ControlServerStatistics(
            state=self._state.name.lower(),
            connections_open=len(self._connections),
            connections_total=self._connections_total,
            streams_open=self._streams_open,
            requests=self._requests,
            mutating_requests=self._mutating,
            errors=MappingProxyType(dict(self._errors)),
            refused_connections=self._admission.refused,
            idle_closed=self._idle_closed,
        )

    def __repr__(self) -> str:
        return (
            f"<ControlServer {self.path} {self._state.name.lower()} "
            f"connections={len(self._connections)} requests={self._requests} "
            f"errors={sum(self._errors.values())}>"
        )
