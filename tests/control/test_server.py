from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from wsgate import __version__
from wsgate.control import wire
from wsgate.control.client import ControlClient
from wsgate.control.server import Caller, ControlServer, Handler, ServerState, permitted
from wsgate.errors import ControlError

TIMEOUT = 10.0
NOBODY = 65534


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # tmp_path can exceed the 108-byte sun_path limit; /tmp keeps paths short.
    d = tempfile.mkdtemp(dir="/tmp", prefix="wsg-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sock_path(sock_dir: str) -> str:
    return os.path.join(sock_dir, "c.sock")


class Feed:
    """Test handlers and what they observed."""

    def __init__(self) -> None:
        self.stream_closed = asyncio.Event()
        self.forever_started = asyncio.Event()
        self.reloads = 0

    async def echo(self, params: dict[str, Any], caller: Caller) -> Any:
        return {"params": params, "uid": caller.uid, "pid": caller.pid}

    async def boom(self, params: dict[str, Any], caller: Caller) -> Any:
        raise RuntimeError("kaput")

    async def missing(self, params: dict[str, Any], caller: Caller) -> Any:
        raise ControlError(wire.NOT_FOUND, "no route 'x'", {"route": "x"})

    async def unserialisable(self, params: dict[str, Any], caller: Caller) -> Any:
        return {"s": {1, 2}}

    async def reload(self, params: dict[str, Any], caller: Caller) -> Any:
        self.reloads += 1
        return {"reloaded": True}

    async def ticks(self, params: dict[str, Any], caller: Caller) -> AsyncIterator[tuple[str, Any]]:
        try:
            for i in range(int(params.get("n", 3))):
                yield "tick", {"i": i}
        finally:
            self.stream_closed.set()

    async def forever(
        self, params: dict[str, Any], caller: Caller
    ) -> AsyncIterator[tuple[str, Any]]:
        try:
            yield "started", None
            self.forever_started.set()
            await asyncio.Event().wait()
        finally:
            self.stream_closed.set()

    def handlers(self) -> dict[str, Handler]:
        return {
            "echo": Handler(self.echo),
            "boom": Handler(self.boom),
            "missing": Handler(self.missing),
            "unserialisable": Handler(self.unserialisable),
            "reload": Handler(self.reload, mutating=True),
            "ticks": Handler(self.ticks, stream=True),
            "forever": Handler(self.forever, stream=True),
        }


async def connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(path, limit=4 * wire.MAX_LINE)


async def request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    rid: int,
    method: str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    writer.write(wire.encode_request(rid, method, params))
    await writer.drain()
    return json.loads(await reader.readline())  # type: ignore[no-any-return]


async def wait_for_condition(cond: Callable[[], bool]) -> None:
    # Server bookkeeping has no event to await; poll it, bounded by run()'s timeout.
    while not cond():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


# -- permission policy as pure code -------------------------------------------------------


def _caller(uid: int, *groups: int) -> Caller:
    return Caller(pid=1234, uid=uid, gid=groups[0] if groups else uid, groups=frozenset(groups))


@pytest.mark.parametrize(
    ("caller", "mutating", "allowed"),
    [
        (_caller(0), True, True),  # root
        (_caller(500), True, True),  # the daemon's own uid
        (_caller(1001, 1001), False, False),  # stranger: nothing
        (_caller(1001, 1001), True, False),
        (_caller(1002, 1002, 600), False, True),  # read group: reads
        (_caller(1002, 1002, 600), True, False),  # ... but no mutations
        (_caller(1003, 1003, 700), True, True),  # admin group: everything
        (_caller(1003, 1003, 700), False, True),
    ],
)
def test_permission_policy(caller: Caller, mutating: bool, allowed: bool) -> None:
    assert permitted(caller, mutating, daemon_uid=500, read_gid=600, admin_gid=700) is allowed


def test_permission_policy_without_groups_only_trusts_root_and_daemon() -> None:
    stranger = _caller(1001, 600, 700)
    assert not permitted(stranger, False, daemon_uid=500, read_gid=None, admin_gid=None)
    assert permitted(_caller(500), False, daemon_uid=500, read_gid=None, admin_gid=None)


# -- serving ------------------------------------------------------------------------------


def test_hello_plain_methods_and_errors_share_one_connection(sock_path: str) -> None:
    async def main() -> None:
        feed = Feed()
        async with ControlServer(sock_path, feed.handlers()) as server:
            r, w = await connect(sock_path)
            hello = await request(r, w, 1, "hello")
            assert hello["ok"] is True and hello["id"] == 1
            assert hello["result"] == {
                "proto": 1,
                "min_proto": 1,
                "daemon_version": __version__,
                "methods": sorted([*feed.handlers(), "hello"]),
                "access": "admin",
            }
            echo = await request(r, w, 2, "echo", {"x": [1, "€"]})
            assert echo["result"] == {
                "params": {"x": [1, "€"]},
                "uid": os.getuid(),
                "pid": os.getpid(),
            }

            boom = await request(r, w, 3, "boom")
            assert boom["ok"] is False and boom["id"] == 3
            assert boom["error"]["code"] == wire.INTERNAL
            assert "kaput" in boom["error"]["message"]

            missing = await request(r, w, 4, "missing")
            assert missing["error"] == {
                "code": "not_found",
                "message": "no route 'x'",
                "details": {"route": "x"},
            }
            unknown = await request(r, w, "five", "nope")  # type: ignore[arg-type]
            assert unknown["id"] == "five"
            assert unknown["error"]["code"] == wire.UNKNOWN_METHOD
            assert "hello" in unknown["error"]["details"]["methods"]

            bad = await request(r, w, 6, "unserialisable")
            assert bad["error"]["code"] == wire.INTERNAL
            assert "JSON" in bad["error"]["message"]

            w.write(b'{"v":1,"id":7,"method":"echo","params":[1]}\n')
            invalid = json.loads(await r.readline())
            assert invalid["id"] == 7 and invalid["error"]["code"] == wire.INVALID_PARAMS

            # After every per-request error the connection still serves.
            assert (await request(r, w, 8, "reload"))["result"] == {"reloaded": True}
            assert feed.reloads == 1
            w.close()

            stats = server.statistics()
            assert stats.requests == 8
            assert stats.mutating_requests == 1
            assert dict(stats.errors) == {
                "internal": 2,
                "not_found": 1,
                "unknown_method": 1,
                "invalid_params": 1,
            }
            assert f"{sock_path} listening" in repr(server)

    run(main())


def test_stream_sends_events_then_done_and_connection_continues(sock_path: str) -> None:
    async def main() -> None:
        feed = Feed()
        async with ControlServer(sock_path, feed.handlers()):
            r, w = await connect(sock_path)
            w.write(wire.encode_request(9, "ticks", {"n": 3}))
            lines = [json.loads(await r.readline()) for _ in range(4)]
            assert [(m["event"], m["data"]) for m in lines[:3]] == [
                ("tick", {"i": 0}),
                ("tick", {"i": 1}),
                ("tick", {"i": 2}),
            ]
            assert all(m["id"] == 9 for m in lines)
            assert lines[3] == {"v": 1, "id": 9, "ok": True, "done": True}
            assert feed.stream_closed.is_set()
            assert (await request(r, w, 10, "echo"))["ok"] is True
            w.close()

    run(main())


def test_stream_generator_is_closed_when_client_goes_away(sock_path: str) -> None:
    async def main() -> None:
        feed = Feed()
        async with ControlServer(sock_path, feed.handlers()) as server:
            r, w = await connect(sock_path)
            w.write(wire.encode_request(1, "ticks", {"n": 10**9}))
            assert json.loads(await r.readline())["event"] == "tick"
            w.close()
            await feed.stream_closed.wait()
            await wait_for_condition(lambda: server.statistics().connections_open == 0)
            assert server.statistics().streams_open == 0

    run(main())


def test_half_closed_client_still_gets_its_reply(sock_path: str) -> None:
    async def main() -> None:
        async with ControlServer(sock_path, Feed().handlers()):
            r, w = await connect(sock_path)
            # Last line without a newline, then EOF: the way `printf ... | socat` sends.
            w.write(wire.encode_request(1, "echo", {"a": 1}) + wire.encode_request(2, "echo")[:-1])
            w.write_eof()
            first = json.loads(await r.readline())
            second = json.loads(await r.readline())
            assert (first["id"], second["id"]) == (1, 2)
            assert first["result"]["params"] == {"a": 1}
            assert await r.read() == b""  # then the server hangs up
            w.close()

    run(main())


def test_garbage_gets_an_error_and_a_hang_up_and_the_server_carries_on(sock_path: str) -> None:
    async def main() -> None:
        async with ControlServer(sock_path, Feed().handlers()) as server:
            r, w = await connect(sock_path)
            w.write(b"GET / HTTP/1.1\r\n")
            reply = json.loads(await r.readline())
            assert reply["ok"] is False and reply["id"] is None
            assert reply["error"]["code"] == wire.BAD_REQUEST
            assert await r.read() == b""
            w.close()

            r, w = await connect(sock_path)
            w.write(b'{"v":9,"id":3,"method":"echo"}\n')
            reply = json.loads(await r.readline())
            assert reply["id"] == 3 and reply["error"]["code"] == wire.UNSUPPORTED_VERSION
            assert await r.read() == b""
            w.close()

            r, w = await connect(sock_path)
            assert (await request(r, w, 1, "echo"))["ok"] is True
            w.close()
            assert server.statistics().errors["bad_request"] == 1
            assert server.statistics().connections_total == 3

    run(main())


def test_two_mib_line_is_refused_with_line_too_long(sock_path: str) -> None:
    async def main() -> None:
        async with ControlServer(sock_path, Feed().handlers()) as server:
            r, w = await connect(sock_path)
            payload = wire.encode_request(1, "echo", {"blob": "a" * (2 << 20)})

            async def send() -> None:
                w.write(payload)
                try:
                    await w.drain()
                except ConnectionError:
                    pass  # the server hangs up before reading it all

            sender = asyncio.create_task(send())
            reply = json.loads(await r.readline())
            assert reply["ok"] is False
            assert reply["error"]["code"] == wire.LINE_TOO_LONG
            await sender
            try:
                rest = await r.read()
            except ConnectionResetError:
                rest = b""  # Linux resets a peer that left unread data behind
            assert rest == b""
            w.close()
            assert server.statistics().errors == {"line_too_long": 1}
            r, w = await connect(sock_path)
            assert (await request(r, w, 2, "echo"))["ok"] is True
            w.close()

    run(main())


# -- the socket file ----------------------------------------------------------------------


def test_socket_is_0660_and_missing_parent_is_created_0750(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "run", "c.sock")
    gid = NOBODY if os.getuid() == 0 else os.getgid()

    async def main() -> None:
        async with ControlServer(path, {}, read_gid=gid):
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660
            assert st.st_gid == gid
            parent = os.stat(os.path.dirname(path))
            assert stat.S_IMODE(parent.st_mode) == 0o750
            assert parent.st_gid == gid

    run(main())
    assert not os.path.exists(path)  # close() removes the socket


def test_live_socket_is_refused(sock_path: str) -> None:
    async def main() -> None:
        async with ControlServer(sock_path, Feed().handlers()):
            second = ControlServer(sock_path, {})
            with pytest.raises(ControlError) as info:
                await second.start()
            assert info.value.code == wire.CONFLICT
            assert "another wsgate daemon is listening" in info.value.message
            await second.close()
            # The first daemon still owns and serves its socket.
            r, w = await connect(sock_path)
            assert (await request(r, w, 1, "echo"))["ok"] is True
            w.close()

    run(main())


def test_stale_socket_is_replaced(sock_path: str) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()  # a crashed daemon leaves the file behind
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)

    async def main() -> None:
        async with ControlServer(sock_path, Feed().handlers()):
            r, w = await connect(sock_path)
            assert (await request(r, w, 1, "echo"))["ok"] is True
            w.close()

    run(main())


def test_non_socket_at_the_path_is_refused_and_left_alone(sock_path: str) -> None:
    with open(sock_path, "w") as f:
        f.write("precious")

    async def main() -> None:
        with pytest.raises(ControlError) as info:
            await ControlServer(sock_path, {}).start()
        assert info.value.code == wire.CONFLICT
        assert "not a socket" in info.value.message

    run(main())
    with open(sock_path) as f:
        assert f.read() == "precious"


def test_too_long_path_is_a_clear_config_error(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "x" * 120 + ".sock")

    async def main() -> None:
        with pytest.raises(ControlError) as info:
            await ControlServer(path, {}).start()
        assert info.value.code == wire.INVALID_CONFIG
        assert "longer than" in info.value.message

    run(main())


def test_close_cancels_connections_and_spares_a_successors_socket(sock_path: str) -> None:
    async def main() -> None:
        feed = Feed()
        server = ControlServer(sock_path, feed.handlers())
        await server.start()
        idle_r, idle_w = await connect(sock_path)
        _, w = await connect(sock_path)
        w.write(wire.encode_request(1, "forever"))
        await feed.forever_started.wait()
        await wait_for_condition(lambda: server.statistics().connections_open == 2)

        # Another process replaced our socket file (e.g. after an operator's rm).
        os.unlink(sock_path)
        successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        successor.bind(sock_path)
        try:
            await server.close()
            assert server.state is ServerState.CLOSED
            assert feed.stream_closed.is_set()
            assert server.statistics().connections_open == 0
            assert await idle_r.read() == b""
        finally:
            successor.close()
            idle_w.close()
            w.close()

    run(main())
    assert os.path.exists(sock_path)  # close() left the successor's socket alone


def test_hello_is_reserved() -> None:
    with pytest.raises(ValueError, match="hello"):
        ControlServer("/tmp/x.sock", {"hello": Handler(Feed().echo)})


# -- permissions over a real socket -------------------------------------------------------


def call_as_stranger(path: str, calls: list[str]) -> list[Any]:
    """Run ``calls`` through ControlClient as a uid that is neither root nor the daemon.

    As root the calls run in a forked child that drops to nobody (uid/gid 65534); as any
    other user they run in-process against a server told that the daemon is someone else.
    Returns, per call, the result or the error code.
    """

    def do_calls() -> list[Any]:
        out: list[Any] = []
        with ControlClient(path, timeout=5.0) as client:
            for method in calls:
                try:
                    out.append(client.call(method))
                except ControlError as exc:
                    out.append(exc.code)
        return out

    if os.getuid() != 0:
        return do_calls()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(wfd, json.dumps(do_calls()).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


def stranger_server(path: str, feed: Feed, read_gid: int | None) -> ControlServer:
    daemon_uid = os.getuid() + 1 if os.getuid() != 0 else 0
    return ControlServer(path, feed.handlers(), daemon_uid=daemon_uid, read_gid=read_gid)


def test_stranger_is_refused_read_and_write(sock_dir: str, sock_path: str) -> None:
    os.chmod(sock_dir, 0o755)

    async def main() -> None:
        feed = Feed()
        async with stranger_server(sock_path, feed, read_gid=None) as server:
            # Simulate a loosened socket mode: the daemon must still refuse by credentials.
            os.chmod(sock_path, 0o666)
            results = await asyncio.to_thread(
                call_as_stranger, sock_path, ["hello", "echo", "reload"]
            )
            assert results[0]["access"] == "none"
            assert results[1:] == [wire.PERMISSION_DENIED, wire.PERMISSION_DENIED]
            assert feed.reloads == 0
            assert server.statistics().errors == {"permission_denied": 2}

    run(main())


def test_read_group_may_read_but_not_mutate(sock_dir: str, sock_path: str) -> None:
    os.chmod(sock_dir, 0o755)
    gid = NOBODY if os.getuid() == 0 else os.getgid()

    async def main() -> None:
        feed = Feed()
        async with stranger_server(sock_path, feed, read_gid=gid):
            # The socket stays 0660; group ownership alone lets the reader in.
            results = await asyncio.to_thread(
                call_as_stranger, sock_path, ["hello", "echo", "reload"]
            )
            assert results[0]["access"] == "read"
            assert results[1]["params"] == {}
            assert results[2] == wire.PERMISSION_DENIED
            assert feed.reloads == 0

    run(main())
