from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from wsgate.control import wire
from wsgate.control.client import ControlClient, resolve_socket_path
from wsgate.control.server import Caller, ControlServer, Handler
from wsgate.errors import ControlError, DaemonNotRunning, PermissionDenied
from wsgate.paths import default_control_socket

TIMEOUT = 10.0


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp(dir="/tmp", prefix="wsg-")
    yield os.path.join(d, "c.sock")
    shutil.rmtree(d, ignore_errors=True)


class Daemon:
    def __init__(self) -> None:
        self.stream_closed = asyncio.Event()
        self.block = asyncio.Event()

    async def status(self, params: dict[str, Any], caller: Caller) -> Any:
        return {"routes": 2, "echo": params}

    async def reload(self, params: dict[str, Any], caller: Caller) -> Any:
        raise ControlError(wire.INVALID_CONFIG, "2 config error(s)", [{"path": "a"}, {"path": "b"}])

    async def deny(self, params: dict[str, Any], caller: Caller) -> Any:
        raise ControlError(wire.PERMISSION_DENIED, "not you")

    async def hang(self, params: dict[str, Any], caller: Caller) -> Any:
        await self.block.wait()
        return None

    async def follow(
        self, params: dict[str, Any], caller: Caller
    ) -> AsyncIterator[tuple[str, Any]]:
        try:
            for i in range(int(params["n"])):
                yield "alert", {"seq": i}
            if params.get("fail"):
                raise ControlError(wire.NOT_FOUND, "feed vanished")
        finally:
            self.stream_closed.set()

    def handlers(self) -> dict[str, Handler]:
        return {
            "status": Handler(self.status),
            "reload": Handler(self.reload, mutating=True),
            "deny": Handler(self.deny),
            "hang": Handler(self.hang),
            "alerts.follow": Handler(self.follow, stream=True),
        }


def with_server(path: str, body: Callable[[ControlServer, Daemon], Awaitable[None]]) -> None:
    async def main() -> None:
        daemon = Daemon()
        async with ControlServer(path, daemon.handlers()) as server:
            await body(server, daemon)

    async def bounded() -> None:
        await asyncio.wait_for(main(), TIMEOUT)

    asyncio.run(bounded())


def test_call_returns_result_and_reuses_its_connection(sock_path: str) -> None:
    async def body(server: ControlServer, daemon: Daemon) -> None:
        def calls() -> list[Any]:
            with ControlClient(sock_path) as client:
                out = [client.call("status", {"route": "b"}), client.call("status")]
                out.append(client.hello())
                out.append(repr(client))
            return out

        status1, status2, hello, text = await asyncio.to_thread(calls)
        assert status1 == {"routes": 2, "echo": {"route": "b"}}
        assert status2 == {"routes": 2, "echo": {}}
        assert hello["proto"] == wire.PROTO and "alerts.follow" in hello["methods"]
        assert "connected" in text
        assert server.statistics().connections_total == 1

    with_server(sock_path, body)


def test_daemon_errors_keep_their_code_and_details(sock_path: str) -> None:
    async def body(server: ControlServer, daemon: Daemon) -> None:
        def calls() -> list[ControlError]:
            errors: list[ControlError] = []
            with ControlClient(sock_path) as client:
                for method in ("reload", "deny", "no.such.method"):
                    try:
                        client.call(method)
                    except ControlError as exc:
                        errors.append(exc)
                assert client.call("status")["routes"] == 2  # still usable
            return errors

        reload_err, deny_err, unknown_err = await asyncio.to_thread(calls)
        assert reload_err.code == wire.INVALID_CONFIG
        assert reload_err.details == [{"path": "a"}, {"path": "b"}]
        assert isinstance(deny_err, PermissionDenied) and deny_err.message == "not you"
        assert wire.exit_code(deny_err.code) == 4
        assert unknown_err.code == wire.UNKNOWN_METHOD
        assert wire.exit_code(unknown_err.code) == 2

    with_server(sock_path, body)


def test_stream_yields_until_done(sock_path: str) -> None:
    async def body(server: ControlServer, daemon: Daemon) -> None:
        def consume() -> list[tuple[str, Any]]:
            return list(ControlClient(sock_path).stream("alerts.follow", {"n": 3}))

        events = await asyncio.to_thread(consume)
        assert events == [("alert", {"seq": 0}), ("alert", {"seq": 1}), ("alert", {"seq": 2})]

    with_server(sock_path, body)


def test_stream_error_is_raised_after_the_events(sock_path: str) -> None:
    async def body(server: ControlServer, daemon: Daemon) -> None:
        def consume() -> tuple[list[Any], str]:
            seen: list[Any] = []
            try:
                for _, data in ControlClient(sock_path).stream(
                    "alerts.follow", {"n": 2, "fail": True}
                ):
                    seen.append(data["seq"])
            except ControlError as exc:
                return seen, exc.code
            return seen, "no error"

        assert await asyncio.to_thread(consume) == ([0, 1], wire.NOT_FOUND)

    with_server(sock_path, body)


def test_breaking_out_of_a_stream_ends_it_on_the_daemon(sock_path: str) -> None:
    async def body(server: ControlServer, daemon: Daemon) -> None:
        def consume() -> Any:
            stream = ControlClient(sock_path).stream("alerts.follow", {"n": 10**9})
            first = next(stream)
            stream.close()
            return first

        assert await asyncio.to_thread(consume) == ("alert", {"seq": 0})
        await daemon.stream_closed.wait()

    with_server(sock_path, body)


def test_timeout_is_a_control_error(sock_path: str) -> None:
    async def body(server: ControlServer, daemon: Daemon) -> None:
        def call() -> str:
            try:
                ControlClient(sock_path, timeout=0.2).call("hang")
            except ControlError as exc:
                return exc.code
            return "no error"

        assert await asyncio.to_thread(call) == wire.TIMEOUT
        daemon.block.set()

    with_server(sock_path, body)


def test_missing_socket_is_daemon_not_running(sock_path: str) -> None:
    with pytest.raises(DaemonNotRunning) as info:
        ControlClient(sock_path).call("status")
    assert info.value.socket_path == sock_path
    assert wire.exit_code(info.value.code) == 3


def test_stale_socket_is_daemon_not_running(sock_path: str) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()
    with pytest.raises(DaemonNotRunning):
        ControlClient(sock_path).call("status")


def test_inaccessible_socket_is_permission_denied(sock_path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()
    os.chmod(os.path.dirname(sock_path), 0o755)
    os.chmod(sock_path, 0o600)
    try:
        if os.getuid() != 0:
            os.chmod(sock_path, 0)
            with pytest.raises(PermissionDenied):
                ControlClient(sock_path).call("status")
            return
        # Root bypasses file modes: check from a child that drops to nobody.
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                ControlClient(sock_path).call("status")
            except PermissionDenied:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        listener.close()


def test_over_long_request_is_refused_before_connecting(sock_path: str) -> None:
    with pytest.raises(ControlError) as info:
        ControlClient(sock_path).call("status", {"blob": "a" * wire.MAX_LINE})
    assert info.value.code == wire.LINE_TOO_LONG


# -- socket path resolution ---------------------------------------------------------------


def test_resolve_socket_path_precedence(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "wsgate.toml"
    config.write_text('[daemon]\ncontrol_socket = "/srv/ws/control.sock"\n')
    monkeypatch.setenv("WSGATE_SOCKET", "/env/control.sock")
    assert resolve_socket_path("/cli.sock", str(config)) == "/cli.sock"
    assert resolve_socket_path(None, str(config)) == "/env/control.sock"
    monkeypatch.delenv("WSGATE_SOCKET")
    assert resolve_socket_path(None, str(config)) == "/srv/ws/control.sock"
    assert resolve_socket_path(None, None) == default_control_socket()

    bare = tmp_path / "bare.toml"
    bare.write_text("[routes]\n")
    assert resolve_socket_path(None, str(bare)) == default_control_socket()


def test_resolve_socket_path_reports_unreadable_config(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WSGATE_SOCKET", raising=False)
    broken = tmp_path / "broken.toml"
    broken.write_text("[daemon\n")
    with pytest.raises(ControlError) as info:
        resolve_socket_path(None, str(broken))
    assert info.value.code == wire.INVALID_CONFIG and str(broken) in info.value.message

    with pytest.raises(ControlError) as info:
        resolve_socket_path(None, str(tmp_path / "missing.toml"))
    assert "cannot read config" in info.value.message

    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[daemon]\ncontrol_socket = 5\n")
    with pytest.raises(ControlError, match="control_socket"):
        resolve_socket_path(None, str(wrong))
