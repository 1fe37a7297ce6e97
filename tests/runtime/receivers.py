"""Real loopback receivers for notification tests: HTTP/1.1 and SMTP on 127.0.0.1 port 0.

Usage::

    async with HttpReceiver([Reply(429, json={"retry_after": 0.5}), Reply(204)]) as rx:
        ... post to rx.url ...
        await rx.wait_for_requests(2)

Each request takes the next scripted ``Reply``; when the script runs out, ``default``
answers. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json as jsonlib
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any, Self

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = [
    "FakeChannel",
    "FakeTime",
    "HttpReceiver",
    "Rate",
    "Reply",
    "Request",
    "SmtpReceiver",
    "WebhookReceiver",
    "alert_payload",
]

_REASONS = {200: "OK", 204: "No Content", 401: "Unauthorized", 404: "Not Found", 429: "Too Many"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    json: Any = None

    def encode(self) -> bytes:
        body = self.body
        headers = dict(self.headers)
        if self.json is not None:
            body = jsonlib.dumps(self.json).encode()
            headers.setdefault("Content-Type", "application/json")
        head = f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Status')}\r\n"
        headers["Content-Length"] = str(len(body))
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return (head + "\r\n").encode("latin-1") + body


async def _wait_until(cond: asyncio.Condition, pred: Any, within: float) -> None:
    async with cond:
        await asyncio.wait_for(cond.wait_for(pred), within)


class HttpReceiver:
    """A minimal HTTP/1.1 server: request line, headers, Content-Length body, keep-alive."""

    def __init__(self, script: list[Reply] | None = None, default: Reply | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Reply(200, body=b"ok")
        self.requests: list[Request] = []
        self._cond = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/secret-token"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Python 3.11 has no Server.close_clients(): drop keep-alive connections by hand,
            # so a stopped receiver really refuses further requests.
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def respond(self, request: Request) -> Reply:
        return self.script.pop(0) if self.script else self.default

    async def wait_for_requests(self, n: int, within: float = 5.0) -> list[Request]:
        await _wait_until(self._cond, lambda: len(self.requests) >= n, within)
        return self.requests[:n]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                reply = self.respond(request)
                writer.write(reply.encode())
                await writer.drain()
                async with self._cond:
                    self.requests.append(request)
                    self._cond.notify_all()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


class WebhookReceiver(HttpReceiver):
    """An idempotent webhook consumer: checks the HMAC, counts each delivery id once."""

    def __init__(self, secret: str | None = None, **kw: Any) -> None:
        super().__init__(default=Reply(204), **kw)
        self.secret = secret
        self.unique: dict[str, Any] = {}
        self.duplicates = 0
        self.bad_signatures = 0

    def verify(self, request: Request) -> bool:
        if self.secret is None:
            return True
        got = request.headers.get("x-wsgate-signature-256", "")
        want = "sha256=" + hmac.new(self.secret.encode(), request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(got, want)

    def respond(self, request: Request) -> Reply:
        if not self.verify(request):
            self.bad_signatures += 1
            return Reply(401, body=b"bad signature")
        reply = super().respond(request)
        if 200 <= reply.status < 300:
            delivery = request.headers.get("x-wsgate-delivery", "")
            if delivery in self.unique:
                self.duplicates += 1
            else:
                self.unique[delivery] = request.json()
        return reply

    async def wait_for_unique(self, n: int, within: float = 5.0) -> dict[str, Any]:
        await _wait_until(self._cond, lambda: len(self.unique) >= n, within)
        return self.unique


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: Message
    auth: Any


class _Handler:
    def __init__(self, owner: SmtpReceiver) -> None:
        self.owner = owner

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message_from_bytes(raw),
            auth=session.auth_data,
        )
        async with self.owner._cond:
            self.owner.messages.append(mail)
            self.owner._cond.notify_all()
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """aiosmtpd's SMTP protocol served on the test's own event loop (no thread).

    With ``credentials`` it offers AUTH (allowed without TLS, loopback only) and
    refuses other logins.
    """

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.messages: list[ReceivedMail] = []
        self._cond = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.port = 0

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            isinstance(data, LoginPassword)
            and self.credentials is not None
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

    def _protocol(self) -> SMTP:
        kw: dict[str, Any] = {}
        if self.credentials is not None:
            kw = {"authenticator": self._authenticate, "auth_require_tls": False}
        return SMTP(_Handler(self), hostname="wsgate-test", **kw)

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for_messages(self, n: int, within: float = 5.0) -> list[ReceivedMail]:
        await _wait_until(self._cond, lambda: len(self.messages) >= n, within)
        return self.messages[:n]


@dataclass(frozen=True)
class Rate:
    count: int
    per: float


@dataclass(frozen=True)
class FakeChannel:
    """Stands in for the config's channel dataclass (same attribute names)."""

    name: str = "hook"
    kind: str = "webhook"
    enabled: bool = True
    min_severity: str = "info"
    send_resolved: bool = True
    url: str | None = None
    url_env: str | None = None
    url_file: str | None = None
    secret_env: str | None = None
    secret_file: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    security: str = "none"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    from_addr: str | None = None
    to_addrs: tuple[str, ...] = ()
    rate: Rate | None = None
    timeout: float = 5.0


class FakeTime:
    """Wall clock + sleep for the outbox: sleeping advances the clock at once and is recorded."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


def alert_payload(
    nid: str = "n-1",
    *,
    severity: str = "critical",
    status: str = "firing",
    n_alerts: int = 2,
    summary: str = "p95 812ms > 500ms",
    receiver: str = "hook",
) -> dict[str, Any]:
    """A notification shaped like the alert engine's (Alertmanager webhook v4 + extras)."""
    alerts = [
        {
            "status": status,
            "labels": {
                "alertname": "high_latency",
                "severity": severity,
                "route": "bitfinex",
                "upstream": f"up-{i}",
            },
            "annotations": {"summary": summary},
            "startsAt": "2026-08-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{i:016x}",
        }
        for i in range(n_alerts)
    ]
    return {
        "version": "4",
        "id": nid,
        "kind": "alert",
        "groupKey": '{}:{alertname="high_latency",route="bitfinex"}',
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": "high_latency", "route": "bitfinex"},
        "commonLabels": {"alertname": "high_latency", "route": "bitfinex", "severity": severity},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9108/",
        "alerts": alerts,
    }
