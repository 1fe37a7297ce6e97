"""A relayed session's orders: sent before the upstream is open, they go first, in order;
then the session switches to the verbatim path, and the exchange sees every frame once."""

from __future__ import annotations

import asyncio
import tempfile

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.simstack import daemon_head
from wsgate import Gateway
from wsgate.config import parse_config
from wsgate.runtime.downstream.wsserver import LeanServerConnection


def test_orders_queued_before_the_upstream_opened_go_first_then_verbatim() -> None:
    async def scenario() -> None:
        got: list[str | bytes] = []
        gate = asyncio.Event()

        async def slow_open(conn: ServerConnection, request: Request) -> Response | None:
            await gate.wait()  # the exchange takes its time to accept
            return None

        async def exchange(ws: ServerConnection) -> None:
            async for msg in ws:
                got.append(msg)
                if msg == "done?":
                    await ws.send(f"{len(got) - 1}")

        async with serve(exchange, "127.0.0.1", 0, process_request=slow_open) as up:
            port = up.sockets[0].getsockname()[1]
            tmp = tempfile.mkdtemp(dir="/tmp")
            cfg = parse_config(
                daemon_head(tmp)
                + f"""
[routes.raw]
dialect = "raw"
type = "trading"
min_connections = 0
[[routes.raw.endpoints]]
url = "ws://127.0.0.1:{port}"
"""
            )
            async with Gateway(cfg, seed=1) as gw, connect(gw.url("raw")) as bot:
                early = [f"early-{i}" for i in range(5)]
                for m in early:
                    await bot.send(m)
                gate.set()
                late = [f"late-{i}" for i in range(50)] + [b"\x00\x01binary"]
                async with asyncio.timeout(10):
                    while not got:  # noqa: ASYNC110 - the exchange's own record
                        await asyncio.sleep(0.01)
                for m in late:
                    await bot.send(m)
                await bot.send("done?")
                assert await asyncio.wait_for(bot.recv(), 10) == str(len(early) + len(late))
                (session,) = gw.daemon.gateway.sessions
                assert isinstance(session.ws, LeanServerConnection)
                assert session.ws.relaying and session.ws.relayed_frames >= 1
                assert session.messages_in == len(early) + len(late) + 1
        assert got[:-1] == [*early, *late]  # every order once, in the order sent

    asyncio.run(scenario())
