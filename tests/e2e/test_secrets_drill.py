"""A drill with every kind of secret configured; none may appear in anything it emits.

The daemon runs at log level debug with: a route bearer token (sent by bots as
``?token=`` and as ``Authorization``), an events token, a webhook HMAC secret, an SMTP
password, a Slack webhook URL (the URL is the credential), an upstream password in the
endpoint's userinfo, and bots that pass their own exchange credentials (``apiKey=`` in
the query, a listenKey-like path segment). The drill connects bots, streams events,
fires a real alert to real receivers, tests every channel, reloads, asks every read
command, and stops. Then every log line, every event (stream and ``events.recent``) and
every command output is searched for each secret, raw and in the encodings a leak could
take (URL-quoted, base64 of SMTP AUTH PLAIN).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.alert_rig import LoopThread, alert_body
from tests.e2e.harness import DaemonProc, ThreadServer, run_daemon, wait_until
from tests.runtime.receivers import HttpReceiver, SmtpReceiver, WebhookReceiver
from wsgate.control.client import ControlClient
from wsgate.errors import ControlError

ROUTE_TOKEN = "drill-route-token-5b1d2c"
EVENTS_TOKEN = "drill-events-token-8e2f"
WEBHOOK_SECRET = "drill-webhook-secret-77aa"
SMTP_PASSWORD = "drill-smtp-password-31c"
SLACK_SECRET = "drillSlackPathSecret9f3e"
UPSTREAM_PASSWORD = "drill-upstream-pass-4d4"
BOT_API_KEY = "drill-bot-apikey-61e0"
PATH_KEY = "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90"  # the shape of a Binance listenKey
SECRETS = (
    ROUTE_TOKEN,
    EVENTS_TOKEN,
    WEBHOOK_SECRET,
    SMTP_PASSWORD,
    SLACK_SECRET,
    UPSTREAM_PASSWORD,
    BOT_API_KEY,
    PATH_KEY,
)
ENV = {
    "WSGATE_DRILL_ROUTE_TOKEN": ROUTE_TOKEN,
    "WSGATE_DRILL_EVENTS_TOKEN": EVENTS_TOKEN,
    "WSGATE_DRILL_HOOK_SECRET": WEBHOOK_SECRET,
    "WSGATE_DRILL_SMTP_PASSWORD": SMTP_PASSWORD,
}


def _forms(secret: str) -> list[str]:
    """The secret and the encodings it could leak in."""
    return [
        secret,
        quote(secret, safe=""),
        base64.b64encode(f"\0wsgate\0{secret}".encode()).decode(),  # SMTP AUTH PLAIN
        base64.b64encode(f"wsgate:{secret}".encode()).decode(),  # HTTP Basic
    ]


async def _echo(ws: ServerConnection) -> None:
    async for msg in ws:
        await ws.send(msg)


def _config(upstream: str, hook: str, smtp_port: int) -> str:
    channels = f"""
[alerts.channels.slack]
kind = "slack"
enabled = true
url_env = "WSGATE_DRILL_SLACK_URL"
min_severity = "info"
timeout = 3

[alerts.channels.email]
kind = "email"
enabled = true
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
username = "wsgate"
password_env = "WSGATE_DRILL_SMTP_PASSWORD"
from_addr = "wsgate@example.test"
to_addrs = ["ops@example.test"]
min_severity = "info"
timeout = 3
"""
    body = alert_body(hook, extra_channels=channels).replace(
        "WSGATE_TEST_HOOK_SECRET", "WSGATE_DRILL_HOOK_SECRET"
    )
    return (
        body
        + f"""
[routes.echo]
dialect = "raw"
type = "market_data"
token_env = "WSGATE_DRILL_ROUTE_TOKEN"
stale_after = 30
connect_budget = {{ count = 1000, per = 1 }}
[[routes.echo.endpoints]]
url = "ws://wsgate:{UPSTREAM_PASSWORD}@{upstream}"

# A shared-subscription route keeps a warm connection (raw routes open one per session).
[routes.down]
dialect = "bitfinex"
type = "market_data"
min_connections = 1
backoff_initial = 0.2
backoff_max = 1
[[routes.down.endpoints]]
url = "ws://wsgate:{UPSTREAM_PASSWORD}@127.0.0.1:9/{PATH_KEY}?apiKey={BOT_API_KEY}"
"""
    )


class EventTap:
    """Reads /_wsgate/events (token in the query) for the whole drill, on the test loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ws = await connect(self.url)
        self.frames.append(str(await asyncio.wait_for(ws.recv(), 10)))

        async def read() -> None:
            try:
                async for frame in ws:
                    self.frames.append(str(frame))
            except ConnectionClosed:
                pass

        self.task = asyncio.create_task(read())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def _bots(d: DaemonProc) -> list[str]:
    base = f"ws://127.0.0.1:{d.port}/echo"
    got = []
    urls = [
        f"{base}/ws?token={ROUTE_TOKEN}&apiKey={BOT_API_KEY}",
        f"{base}/ws/{PATH_KEY}?token={ROUTE_TOKEN}&signature={BOT_API_KEY}",
    ]
    for url in urls:
        async with connect(url) as ws:
            await ws.send("hello")
            got.append(str(await asyncio.wait_for(ws.recv(), 10)))
    bearer = {"Authorization": f"Bearer {ROUTE_TOKEN}"}
    async with connect(f"{base}/ws?listenKey={BOT_API_KEY}", additional_headers=bearer) as ws:
        await ws.send("hello")
        got.append(str(await asyncio.wait_for(ws.recv(), 10)))
    for wrong in (f"{base}/ws?token={ROUTE_TOKEN}x", f"{base}/ws?token=nope-{BOT_API_KEY}"):
        try:
            async with connect(wrong):
                pass
        except InvalidStatus as exc:
            got.append(str(exc.response.status_code))
    return got


def _outputs(d: DaemonProc) -> list[Any]:
    out: list[Any] = []
    with ControlClient(d.socket, timeout=20) as client:
        for method, params in (
            ("status", {}),
            ("connections", {}),
            ("routes", {}),
            ("events.recent", {"limit": 200}),
            ("alerts", {}),
            ("alerts.history", {"limit": 500}),
            ("alerts.channels", {}),
            ("config.show", {}),
            ("health", {}),
        ):
            out.append(client.call(method, params))
        for conn in out[1]:
            out.append(client.call("connections.show", {"id": conn["id"]}))
        for bad in ({"limit": -1}, {"since": "forever"}):
            try:
                client.call("alerts.history", bad)
            except ControlError as exc:
                out.append(exc.message)
    for args in (("status", "--json"), ("connections"), ("config", "show")):
        argv = (args,) if isinstance(args, str) else args
        r = d.cli(*argv, "--socket", d.socket)
        out.append(r.stdout + r.stderr)
    return out


def test_no_secret_appears_in_any_log_line_event_or_output() -> None:
    with LoopThread() as lt:
        hook = lt.run(WebhookReceiver(secret=WEBHOOK_SECRET).start())
        slack = lt.run(HttpReceiver().start())
        smtp = SmtpReceiver(credentials=("wsgate", SMTP_PASSWORD))
        lt.run(smtp.__aenter__())
        slack_url = f"http://127.0.0.1:{slack.port}/services/T0/B0/{SLACK_SECRET}"
        env = {**ENV, "WSGATE_DRILL_SLACK_URL": slack_url}
        try:
            with (
                ThreadServer(_echo) as up,
                run_daemon(
                    _config(f"127.0.0.1:{up.port}", hook.url, smtp.port),
                    extra_env=env,
                    daemon='log_level = "debug"',
                    gateway='events_token_env = "WSGATE_DRILL_EVENTS_TOKEN"',
                ) as d,
            ):
                tap = EventTap(f"ws://127.0.0.1:{d.port}/_wsgate/events?token={EVENTS_TOKEN}")
                lt.run(tap.start())
                answers = lt.run(_bots(d))
                assert answers == ["hello", "hello", "hello", "401", "401"]
                # The `down` route fails: connection_failure reaches every channel.
                wait_until(lambda: bool(hook.unique), 30, "a webhook notification")
                wait_until(lambda: bool(slack.requests), 30, "a slack notification")
                wait_until(lambda: bool(smtp.messages), 30, "an email")
                for channel in ("hook", "slack", "email"):
                    r = d.cli("alerts", "test", "--channel", channel, "--socket", d.socket)
                    assert r.returncode == 0, r.stderr
                d.signal(signal.SIGHUP)
                d.wait_log("reload (SIGHUP)", 10)
                outputs = _outputs(d)
                d.signal(signal.SIGTERM)
                assert d.proc.wait(20) == 0
                lt.run(tap.stop())
                logs = d.logs()
            # The secrets were really used: signatures checked, login accepted, URL hit.
            assert hook.bad_signatures == 0 and smtp.messages[0].auth == b"wsgate"
            assert all(SLACK_SECRET in r.path for r in slack.requests)
            assert len(tap.frames) > 5 and "transition" in "".join(tap.frames)
            assert "***" in logs  # masked forms are what shows
            emitted = {
                "log": logs,
                "events": "\n".join(tap.frames),
                "outputs": json.dumps(outputs),
            }
            leaks = [
                (where, secret, line[:300])
                for where, text in emitted.items()
                for secret in SECRETS
                for form in _forms(secret)
                for line in text.splitlines()
                if form in line
            ]
            assert not leaks, leaks[:10]
        finally:
            lt.run(smtp.__aexit__(None, None, None))
            lt.stop(hook)
            lt.stop(slack)
