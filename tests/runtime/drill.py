"""In-process fault-drill rig: real route runtimes and gateway over real loopback sockets.

A :class:`Rig` parses a TOML config (the production schema), builds one
:class:`~wsgate.runtime.routing.routes.RouteRuntime` per route with a shared
:class:`~wsgate.runtime.routing.routes.RouteEnv`, serves them through a real
:class:`~wsgate.runtime.downstream.gateway.Gateway` on 127.0.0.1:0, and records every state
transition. Bots are plain websockets clients (:class:`TradeCounter`). Every wait
is bounded; the only polling is of in-process state that has no event to await.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsgate.config import Config, parse_config
from wsgate.core.states import ConnState, Transition
from wsgate.runtime.downstream.gateway import Gateway
from wsgate.runtime.routing.routes import RouteEnv, RouteRuntime
from wsgate.runtime.upstream.connection import HostBudgets, UpstreamConnection

__all__ = ["Rig", "TradeCounter", "rig", "route_toml", "run", "wait_for"]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_for(cond: Callable[[], bool], within: float = 10.0, what: str = "") -> float:
    """Poll an in-process condition (no event exists for it); returns the time it took."""
    start = time.monotonic()

    async def loop() -> None:
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(loop(), within)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what or cond}") from None
    return time.monotonic() - start


def route_toml(name: str, url: str, dialect: str = "bitfinex", **opts: Any) -> str:
    """One route table; ``opts`` are route keys (nested dicts become sub-tables)."""
    lines = [f"[routes.{name}]", f'dialect = "{dialect}"']
    opts.setdefault("type", "market_data")
    tables: dict[str, dict[str, Any]] = {}
    for k, v in opts.items():
        if isinstance(v, dict):
            tables[k] = v
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for k, table in tables.items():
        lines.append(f"[routes.{name}.{k}]")
        lines += [f"{tk} = {json.dumps(tv)}" for tk, tv in table.items()]
    lines += [f"[[routes.{name}.endpoints]]", f'url = "{url}"']
    return "\n".join(lines) + "\n"


def parse(body: str, max_connections: int = 1000) -> Config:
    head = f"""
[daemon]
control_socket = "/tmp/wsgate-drill-unused.sock"
state_dir = "/tmp/wsgate-drill-unused"
max_connections = {max_connections}
[gateway]
listen = "127.0.0.1:0"
[metrics]
listen = ""
"""
    return parse_config(head + body, "<drill>")


@dataclass
class Rig:
    config: Config
    env: RouteEnv
    routes: dict[str, RouteRuntime]
    gateway: Gateway
    transitions: list[tuple[str, Transition]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.gateway.port

    def url(self, route: str, path: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/{route}{path}"

    def conns(self, route: str) -> list[UpstreamConnection]:
        return self.routes[route].connections()

    def open_conns(self, route: str) -> list[UpstreamConnection]:
        return [c for c in self.conns(route) if c.state is ConnState.OPEN]

    def count(self, new: ConnState, conn_id: str | None = None) -> int:
        return sum(1 for cid, t in self.transitions if t.new is new and conn_id in (None, cid))


@contextlib.asynccontextmanager
async def rig(body: str, *, seed: int = 7, max_connections: int = 1000) -> AsyncIterator[Rig]:
    cfg = parse(body, max_connections)
    env = RouteEnv(
        budgets=HostBudgets(),
        rng=random.Random(seed),
        max_connections=cfg.daemon.max_connections,
        gateway_linger=cfg.gateway.linger,
        client_messages_per_second=cfg.gateway.client_messages_per_second,
    )
    routes: dict[str, RouteRuntime] = {}
    env.total_connections = lambda: sum(len(r.connections()) for r in routes.values())
    r = Rig(cfg, env, routes, Gateway(cfg.gateway, routes, flusher=env.flusher, faults=env.faults))
    env.on_transition.append(lambda c, t: r.transitions.append((c.id, t)))
    tasks = []
    for rc in cfg.routes:
        rt = RouteRuntime(rc, env)
        routes[rt.name] = rt
        tasks.append(asyncio.create_task(rt.run(), name=f"route-{rt.name}"))
    await r.gateway.start()
    try:
        yield r
    finally:
        await r.gateway.close()
        for rt in routes.values():
            rt.stop()
        done, pending = await asyncio.wait(tasks, timeout=5.0)
        for t in pending:
            t.cancel()
        if pending:
            raise AssertionError(f"{len(pending)} route(s) did not stop within 5 s of stop()")
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise AssertionError(f"route task failed: {t.exception()!r}")


class TradeCounter:
    """A bot on a Bitfinex route: subscribes to trades and records every trade id it sees."""

    def __init__(self, url: str, symbol: str = "tBTCUSD", channel: str = "trades") -> None:
        self.url = url
        self.symbol = symbol
        self.channel = channel
        self.ws: ClientConnection | None = None
        self.chan_id: int | None = None
        self.ids: list[int] = []  # 'te' trade ids, in arrival order
        self.snapshots = 0
        self.frames = 0
        self.events: list[dict[str, Any]] = []
        self.last_data_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TradeCounter:
        self.ws = await asyncio.wait_for(connect(self.url, compression=None), 5.0)
        await self.ws.send(
            json.dumps({"event": "subscribe", "channel": self.channel, "symbol": self.symbol})
        )
        self._task = asyncio.create_task(self._read())
        await wait_for(lambda: self.snapshots > 0, 10.0, "first snapshot")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None and self._task is not None
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await asyncio.wait_for(self._task, 5.0)

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                msg = json.loads(raw)
                if isinstance(msg, dict):
                    self.events.append(msg)
                    if msg.get("event") == "subscribed":
                        self.chan_id = msg["chanId"]
                    continue
                if msg[0] != self.chan_id:
                    continue
                self.frames += 1
                self.last_data_at = time.monotonic()
                if msg[1] == "hb":
                    continue
                if isinstance(msg[1], list):
                    self.snapshots += 1
                elif msg[1] == "te":
                    self.ids.append(int(msg[2][0]))

    def duplicates(self) -> int:
        return len(self.ids) - len(set(self.ids))

    def gaps(self, known: set[int]) -> list[int]:
        """Trade ids the exchange published in our window that we never received."""
        if not self.ids:
            return []
        lo, hi = min(self.ids), max(self.ids)
        got = set(self.ids)
        return sorted(i for i in known if lo <= i <= hi and i not in got)

    async def wait_new_trades(self, n: int = 3, within: float = 10.0) -> float:
        start = len(self.ids)
        return await wait_for(lambda: len(self.ids) >= start + n, within, f"{n} new trades")
