"""UpstreamConnection against real loopback servers: handshake statuses, budgets, TLS, proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

import wsgate.runtime.upstream.connection as upstream_mod
from tests.runtime.drill import run, wait_for
from tests.runtime.fake_exchange import FakeBitfinex
from wsgate.core.backoff import Backoff
from wsgate.core.states import ConnState
from wsgate.runtime.upstream.connection import (
    HostBudgets,
    UpstreamConnection,
    UpstreamSettings,
    make_ssl_context,
)


class Sink:
    """Records what the connection reports."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed: list[str] = []
        self.frames: list[str | bytes] = []

    def on_upstream_open(self, conn: UpstreamConnection) -> None:
        self.opened += 1

    def on_upstream_frame(self, conn: UpstreamConnection, data: str | bytes) -> None:
        self.frames.append(data)

    def on_upstream_closed(self, conn: UpstreamConnection, reason: str) -> None:
        self.closed.append(reason)


def _conn(
    url: str, budgets: HostBudgets | None = None, *, floor: float = 0.1, **kw: Any
) -> tuple[UpstreamConnection, Sink]:
    opts: dict[str, Any] = {"backoff_initial": 0.2, "backoff_max": 1.0, "min_uptime": 1.0}
    opts.update(kw)
    settings = UpstreamSettings(route="r", endpoint="e", url=url, **opts)
    sink = Sink()
    conn = UpstreamConnection("r-c1", settings, sink, budgets or HostBudgets(), random.Random(1))
    # The production 429 floor is 10 s; scaled down so the drill proves Retry-After itself.
    conn.backoff = Backoff(
        random.Random(1), initial=0.2, maximum=1.0, min_uptime=1.0, rate_limit_floor=floor
    )
    return conn, sink


@contextlib.asynccontextmanager
async def running(conn: UpstreamConnection) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(conn.run())
    try:
        yield task
    finally:
        conn.stop()
        await asyncio.wait_for(task, 5.0)


async def _quiet(window: float) -> None:
    """A bounded wait for something that must NOT happen within ``window``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), window)


def test_429_retry_after_is_honoured() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex:
            ex.reject = (429, 1, 1.5)
            conn, sink = _conn(ex.url)
            async with running(conn):
                await wait_for(lambda: conn.state is ConnState.OPEN, 10.0, "open after 429")
            first, second = ex.handshakes[0], ex.handshakes[1]
            assert second - first >= 1.5  # no attempt before Retry-After
            assert conn.sm.transitions()["backoff->connecting"] == 1
            history = conn.sm.history()
            rejected = next(t for t in history if t.new is ConnState.BACKOFF)
            assert "rate_limited" in rejected.reason
            assert sink.opened == 1

    run(go())


def test_503_is_retried_with_backoff() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex:
            ex.reject = (503, 2, None)
            conn, _sink = _conn(ex.url)
            async with running(conn):
                await wait_for(lambda: conn.state is ConnState.OPEN, 10.0, "open after 503s")
            assert len(ex.handshakes) == 3
            gaps = [b - a for a, b in zip(ex.handshakes, ex.handshakes[1:], strict=False)]
            assert min(gaps) >= 0.2
            kinds = dict(conn.metrics.snapshot(0.0).errors_by_kind)
            assert kinds["http_503"] == 2

    run(go())


@pytest.mark.parametrize("status", [401, 403])
def test_auth_rejection_fails_with_reason_and_is_not_retried(status: int) -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex:
            ex.reject = (status, 100, None)
            conn, _sink = _conn(ex.url)
            async with running(conn):
                await wait_for(lambda: conn.state is ConnState.FAILED, 5.0, "FAILED")
                await _quiet(1.5)  # several backoff periods: a silent retry would show here
                assert len(ex.handshakes) == 1
                assert conn.state is ConnState.FAILED
                assert conn.failed_reason is not None and "401/403" in conn.failed_reason
                assert "401/403" in conn.statistics().state_reason

    run(go())


def test_accept_and_drop_never_spins_and_respects_the_connect_budget() -> None:
    async def go() -> None:
        async with FakeBitfinex() as ex:
            ex.accept_and_drop = True
            budgets = HostBudgets()
            conn, _sink = _conn(ex.url, budgets)
            budgets.configure(conn.settings.host, 3, 1.0)
            async with running(conn):
                await _quiet(2.0)
            n = len(ex.handshakes)
            gaps = [b - a for a, b in zip(ex.handshakes, ex.handshakes[1:], strict=False)]
            assert n >= 2 and min(gaps) >= 0.2 - 0.01  # never below backoff_initial
            assert n <= 3 + 3 * 2.0  # burst + rate * window
            print(f"[drill] accept-and-drop: {n} handshakes in 2 s, min gap {min(gaps):.3f}s")

    run(go())


def test_proxy_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    async def fake_connect(url: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise OSError("no network in this test")

    monkeypatch.setattr(upstream_mod, "connect", fake_connect)

    async def go(use_proxy: bool) -> None:
        conn, _sink = _conn("ws://127.0.0.1:9/ws/2", use_proxy=use_proxy)
        async with running(conn):
            await wait_for(lambda: len(calls) >= 1, 5.0, "a connect attempt")
        assert conn.metrics.errors_total >= 1

    run(go(False))
    assert calls[0]["proxy"] is None
    calls.clear()
    run(go(True))
    assert calls[0]["proxy"] is True  # websockets then reads the *_proxy environment


# ---------------------------------------------------------------- TLS
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (and the cryptography package is absent)")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wsgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
        cwd=d,
    )
    return d


@contextlib.asynccontextmanager
async def tls_server(pki: Path) -> AsyncIterator[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"event":"info","version":2}')
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ssl=ctx) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"wss://127.0.0.1:{port}/ws/2"


def test_tls_verification_rejects_an_unknown_ca(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with tls_server(pki) as url:
            conn, sink = _conn(url, ssl_context=make_ssl_context())
            async with running(conn):
                await wait_for(lambda: conn.metrics.errors_total >= 1, 10.0, "TLS failure")
            assert sink.opened == 0
            assert dict(conn.metrics.snapshot(0.0).errors_by_kind)["connect"] >= 1

    with caplog.at_level(logging.WARNING, logger="wsgate.upstream"):
        run(go())
    assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)


def test_tls_ca_file_accepts_the_private_ca(pki: Path) -> None:
    async def go() -> None:
        async with tls_server(pki) as url:
            conn, sink = _conn(url, ssl_context=make_ssl_context(ca_file=str(pki / "ca.pem")))
            async with running(conn):
                await wait_for(lambda: len(sink.frames) >= 1, 10.0, "info over TLS")
            assert sink.opened == 1

    run(go())


def test_tls_verify_false_connects_and_warns(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        async with tls_server(pki) as url:
            with caplog.at_level(logging.WARNING, logger="wsgate.upstream"):
                ctx = make_ssl_context(verify=False)
            conn, sink = _conn(url, ssl_context=ctx)
            async with running(conn):
                await wait_for(lambda: len(sink.frames) >= 1, 10.0, "info over TLS")

    run(go())
    assert any("verification is DISABLED" in r.getMessage() for r in caplog.records)


def test_operator_reconnect_and_enable_are_not_counted_as_reconnects() -> None:
    """An operator's reconnect/disable/enable is no fault: no reconnect count, no errors,
    no backoff (it reopens at once); a drop by the exchange still counts."""

    async def go() -> None:
        async with FakeBitfinex() as ex:
            conn, sink = _conn(ex.url, backoff_initial=5.0, backoff_max=5.0)
            conn.backoff = Backoff(random.Random(1), initial=5.0, maximum=5.0, min_uptime=0.0)
            async with running(conn):
                await wait_for(lambda: sink.opened == 1, 5)
                conn.request_reconnect("operator", operator=True)
                await wait_for(lambda: sink.opened == 2, 3)  # well under the 5 s backoff
                conn.disable("operator")
                await wait_for(lambda: conn.state is ConnState.DISABLED, 3)
                conn.enable("operator")
                await wait_for(lambda: sink.opened == 3 and conn.state.is_up, 3)
                st = conn.statistics()
                assert (st.reconnects, st.operator_reconnects, st.errors) == (0, 2, 0)
                assert conn.metrics.reconnects_recent(conn._clock()) == 0
                # An exchange-side close is a real reconnect (after the backoff).
                conn.request_reconnect("stale")
                await wait_for(lambda: sink.opened == 4, 12)
                assert conn.statistics().reconnects == 1

    run(go())
