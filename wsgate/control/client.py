"""The synchronous control client the CLI uses for every command (stdlib only, fast import).

::

    client = ControlClient(resolve_socket_path(opts.socket, opts.config))
    status = client.call("status")
    for event, data in client.stream("alerts.follow", {}):
        ...

Errors: ``DaemonNotRunning`` (no socket, or nobody listening), ``PermissionDenied``
(socket not accessible, or the daemon refused), else ``ControlError`` with the daemon's
stable code; :func:`wsgate.control.wire.exit_code` maps any of them to the CLI exit code.
"""

from __future__ import annotations

import errno
import os
import socket

from wsgate.control import wire
from wsgate.errors import ControlError, DaemonNotRunning, PermissionDenied

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing

if TYPE_CHECKING:  # keep `typing` and `types` off the CLI's import path
    from collections.abc import Generator
    from types import TracebackType
    from typing import Any, BinaryIO

__all__ = ["ControlClient", "resolve_socket_path"]

# Replies are not capped by the daemon (a large `status` is legitimate); this only
# stops a confused peer from making the CLI buffer without bound.
_MAX_REPLY = 64 << 20


def resolve_socket_path(cli_socket: str | None, config_path: str | None) -> str:
    """``--socket``, then ``$WSGATE_SOCKET``, then ``[daemon] control_socket`` of the config
    file, then the default location."""
    if cli_socket:
        return cli_socket
    env = os.environ.get("WSGATE_SOCKET")
    if env:
        return env
    if config_path:
        configured = _configured_socket(config_path)
        if configured:
            return configured
    from wsgate.paths import client_control_socket

    return client_control_socket()


def _configured_socket(config_path: str) -> str | None:
    # Only one key is needed, so read the TOML minimally instead of importing
    # wsgate.config (validation, dataclasses) on every CLI call.
    import tomllib

    try:
        with open(config_path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ControlError(
            wire.INVALID_CONFIG, f"cannot read config {config_path}: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ControlError(wire.INVALID_CONFIG, f"{config_path}: {exc}") from None
    daemon = doc.get("daemon")
    value = daemon.get("control_socket") if isinstance(daemon, dict) else None
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(
            wire.INVALID_CONFIG, f"{config_path}: daemon.control_socket must be a non-empty path"
        )
    return value


def _raise_reply_error(reply: dict[str, Any]) -> None:
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ControlError(wire.INTERNAL, f"malformed error reply: {reply!r}")
    code = str(error.get("code", wire.INTERNAL))
    message = str(error.get("message", ""))
    if code == wire.PERMISSION_DENIED:
        raise PermissionDenied(message)
    raise ControlError(code, message, error.get("details"))


class _Connection:
    """One connected socket and its line reader; dropped after any transport error."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException as exc:
            self.sock.close()
            raise self._translate(exc) from exc
        self.file: BinaryIO = self.sock.makefile("rb")

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return DaemonNotRunning(self.path, exc.strerror or "")
        if isinstance(exc, PermissionError):
            return PermissionDenied(
                f"cannot connect to {self.path}: permission denied; ask an administrator to "
                "add your user to the socket's group (see `ls -l` on the socket)"
            )
        if isinstance(exc, TimeoutError):
            return ControlError(wire.TIMEOUT, f"no answer from the daemon on {self.path} in time")
        if isinstance(exc, OSError) and exc.errno == errno.ENOTSOCK:
            return DaemonNotRunning(self.path, "not a socket")
        if isinstance(exc, ConnectionError):
            return ControlError(
                wire.CONNECTION_LOST, f"the daemon on {self.path} closed the connection: {exc}"
            )
        return exc

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._translate(exc) from exc

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def read_reply(self, rid: wire.RequestId) -> dict[str, Any]:
        """The next reply line for ``rid`` (lines for other ids are stale and skipped)."""
        while True:
            try:
                line = self.file.readline(_MAX_REPLY + 1)
            except OSError as exc:
                raise self._translate(exc) from exc
            if not line:
                raise ControlError(
                    wire.CONNECTION_LOST,
                    f"the daemon on {self.path} closed the connection before replying",
                )
            if len(line) > _MAX_REPLY:
                raise ControlError(wire.LINE_TOO_LONG, f"reply exceeds {_MAX_REPLY} bytes")
            reply = wire.decode_reply(line)
            reply_id = reply.get("id")
            if reply_id == rid:
                return reply
            if reply_id is None and reply.get("ok") is False:
                return reply  # the daemon could not even read our id

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class ControlClient:
    """Blocking client for the daemon's control socket. Not thread-safe."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._next_id = 1

    def _id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def _encode(self, rid: int, method: str, params: dict[str, Any] | None) -> bytes:
        data = wire.encode_request(rid, method, params)
        if len(data) > wire.MAX_LINE:
            raise ControlError(
                wire.LINE_TOO_LONG,
                f"{method}: request of {len(data)} bytes exceeds {wire.MAX_LINE} bytes",
            )
        return data

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run one method and return its ``result``; raise ``ControlError`` on failure."""
        rid = self._id()
        data = self._encode(rid, method, params)
        if self._conn is None:
            self._conn = _Connection(self.path, self.timeout)
        conn = self._conn
        try:
            conn.send(data)
            reply = conn.read_reply(rid)
        except BaseException:
            self.close()  # the connection's framing is unknown now
            raise
        if reply.get("ok") is not True:
            if reply.get("id") is None:
                self.close()  # the daemon hangs up after a request it could not read
            _raise_reply_error(reply)
        return reply.get("result")

    def stream(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        idle_timeout: float | None = None,
    ) -> Generator[tuple[str, Any], None, None]:
        """Yield ``(event, data)`` until the daemon ends the stream.

        Uses its own connection, closed when the iterator is closed, so breaking out of
        the loop ends the stream on the daemon side. ``idle_timeout`` (default: wait
        forever) bounds the silence between events, e.g. for `alerts.follow`.
        """
        rid = self._id()
        data = self._encode(rid, method, params)
        conn = _Connection(self.path, self.timeout)
        try:
            conn.send(data)
            conn.settimeout(idle_timeout)
            while True:
                reply = conn.read_reply(rid)
                if "event" in reply:
                    yield str(reply["event"]), reply.get("data")
                elif reply.get("ok") is True:
                    return
                else:
                    _raise_reply_error(reply)
        finally:
            conn.close()

    def hello(self) -> dict[str, Any]:
        result = self.call("hello")
        if not isinstance(result, dict):
            raise ControlError(wire.INTERNAL, f"malformed hello reply: {result!r}")
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "idle"
        return f"<ControlClient {self.path} {state} timeout={self.timeout}>"
