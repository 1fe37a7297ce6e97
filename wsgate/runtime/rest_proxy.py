"""Pass-through of an exchange's public REST GETs on a route (Binance depth snapshots).

Order-book clients fetch ``GET <rest>/depth`` and then apply the stream's updates
from ``lastUpdateId``; serving that GET on the same route the bot already talks to
(``http://127.0.0.1:8765/binance/api/v3/depth?...``) keeps the bot unchanged.
Only GETs under the route's ``rest_url`` path, bounded in size and time.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx
from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["RestProxy"]

log = logging.getLogger("wsgate.rest")

MAX_BODY = 8 * 1024 * 1024
TIMEOUT = 10.0


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
        url = rest_url.rstrip("/") + rest_path[len(prefix) :]
        return url + (f"?{query}" if query else "")

    async def fetch(self, url: str) -> Response:
        self.requests += 1
        try:
            async with self._http().stream("GET", url) as r:
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
                Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(text)))]),
                text,
            )
        headers = Headers(
            [
                ("Content-Type", r.headers.get("content-type", "application/json")),
                ("Content-Length", str(len(body))),
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
