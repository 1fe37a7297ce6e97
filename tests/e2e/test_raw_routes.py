"""Raw routes: no idle upstream at start, one upstream per session, the cap answers 1013."""

from __future__ import annotations

import asyncio
import tempfile

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.simstack import daemon_head
from wsgate import Gateway
from wsgate.config import parse_config


def _config(url: str, tmp: str, max_connections: int) -> str:
    return (
        daemon_head(tmp)
        + f"""
[routes.echo]
dialect = "raw"
type = "market_data"
max_connections = {max_connections}
[[routes.echo.endpoints]]
url = "{url}"
"""
    )


async def _until(cond: object, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_raw_route_opens_one_upstream_per_session_and_none_idle() -> None:
    async def scenario() -> None:
        accepted: list[str] = []
        open_now: set[ServerConnection] = set()

        async def echo(ws: ServerConnection) -> None:
            accepted.append(ws.request.path if ws.request else "")
            open_now.add(ws)
            try:
                await ws.send("hello")  # the exchange speaks first: that frame must arrive
                async for msg in ws:
                    await ws.send(msg)
            finally:
                open_now.discard(ws)

        async with serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            tmp = tempfile.mkdtemp(dir="/tmp")
            cfg = parse_config(_config(f"ws://127.0.0.1:{port}", tmp, 2))
            assert cfg.route("echo").min_connections == 0
            async with Gateway(cfg, seed=1) as gw:
                route = gw.daemon.routes["echo"]
                # No warm pool: the route wants no pooled connection and has none.
                assert set(route._targets.values()) == {0}
                assert accepted == [] and route.connections() == []
                async with (
                    connect(gw.url("echo") + "/a?x=1") as a,
                    connect(gw.url("echo") + "/b") as b,
                ):
                    assert await asyncio.wait_for(a.recv(), 10) == "hello"
                    assert await asyncio.wait_for(b.recv(), 10) == "hello"
                    await a.send("ping")
                    assert await asyncio.wait_for(a.recv(), 10) == "ping"
                    # One upstream per session, at the session's own path and query.
                    assert sorted(accepted) == ["/a?x=1", "/b"]
                    assert len(route.relays) == 2 and not route.pool
                    # max_connections = 2: a third concurrent session is refused, 1013.
                    async with connect(gw.url("echo") + "/c") as c:
                        try:
                            await asyncio.wait_for(c.recv(), 10)
                        except ConnectionClosed:
                            pass
                        assert c.close_code == 1013
                        assert c.close_reason == "upstream capacity reached"
                    assert len(accepted) == 2
                # Sessions gone: their upstreams close, nothing stays open.
                await _until(lambda: not open_now and not route.relays)
                async with connect(gw.url("echo") + "/d") as d:
                    assert await asyncio.wait_for(d.recv(), 10) == "hello"

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_an_endpoint_query_survives_the_session_path_and_query() -> None:
    async def scenario() -> None:
        accepted: list[str] = []

        async def echo(ws: ServerConnection) -> None:
            accepted.append(ws.request.path if ws.request else "")
            async for msg in ws:
                await ws.send(msg)

        async with serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            tmp = tempfile.mkdtemp(dir="/tmp")
            cfg = parse_config(_config(f"ws://127.0.0.1:{port}/ws?foo=1", tmp, 2))
            async with Gateway(cfg, seed=1) as gw:
                async with connect(gw.url("echo") + "/a?x=1") as a:
                    await a.send("ping")
                    assert await asyncio.wait_for(a.recv(), 10) == "ping"
                async with connect(gw.url("echo")) as b:
                    await b.send("pong")
                    assert await asyncio.wait_for(b.recv(), 10) == "pong"
                # Endpoint path + session sub-path; endpoint query + session query.
                assert accepted == ["/ws/a?foo=1&x=1", "/ws?foo=1"]

    asyncio.run(scenario())
