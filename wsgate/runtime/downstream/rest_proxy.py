"""Pass-through of an exchange's REST calls on a route (depth snapshots, listen keys).

Order-book clients fetch ``GET <rest>/depth`` and then apply the stream's updates
from ``lastUpdateId``; serving that GET on the same route the bot already talks to
(``http://127.0.0.1:8765/binance/api/v3/depth?...``) keeps the bot unchanged.

Binance user data streams need their listen key created, kept alive and closed with
``POST``/``PUT``/``DELETE`` on the dialect's listen-key path (spot ``<rest>/userDataStream``,
USD-M ``<rest>/listenKey``) and the account's API key in the ``X-MBX-APIKEY`` header. Those
three methods pass through for that path only, and only on ``user_data`` and ``trading``
routes (:func:`allowed`); every other path is GET-only.
Only the headers the exchange needs (:data:`FORWARDED_HEADERS`) are forwarded -- never
the gateway's own bearer token. Bounded in size and time; nothing of a request's query
or body is logged (it holds the listen key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx
from websockets.datastructures import Headers
from websockets.http11 import Response

from wsgate.urls import join_url

__all__ = ["FORWARDED_HEADERS", "LISTEN_KEY_PATH", "RestProxy", "allowed"]

log = logging.getLogger("wsgate.rest")

MAX_BODY = 8 * 1024 * 1024
TIMEOUT = 10.0
LISTEN_KEY_PATH = "/userDataStream"  # under the route's rest_url
FORWARDED_HEADERS = ("X-MBX-APIKEY", "Content-Type")


def allowed(
    method: str, rest_path: str, authenticated: bool, listen_key_path: str | None = LISTEN_KEY_PATH
) -> bool:
    """May ``method`` pass through to ``rest_path`` (relative to rest_url) on this route?

    ``listen_key_path``: the dialect's listen-key path (None: the route has none)."""
    if method == "GET":
        return True
    return (
        authenticated
        and listen_key_path is not None
        and method in ("POST", "PUT", "DELETE")
        and rest_path.rstrip("/") == listen_key_path
    )


class RestProxy:
    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self.requests = 0
        self.failures = 0

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        return self._client

    @staticmethod
    def target(rest_url: str, rest_path: str, query: str) -> str | None:
        """Map ``/api/v3/depth`` on the route to ``<rest_url>/depth``; None if outside it."""
        base = urlsplit(rest_url)
        prefix = base.path.rstrip("/")
        if not rest_path.startswith(prefix + "/") or ".." in rest_path:
            return None
        return join_url(rest_url, rest_path[len(prefix) :] + (f"?{query}" if query else ""))

    async def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        self.requests += 1
        try:
            async with self._http().stream(
                method, url, headers=dict(headers or {}), content=body or None
            ) as r:
                body = b""
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise httpx.HTTPError(f"response over {MAX_BODY} bytes")
        except httpx.HTTPError as exc:
            self.failures += 1
            log.warning("REST pass-through to %s failed: %s", urlsplit(url).netloc, exc)
            text = f"upstream REST request failed: {type(exc).__name__}\n".encode()
            return Response(
                HTTPStatus.BAD_GATEWAY.value,
                HTTPStatus.BAD_GATEWAY.phrase,
                Headers(
                    [
                        ("Content-Type", "text/plain"),
                        ("Content-Length", str(len(text))),
                        ("Connection", "close"),
                    ]
                ),
                text,
            )
        headers = Headers(
            [
                ("Content-Type", r.headers.get("content-type", "application/json")),
                ("Content-Length", str(len(body))),
                # websockets closes the socket after any HTTP answer: a client that kept it
                # for its next call (aiohttp: python-binance) would write into a closed one.
                ("Connection", "close"),
            ]
        )
        try:
            phrase = HTTPStatus(r.status_code).phrase
        except ValueError:
            phrase = "Unknown"
        return Response(r.status_code, phrase, headers, body)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
