"""The bot-facing WebSocket server: routes sessions by the first path segment."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

from wsgate.config import GatewayConfig, load_server_tls
from wsgate.errors import InvalidPath
from wsgate.redact import strip_query_params
from wsgate.runtime.downstream.clients import ClientRegistry, ClientState
from wsgate.runtime.downstream.httpbody import request_body
from wsgate.runtime.downstream.rest_proxy import FORWARDED_HEADERS, RestProxy
from wsgate.runtime.downstream.rest_proxy import allowed as rest_allowed
from wsgate.runtime.downstream.session import Flusher, Session
from wsgate.runtime.downstream.wsserver import LeanServerConnection
from wsgate.runtime.routing.routes import RouteRuntime
from wsgate.runtime.system.faults import Faults
from wsgate.runtime.system.fdbudget import FdBudget

__all__ = ["Gateway", "SystemRoute"]

log = logging.getLogger("wsgate.gateway")

# Query parameters that carry the gateway's own bearer token (the header form is never
# forwarded: upstream connections are made with wsgate's own headers).
GATEWAY_CREDENTIALS = ("token",)

# A system route handles its own sessions (e.g. the /_wsgate/events dashboard stream).
SystemRoute = Callable[[ServerConnection, Session], Awaitable[None]]


class Gateway:
    def __init__(
        self,
        cfg: GatewayConfig,
        routes: dict[str, RouteRuntime],
        *,
        flusher: Flusher | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.cfg = cfg
        self.faults = faults or Faults()
        # Shared with the upstream readers (RouteEnv.flusher), so one read's fan-out
        # leaves in the same loop turn.
        self.flusher = flusher or Flusher(self.faults)
        self.routes = routes
        self.system_routes: dict[str, SystemRoute] = {}
        self.sessions: set[Session] = set()
        self.server: Server | None = None
        self.tls: ssl.SSLContext | None = None  # wss for bots (gateway.tls_cert_file)
        self.rejected: dict[int, int] = {}
        self.rest = RestProxy()
        self.fds = FdBudget()
        # [[gateway.clients]]: per-bot identities (tokens read now and at every reload).
        self.clients = ClientRegistry()
        self.clients.load(cfg.clients)
        # Handshakes admitted for a client whose handler has not started yet: counted
        # against its max_sessions, so concurrent handshakes cannot pass it together.
        self._admitted: dict[ServerConnection, ClientState] = {}
        self._cut: dict[ServerConnection, tuple[int, str]] = {}  # disconnected in flight

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        cfg = self.cfg
        if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
            self.tls = load_server_tls(cfg.tls_cert_file, cfg.tls_key_file)
        elif cfg.allow_plaintext and not cfg.host.startswith(("127.", "::1", "localhost")):
            log.warning(
                "gateway: listening on %s without TLS (allow_plaintext = true): bots' tokens "
                "and traffic cross the network in clear text",
                cfg.listen,
            )
        self.server = await serve(
            self._handle,
            self.cfg.host,
            self.cfg.port,
            process_request=self._process_request,
            # REST bodies (PUT/POST pass-through) and the relays' verbatim order path.
            create_connection=LeanServerConnection,
            compression=None,  # loopback: deflate costs CPU and would break frame sharing
            max_size=self.cfg.max_message_bytes,
            max_queue=16,
            open_timeout=10,  # bounds slowloris handshakes
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            server_header="wsgate",
            ssl=self.tls,
        )
        scheme = "wss" if self.tls is not None else "ws"
        log.info("gateway listening on %s://%s:%d/<route>", scheme, self.cfg.host, self.port)

    def reload_tls(self, cert: str | None, key: str | None) -> str | None:
        """Re-read the certificate and key into the running context (new handshakes use
        them); a note for the reload, or None without TLS."""
        if self.tls is None or cert is None or key is None:
            return None  # on or off is a restart (config_changes.RESTART_KEYS)
        load_server_tls(cert, key, self.tls)
        return f"gateway.tls_cert_file {cert!r} re-read: new bot connections get it"

    async def close(self, code: int = 1001, reason: str = "wsgate shutting down") -> None:
        if self.server is None:
            return
        self.server.close(close_connections=True, code=code, reason=reason)
        await self.server.wait_closed()
        await self.rest.aclose()

    def add_system_route(self, name: str, handler: SystemRoute) -> None:
        """A route served by ``handler``, guarded by ``origins`` and the gateway.events_* keys."""
        self.system_routes[name] = handler

    # ---------------------------------------------------------------- reload
    def set_max_message_bytes(self, limit: int) -> int:
        """Apply a new frame size limit to every open session; returns how many."""
        for s in self.sessions:
            _set_frame_limit(s.ws, limit)
        return len(self.sessions)

    def disconnect_client(self, name: str, code: int, reason: str) -> int:
        """Close the open sessions of client ``name`` (admitted ones included, configured
        or removed by a reload); returns how many."""
        closing = [s for s in self.sessions if s.client is not None and s.client.name == name]
        for s in closing:
            s.close_nowait(code, reason)
        in_flight = [c for c, state in self._admitted.items() if state.name == name]
        for conn in in_flight:  # a handshake under way: closed when its handler starts
            self._cut[conn] = (code, reason)
        return len(closing) + len(in_flight)

    def close_system_sessions(self, code: int, reason: str) -> int:
        """Close the open system-route sessions (their access settings changed)."""
        closing = [s for s in self.sessions if s.route in self.system_routes and s.open]
        for s in closing:
            s.close_nowait(code, reason)
        return len(closing)

    # ---------------------------------------------------------------- handshake
    def _reject(self, conn: ServerConnection, status: HTTPStatus, text: str) -> Response:
        self.rejected[status.value] = self.rejected.get(status.value, 0) + 1
        return conn.respond(status, text + "\n")

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        # The live limit, so a reload reaches new sessions (serve() fixed it at start).
        _set_frame_limit(conn, self.cfg.max_message_bytes)
        parts = urlsplit(request.path)
        segments = parts.path.lstrip("/").split("/", 1)
        name = segments[0]
        query = parse_qs(parts.query)
        route_for_rest = self.routes.get(name)
        if (
            route_for_rest is not None
            and route_for_rest.cfg.rest_url
            and "websocket" not in request.headers.get("Upgrade", "").lower()
            and len(segments) > 1
        ):
            return await self._rest(conn, request, route_for_rest, "/" + segments[1], parts.query)
        if name in self.system_routes:
            return self._check_system(conn, request, query)
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none"
            return self._reject(
                conn, HTTPStatus.NOT_FOUND, f"unknown route {name!r}; routes: {known}"
            )
        refused = self._check_gateway(conn, request)
        if refused is not None:
            return refused
        if route.cfg.max_sessions is not None and len(route.sessions) >= route.cfg.max_sessions:
            return self._reject(
                conn, HTTPStatus.SERVICE_UNAVAILABLE, f"routes.{name}.max_sessions reached"
            )
        rest = "/" + segments[1] if len(segments) > 1 else ""
        try:
            route.validate_path(rest, parts.query)
        except InvalidPath as exc:
            return self._reject(conn, HTTPStatus(exc.http_status), str(exc))
        refused, client = self._authorize(conn, request, query, route)
        if refused is not None or client is None:
            return refused
        limit = client.cfg.max_sessions
        if limit is not None and self._client_sessions(client) >= limit:
            client.refused["max_sessions"] += 1
            return self._reject(
                conn,
                HTTPStatus.TOO_MANY_REQUESTS,
                f"client {client.name}: max_sessions ({limit}) reached; close one of its "
                "sessions first",
            )
        self._admitted[conn] = client
        return None

    def _authorize(
        self,
        conn: ServerConnection,
        request: Request,
        query: dict[str, list[str]],
        route: RouteRuntime,
    ) -> tuple[Response | None, ClientState | None]:
        """Who the bot is on ``route``: (refusal, None), or (None, its client or None).

        Without [[gateway.clients]] only the route's own token_env applies. With clients,
        a bot needs a token: a client's (name, routes and limits apply) or the route's own.
        """
        if not self.clients.enabled:
            return self._check_token(conn, request, query, route.cfg.token_env), None
        given = _presented_token(request, query)
        client = self.clients.identify(given)
        if client is None:
            if route.cfg.token_env and _token_matches(request, query, route.cfg.token_env):
                return None, None  # the route's shared token: the simple case
            return self._reject(
                conn,
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong bearer token (a client's token is needed: "
                "Authorization: Bearer <token> or ?token=<token>)",
            ), None
        if not client.cfg.allows(route.name):
            client.refused["route"] += 1
            allowed = ", ".join(client.cfg.routes or ()) or "none"
            return self._reject(
                conn,
                HTTPStatus.FORBIDDEN,
                f"client {client.name} may not use route {route.name} (its routes: {allowed})",
            ), None
        return None, client

    def _client_sessions(self, client: ClientState) -> int:
        """Its open sessions plus its admitted handshakes still on their way to a session."""
        for conn in [c for c in self._admitted if c.protocol.state is not State.CONNECTING]:
            if conn.protocol.state is not State.OPEN:
                del self._admitted[conn]  # the handshake failed after admission
                self._cut.pop(conn, None)
        pending = sum(1 for c in self._admitted.values() if c is client)
        return len(client.sessions) + pending

    def _check_gateway(self, conn: ServerConnection, request: Request) -> Response | None:
        """What every session passes, a route's or the event stream's: its origin, the
        gateway's session limit, then a spare descriptor (last: passing notes it open)."""
        refused = self._check_origin(conn, request)
        if refused is not None:
            return refused
        if len(self.sessions) >= self.cfg.max_sessions:
            return self._reject(
                conn, HTTPStatus.SERVICE_UNAVAILABLE, "gateway.max_sessions reached"
            )
        return self._check_fds(conn)

    def _check_origin(self, conn: ServerConnection, request: Request) -> Response | None:
        # Browsers always send Origin; a page on another site must not reach the gateway.
        origin = request.headers.get("Origin")
        if self.cfg.origins and origin is not None and origin not in self.cfg.origins:
            return self._reject(conn, HTTPStatus.FORBIDDEN, f"origin {origin!r} not allowed")
        return None

    def _check_fds(self, conn: ServerConnection) -> Response | None:
        # Keep descriptors for root's control connections, reconnects and the database.
        if self.fds.room():
            self.fds.note_open()
            return None
        return self._reject(
            conn,
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"file descriptors nearly exhausted ({self.fds.limit} allowed, "
            f"{self.fds.reserve} kept in reserve); try again later",
        )

    def _check_system(
        self, conn: ServerConnection, request: Request, query: dict[str, list[str]]
    ) -> Response | None:
        """System routes (the event stream): origins, session limit, then the events token."""
        refused = self._check_gateway(conn, request)
        if refused is not None:
            return refused
        if self.cfg.events_token_env:
            return self._check_token(conn, request, query, self.cfg.events_token_env)
        if self.cfg.events_require_token:
            return self._reject(
                conn,
                HTTPStatus.FORBIDDEN,
                "the event stream needs a token: set gateway.events_token_env "
                "(or gateway.events_require_token = false to open it)",
            )
        return None

    async def _rest(
        self, conn: ServerConnection, request: Request, route: RouteRuntime, path: str, query: str
    ) -> Response:
        refused, _client = self._authorize(conn, request, parse_qs(query), route)
        if refused is not None:
            return refused
        assert route.cfg.rest_url is not None
        if route.cfg.token_env or self.clients.enabled:
            query = strip_query_params(query, GATEWAY_CREDENTIALS)  # ours, not the exchange's
        url = self.rest.target(route.cfg.rest_url, path, query)
        if url is None:
            return self._reject(conn, HTTPStatus.NOT_FOUND, f"no REST pass-through for {path}")
        prefix = urlsplit(route.cfg.rest_url).path.rstrip("/")
        listen_keys = getattr(route.dialect, "listen_key_rest", None)
        if not rest_allowed(
            request.method, path[len(prefix) :], route.cfg.type.authenticated, listen_keys
        ):
            also = (
                f"; POST/PUT/DELETE {prefix}{listen_keys} on user_data and trading routes"
                if listen_keys
                else ""
            )
            return self._reject(
                conn,
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{request.method} {path} does not pass through on route {route.name}"
                f" (GET only{also})",
            )
        headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
        return await self.rest.fetch(url, request.method, headers, request_body(request))

    def _check_token(
        self,
        conn: ServerConnection,
        request: Request,
        query: dict[str, list[str]],
        token_env: str | None,
    ) -> Response | None:
        if not token_env:
            return None
        if not os.environ.get(token_env, ""):
            return self._reject(conn, HTTPStatus.SERVICE_UNAVAILABLE, "route token not configured")
        if not _token_matches(request, query, token_env):
            return self._reject(conn, HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
        return None

    # ---------------------------------------------------------------- sessions
    async def _handle(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path if ws.request else "/")
        segments = parts.path.lstrip("/").split("/", 1)
        name = segments[0]
        rest = "/" + segments[1] if len(segments) > 1 else ""
        session = Session(
            ws,
            name,
            send_buffer_bytes=self.cfg.send_buffer_bytes,
            flusher=self.flusher,
            slow_close_code=self.cfg.slow_consumer_close_code,
        )
        client = session.client = self._admitted.pop(ws, None)
        cut = self._cut.pop(ws, None)
        if cut is not None:
            await ws.close(*cut)
            return
        if client is not None:
            client.sessions.add(session)
        self.sessions.add(session)
        if name not in self.system_routes:
            log.info(
                "session %d opened on route %s by %s from %s",
                session.id,
                name,
                f"client {client.name}" if client is not None else "an anonymous bot",
                session.peer,
            )
        try:
            if name in self.system_routes:
                await session.serve(self.system_routes[name](ws, session))
                return
            route = self.routes.get(name)
            if route is None:  # removed by a reload between handshake and handler
                await ws.close(1013, "route removed")
                return
            query = parts.query
            if route.cfg.token_env or self.clients.enabled:
                # The gateway consumed its own credential: it never travels upstream.
                query = strip_query_params(query, GATEWAY_CREDENTIALS)
            await session.serve(route.serve_session(ws, session, rest, query))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one session's handling ends that session only
            self.faults.record("session", exc, f"session {session.id} on route {name}")
            await ws.close(1011, "internal error")
        finally:
            self.sessions.discard(session)
            if client is not None:
                client.sessions.discard(session)
            if name not in self.system_routes:
                log.info(
                    "session %d closed on route %s (%s): code %s after %.0f s, %d frames out",
                    session.id,
                    name,
                    f"client {client.name}" if client is not None else "anonymous",
                    session.close_code or ws.close_code,
                    time.monotonic() - session.created,
                    session.frames_out,
                )

    def statistics(self) -> dict[str, object]:
        return {
            "listen": f"{self.cfg.host}:{self.port if self.server else self.cfg.port}",
            "tls": self.tls is not None,
            "sessions": len(self.sessions),
            "rejected_handshakes": dict(self.rejected),
            "fd_limit": self.fds.limit,
            "fd_in_use": self.fds.in_use(),
        }


def _presented_token(request: Request, query: dict[str, list[str]]) -> str:
    """The bot's bearer token: ``Authorization: Bearer`` first, else ``?token=``."""
    auth = request.headers.get("Authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else (query.get("token") or [""])[0]


def _token_matches(request: Request, query: dict[str, list[str]], token_env: str) -> bool:
    """The bot presented the (non-empty) token in ``$token_env``; constant-time compare."""
    expected = os.environ.get(token_env, "")
    given = _presented_token(request, query)
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _set_frame_limit(conn: ServerConnection, limit: int) -> None:
    if isinstance(conn, LeanServerConnection):
        conn.set_frame_limit(limit)
    else:
        conn.protocol.max_message_size = limit
