"""Security and abuse, end to end: the daemon as a subprocess, attacked through its surfaces."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.alert_rig import SECRET, SECRET_ENV, LoopThread, alert_body
from tests.e2e.harness import ThreadServer, run_daemon, wait_until
from tests.runtime.receivers import HttpReceiver, Request
from wsgate.control import wire
from wsgate.control.admission import MAX_PER_UID
from wsgate.control.client import ControlClient
from wsgate.errors import ControlError


async def _echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


def raw_route(url: str, name: str = "echo", extra: str = "") -> str:
    return f"""
[routes.{name}]
dialect = "raw"
type = "market_data"
stale_after = 30
{extra}
[[routes.{name}.endpoints]]
url = "{url}"
"""


def test_bad_control_parameters_are_invalid_params_without_a_traceback() -> None:
    with ThreadServer(_echo) as up, run_daemon(raw_route(up.url)) as d:
        with ControlClient(d.socket, timeout=10) as client:
            for params in ({"limit": 1e308}, {"limit": -1}, {"limit": "all"}, {"limti": 3}):
                with pytest.raises(ControlError) as info:
                    client.call("alerts.history", params)
                assert info.value.code == wire.INVALID_PARAMS, (params, info.value)
            with pytest.raises(ControlError) as info:
                client.call("routes.weight", {"route": "echo", "endpoint": "x", "weight": 1e308})
            assert info.value.code == wire.INVALID_PARAMS
            assert client.call("alerts.history", {"limit": 5}) == {"events": []}
        logs = d.logs()
        assert "Traceback" not in logs and "OverflowError" not in logs, logs[-3000:]


ROUTE_TOKEN = "rt-0123456789abcdef"
EVENTS_TOKEN = "ev-0123456789abcdef"
UPSTREAM_PASSWORD = "up-0123456789abcdef"


def test_raw_route_consumes_the_gateway_token_and_every_published_url_is_masked() -> None:
    seen: list[tuple[str, str]] = []

    async def recorder(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append((ws.request.path, str(ws.request.headers)))
        async for msg in ws:
            await ws.send(msg)

    with ThreadServer(recorder) as up:
        upstream = f"ws://wsgate:{UPSTREAM_PASSWORD}@127.0.0.1:{up.port}"
        body = raw_route(upstream, extra='token_env = "WSGATE_ROUTE_TOKEN"')
        env = {"WSGATE_ROUTE_TOKEN": ROUTE_TOKEN, "WSGATE_EVENTS_TOKEN": EVENTS_TOKEN}
        gateway = 'events_token_env = "WSGATE_EVENTS_TOKEN"'
        with run_daemon(body, extra_env=env, gateway=gateway) as d:
            base = f"ws://127.0.0.1:{d.port}"

            async def bots() -> list[str]:
                got = []
                async with connect(f"{base}/echo/ws/2?token={ROUTE_TOKEN}&foo=1") as ws:
                    await ws.send("one")
                    got.append(str(await asyncio.wait_for(ws.recv(), 10)))
                bearer = {"Authorization": f"Bearer {ROUTE_TOKEN}"}
                async with connect(f"{base}/echo/ws/2?foo=2", additional_headers=bearer) as ws:
                    await ws.send("two")
                    got.append(str(await asyncio.wait_for(ws.recv(), 10)))
                events = f"{base}/_wsgate/events?backlog=200&token={EVENTS_TOKEN}"
                async with connect(events) as ws:
                    while True:
                        frame = str(await asyncio.wait_for(ws.recv(), 10))
                        got.append(frame)
                        if json.loads(frame).get("kind") == "hello":
                            break
                    # The backlog follows the hello; read what is there within a moment.
                    try:
                        while True:
                            got.append(str(await asyncio.wait_for(ws.recv(), 1.0)))
                    except TimeoutError:
                        pass
                return got

            frames = asyncio.run(bots())
            assert frames[:2] == ["one", "two"]
            relayed = [path for path, _ in seen if path.startswith("/ws/2")]
            assert sorted(relayed) == ["/ws/2?foo=1", "/ws/2?foo=2"], seen
            assert all(ROUTE_TOKEN not in headers for _, headers in seen), seen
            published: list[Any] = [frames]
            with ControlClient(d.socket, timeout=10) as client:
                for method in ("status", "connections", "events.recent", "routes", "config.show"):
                    published.append(client.call(method))
            text = json.dumps(published) + d.logs()
            assert "connecting to ws://***@127.0.0.1" in text  # the masked form is what shows
            for secret in (ROUTE_TOKEN, EVENTS_TOKEN, UPSTREAM_PASSWORD):
                assert secret not in text, (secret, text[-3000:])


# -- access settings: event stream, reload, socket directory -------------------------------

NOBODY = 65534
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="acting as another user needs root")


def as_nobody(path: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Control calls from a child process that dropped to uid/gid 65534 (nobody/nogroup).

    Returns, per call, the result or the error code (one code if it could not connect).
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out: list[Any] = []
            try:
                with ControlClient(path, timeout=5.0) as client:
                    for method, params in calls:
                        try:
                            out.append(client.call(method, params))
                        except ControlError as exc:
                            out.append(exc.code)
            except ControlError as exc:
                out = [exc.code]
            os.write(wfd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return list(json.loads(data))


async def _events_status(url: str, origin: str | None = None) -> int:
    """101 when the event stream opens (and says hello), else the HTTP status."""
    headers = {"Origin": origin} if origin else None
    try:
        async with connect(url, additional_headers=headers) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["kind"] == "hello"
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_event_stream_obeys_origins_and_needs_its_token_unless_opened() -> None:
    with (
        ThreadServer(_echo) as up,
        run_daemon(raw_route(up.url), gateway='origins = ["https://ok.example"]') as d,
    ):
        url = f"ws://127.0.0.1:{d.port}/_wsgate/events"
        # No token configured and no opt-out: refused, whatever the origin.
        assert asyncio.run(_events_status(url)) == 403
        assert asyncio.run(_events_status(url, "https://ok.example")) == 403
        text = d.config.read_text().replace(
            'origins = ["https://ok.example"]',
            'origins = ["https://ok.example"]\nevents_require_token = false',
        )
        d.config.write_text(text)
        r = d.cli("reload", "--socket", d.socket)
        assert r.returncode == 0, r.stderr
        assert asyncio.run(_events_status(url, "https://evil.example")) == 403
        assert asyncio.run(_events_status(url, "https://ok.example")) == 101
        assert asyncio.run(_events_status(url)) == 101  # not a browser: no Origin header


def _set(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


@needs_root
def test_reload_applies_groups_events_token_and_frame_limit() -> None:
    env = {"WSGATE_EV_OLD": "old-events-token", "WSGATE_EV_NEW": "new-events-token"}
    gateway = 'events_token_env = "WSGATE_EV_OLD"\nmax_message_bytes = 1048576'
    groups = 'control_group = "nogroup"\nadmin_group = "nogroup"'
    with (
        ThreadServer(_echo) as up,
        run_daemon(raw_route(up.url), extra_env=env, gateway=gateway, daemon=groups) as d,
    ):
        os.chmod(d.dir, 0o755)  # the harness's temp dir; the socket itself stays 0660
        ack = ("alerts.ack", {"fingerprint": "nope"})
        # nobody is in nogroup, the admin group: a mutating call gets past the permission check.
        assert as_nobody(d.socket, [("status", {}), ack])[1] == wire.NOT_FOUND
        base = f"ws://127.0.0.1:{d.port}"
        big, small = "x" * 200_000, "y" * 60_000

        async def before_and_after() -> tuple[int | None, int | None, list[int]]:
            old_stream = await connect(f"{base}/_wsgate/events?token=old-events-token")
            await asyncio.wait_for(old_stream.recv(), 10)
            bot = await connect(f"{base}/echo", max_size=None)
            await bot.send(big)
            assert len(await asyncio.wait_for(bot.recv(), 10)) == len(big)
            _set(d.config, 'admin_group = "nogroup"', "")
            _set(d.config, '"WSGATE_EV_OLD"', '"WSGATE_EV_NEW"')
            _set(d.config, "max_message_bytes = 1048576", "max_message_bytes = 65536")
            r = await asyncio.to_thread(d.cli, "reload", "--socket", d.socket)
            assert r.returncode == 0, r.stderr
            assert r.stdout.count("applied:") == 3, r.stdout
            # The open stream was cut; the old token no longer opens one, the new one does.
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(old_stream.recv(), 10)
            statuses = [
                await _events_status(f"{base}/_wsgate/events?token=old-events-token"),
                await _events_status(f"{base}/_wsgate/events?token=new-events-token"),
            ]
            # The open bot session and a new one both have the new frame limit.
            fresh = await connect(f"{base}/echo", max_size=None)
            await fresh.send(small)
            assert len(await asyncio.wait_for(fresh.recv(), 10)) == len(small)
            codes = []
            for ws in (bot, fresh):
                await ws.send(big)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                codes.append(ws.close_code)
            return codes[0], codes[1], statuses

        old_code, new_code, statuses = asyncio.run(before_and_after())
        assert (old_code, new_code) == (1009, 1009)
        assert statuses == [401, 101]
        read, denied = as_nobody(d.socket, [("status", {}), ack])
        assert read["routes"] and denied == wire.PERMISSION_DENIED
        assert "Traceback" not in d.logs(), d.logs()[-3000:]


@needs_root
def test_socket_directory_made_by_the_daemon_belongs_to_the_control_group() -> None:
    with (
        ThreadServer(_echo) as up,
        run_daemon(
            raw_route(up.url), daemon='control_group = "nogroup"', socket_name="run/wsgate/c.sock"
        ) as d,
    ):
        os.chmod(d.dir, 0o755)  # the harness's own temp dir, which the daemon did not make
        for made in (d.dir / "run", d.dir / "run" / "wsgate"):
            st = os.stat(made)
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o750), made
        (result,) = as_nobody(d.socket, [("status", {})])
        assert result["routes"][0]["name"] == "echo"


# -- shutdown bound ---------------------------------------------------------------------------


class SilentReceiver(HttpReceiver):
    """An HTTP endpoint that reads each request, records it and never answers."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            async with self._cond:
                self.requests.append(Request(method, path, headers, body))
                self._cond.notify_all()
            await asyncio.Event().wait()  # hung: until the receiver stops
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


def test_shutdown_honours_its_bound_with_a_webhook_that_never_answers() -> None:
    with LoopThread() as lt:
        hook = lt.run(SilentReceiver().start())
        try:
            # A required route whose endpoint refuses: connection_failure fires within seconds
            # (a shared route: its warm pool connection is what fails; raw routes keep none).
            body = raw_route("ws://127.0.0.1:9/down").replace(
                'dialect = "raw"', 'dialect = "bitfinex"'
            ) + alert_body(hook.url).replace("timeout = 3", "timeout = 60")
            with run_daemon(body, extra_env={SECRET_ENV: SECRET}) as d:
                lt.run(hook.wait_for_requests(1, within=30), timeout=40)
                started = time.monotonic()
                d.signal(signal.SIGTERM)
                code = d.proc.wait(30)
                took = time.monotonic() - started
                # shutdown_timeout = 3 (the harness); the process also has to exit.
                assert code == 0 and took < 3 + 1.5, (took, d.logs()[-3000:])
                assert "1 left queued" in d.logs()
        finally:
            lt.run(hook.stop())


# -- descriptor exhaustion ------------------------------------------------------------------


@contextmanager
def nobody_holding_control_connections(path: str, n: int) -> Iterator[list[str | None]]:
    """A child process as nobody opens ``n`` idle control connections and holds them.

    Yields, per connection, None (accepted and idle) or the error code it was sent.
    """
    rfd, wfd = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            held, codes = [], []
            for _ in range(n):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(2.0)
                try:
                    s.connect(path)
                    s.settimeout(0.3)
                    got = s.recv(4096)
                    codes.append(json.loads(got)["error"]["code"] if got else "closed")
                except TimeoutError:
                    codes.append(None)  # accepted, nothing said: an idle connection
                except OSError as exc:
                    codes.append(f"oserror {exc.errno}")
                held.append(s)
            os.write(wfd, json.dumps(codes).encode())
            os.close(wfd)  # the parent reads to the end
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        with os.fdopen(rfd, "rb") as f:
            yield list(json.loads(f.read()))
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        os.close(go_w)
        os.close(go_r)


async def _echo_once(url: str) -> str:
    async with connect(url) as ws:
        await ws.send("still here")
        return str(await asyncio.wait_for(ws.recv(), 10))


@needs_root
def test_a_reader_flooding_the_control_socket_cannot_starve_bots_or_root() -> None:
    with (
        ThreadServer(_echo) as up,
        run_daemon(raw_route(up.url), daemon='control_group = "nogroup"', nofile=256) as d,
    ):
        os.chmod(d.dir, 0o755)
        with nobody_holding_control_connections(d.socket, 300) as codes:
            assert codes.count(None) == MAX_PER_UID, codes
            assert set(codes[MAX_PER_UID:]) == {wire.TOO_MANY_CONNECTIONS}, set(codes)
            # Root's status and a new bot both still work while the flood holds its share.
            with ControlClient(d.socket, timeout=5) as client:
                gw = client.call("status")["gateway"]
            assert gw["fd_in_use"] < 128, gw
            assert asyncio.run(_echo_once(f"ws://127.0.0.1:{d.port}/echo")) == "still here"
        logs = d.logs()
        assert "Traceback" not in logs and "Too many open files" not in logs, logs[-3000:]
        assert logs.count("refused a connection") <= 2, logs[-3000:]


@needs_root
def test_bots_stop_short_of_the_descriptor_limit_and_root_still_gets_in() -> None:
    with ThreadServer(_echo) as up:
        # One upstream per bot, and no connect budget in the way of 150 of them.
        extra = "max_connections = 400\nconnect_budget = { count = 1000, per = 1 }"
        route = raw_route(up.url, extra=extra)
        with run_daemon(route, nofile=256) as d:
            url = f"ws://127.0.0.1:{d.port}/echo"

            async def flood() -> tuple[list[Any], list[int]]:
                bots, refused = [], []
                for _ in range(150):  # a raw session holds two descriptors: bot and upstream
                    try:
                        bots.append(await connect(url, open_timeout=10))
                    except InvalidStatus as exc:
                        refused.append(exc.response.status_code)
                return bots, refused

            async def main() -> tuple[int, list[int], dict[str, Any]]:
                bots, refused = await flood()
                try:
                    status = await asyncio.to_thread(d.status)
                finally:
                    for ws in bots:
                        await ws.close()
                return len(bots), refused, status

            accepted, refused, status = asyncio.run(main())
            gateway = status["gateway"]
            assert accepted > 10 and refused and set(refused) == {503}, (accepted, gateway)
            assert gateway["sessions"] == accepted  # every accepted bot was really served
            assert gateway["rejected_handshakes"]["503"] == len(refused)
            assert gateway["fd_in_use"] < gateway["fd_limit"]
            wait_until(lambda: _echoes(url), 15, "room for a bot once the others left")
            assert "Traceback" not in d.logs(), d.logs()[-3000:]


def _echoes(url: str) -> bool:
    try:
        return asyncio.run(_echo_once(url)) == "still here"
    except InvalidStatus:
        return False
