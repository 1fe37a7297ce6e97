"""Control socket limits over real Unix sockets: caps per uid and in total, idle timeout."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from wsgate.control import wire
from wsgate.control.admission import Admission
from wsgate.control.client import ControlClient
from wsgate.control.server import Caller, ControlServer, Handler

NOBODY = 65534
TIMEOUT = 15.0


@pytest.fixture
def sock_path() -> Iterator[str]:
    d = tempfile.mkdtemp(dir="/tmp", prefix="wsg-")
    os.chmod(d, 0o755)
    yield os.path.join(d, "c.sock")
    shutil.rmtree(d, ignore_errors=True)


async def status(params: dict[str, Any], caller: Caller) -> Any:
    return {"ok": True}


async def slow_stream(params: dict[str, Any], caller: Caller) -> AsyncIterator[tuple[str, Any]]:
    for i in range(4):
        await asyncio.sleep(0.2)
        yield "tick", i


HANDLERS = {"status": Handler(status), "slow": Handler(slow_stream, stream=True)}


def _open(path: str, n: int) -> list[tuple[socket.socket, bytes]]:
    """Open ``n`` connections; for each, what arrived within a moment (b"" = nothing yet)."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.settimeout(0.5)
        try:
            got = s.recv(4096)
        except TimeoutError:
            got = b""
        out.append((s, got))
    return out


def test_idle_connections_are_closed_but_streams_are_not_idle(sock_path: str) -> None:
    async def main() -> None:
        server = ControlServer(sock_path, HANDLERS, idle_timeout=0.3)
        async with server:

            def idle_then_stream() -> tuple[bytes, list[Any]]:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(TIMEOUT)
                    s.connect(sock_path)
                    eof = s.recv(100)  # the server hangs up after 0.3 s of silence
                with ControlClient(sock_path, timeout=TIMEOUT) as client:
                    events = [data for _ev, data in client.stream("slow", {})]  # 0.8 s long
                return eof, events

            eof, events = await asyncio.to_thread(idle_then_stream)
            assert eof == b"" and events == [0, 1, 2, 3]
            assert server.statistics().idle_closed == 1

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def test_root_is_capped_too_beyond_its_reserve(sock_path: str) -> None:
    async def main() -> None:
        admission = Admission(max_total=2, max_per_uid=1, reserve=1)
        async with ControlServer(sock_path, HANDLERS, admission=admission) as server:
            conns = await asyncio.to_thread(_open, sock_path, 4)
            try:
                assert [got for _s, got in conns[:3]] == [b"", b"", b""]
                refusal = json.loads(conns[3][1])
                assert refusal["error"]["code"] == wire.TOO_MANY_CONNECTIONS
                assert "the limit even for root" in refusal["error"]["message"]
                assert server.statistics().refused_connections == 1
            finally:
                for s, _ in conns:
                    s.close()
            # Closed connections give their places back, once the server has seen them go.
            while server.statistics().connections_open:  # noqa: ASYNC110 - server state
                await asyncio.sleep(0.01)
            with ControlClient(sock_path, timeout=TIMEOUT) as client:
                assert await asyncio.to_thread(client.call, "status") == {"ok": True}

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


@pytest.mark.skipif(os.getuid() != 0, reason="acting as another user needs root")
def test_a_reader_is_capped_per_uid_and_root_still_gets_in(sock_path: str) -> None:
    async def main() -> None:
        admission = Admission(max_total=10, max_per_uid=3, reserve=2)
        server = ControlServer(
            sock_path, HANDLERS, daemon_uid=1, read_gid=NOBODY, admission=admission
        )
        async with server:
            rfd, wfd = os.pipe()
            go_fd, wait_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: nobody opens 8 connections and holds them
                try:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                    conns = _open(sock_path, 8)
                    codes = [json.loads(got)["error"]["code"] if got else None for _, got in conns]
                    os.write(wfd, json.dumps(codes).encode())
                    os.read(go_fd, 1)  # hold them until the parent has checked
                finally:
                    os._exit(0)
            data = await asyncio.to_thread(os.read, rfd, 4096)
            codes = json.loads(data)
            assert codes[:3] == [None] * 3
            assert codes[3:] == [wire.TOO_MANY_CONNECTIONS] * 5
            with ControlClient(sock_path, timeout=TIMEOUT) as client:
                assert await asyncio.to_thread(client.call, "status") == {"ok": True}
            assert server.statistics().refused_connections == 5
            os.write(wait_fd, b"x")
            await asyncio.to_thread(os.waitpid, pid, 0)
            for fd in (rfd, wfd, go_fd, wait_fd):
                os.close(fd)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
