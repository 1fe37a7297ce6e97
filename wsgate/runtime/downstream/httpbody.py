"""Plain HTTP requests with a body on a websockets server (REST pass-through, simulator).

websockets parses the opening request itself and refuses any request with a body
(``Content-Length`` other than 0): a WebSocket handshake has none. The REST calls a
bot makes on the same port do: Binance listen-key keepalive is ``PUT
/api/v3/userDataStream`` with ``listenKey=...`` form-encoded in the body (python-binance).
:class:`BodyServerConnection` is a drop-in ``create_connection`` for
``websockets.asyncio.server.serve`` that parses the request line and headers with
websockets' own parsers and, for a method other than GET, reads a body of up to
:data:`MAX_BODY` bytes (``Content-Length`` only; chunked transfer is refused the way
websockets refuses it). :func:`request_body` gives the body to ``process_request``.
Everything else -- errors, limits, the handshake -- stays websockets' own.
"""

from __future__ import annotations

import http
from collections.abc import Generator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import (
    HeaderLineTooLong,
    InvalidMessage,
    RequestLineTooLong,
    TooManyHeaders,
)
from websockets.http11 import Request, parse_headers, parse_line
from websockets.protocol import CONNECTING, Protocol
from websockets.server import ServerProtocol

__all__ = ["MAX_BODY", "BodyServerConnection", "request_body"]

MAX_BODY = 64 * 1024  # REST calls the gateway passes on are small forms


class _TooLarge(ValueError):
    pass


class _LengthRequired(ValueError):
    pass


def request_body(request: Request) -> bytes:
    """The body read with ``request`` (empty for GET and bodiless requests)."""
    body = getattr(request, "body", b"")
    return body if isinstance(body, bytes) else b""


def _read_request(protocol: ServerProtocol) -> Generator[None, None, Request]:
    reader = protocol.reader
    line = yield from parse_line(reader.read_line, RequestLineTooLong)
    try:
        raw_method, raw_path, raw_protocol = line.split(b" ", 2)
    except ValueError:
        raise ValueError(f"invalid HTTP request line: {line[:64]!r}") from None
    if raw_protocol not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ValueError(f"unsupported protocol {raw_protocol[:16]!r}")
    method = raw_method.decode("ascii")
    path = raw_path.decode("ascii")
    headers = yield from parse_headers(reader.read_line)
    if "Transfer-Encoding" in headers:
        # The pass-through forwards bounded bodies only; every exchange client we relay
        # sends its small form bodies with a Content-Length.
        raise _LengthRequired("chunked request bodies are not accepted: send Content-Length")
    lengths = set(headers.get_all("Content-Length"))
    body = b""
    if lengths - {"0"}:
        if method == "GET" or len(lengths) != 1:
            raise ValueError("unsupported request body")
        (value,) = lengths
        if not value.isdigit():
            raise ValueError(f"bad Content-Length {value[:20]!r}")
        if int(value) > MAX_BODY:
            raise _TooLarge(f"request body over {MAX_BODY} bytes")
        body = bytes((yield from reader.read_exact(int(value))))
    request = Request(path, headers, method, raw_protocol.decode("ascii"))
    if body:
        request.body = body  # type: ignore[attr-defined]
    return request


def _parse(protocol: ServerProtocol) -> Generator[None]:
    """``ServerProtocol.parse`` with :func:`_read_request` in place of ``Request.parse``."""
    if protocol.state is CONNECTING:
        try:
            request = yield from _read_request(protocol)
        except RequestLineTooLong as exc:
            protocol.handshake_exc = exc
            protocol.send_response(
                protocol.reject(http.HTTPStatus.REQUEST_URI_TOO_LONG, f"{exc}.\n")
            )
            yield
        except _TooLarge as exc:
            protocol.handshake_exc = exc
            protocol.send_response(
                protocol.reject(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{exc}.\n")
            )
            yield
        except _LengthRequired as exc:
            protocol.handshake_exc = exc
            protocol.send_response(protocol.reject(http.HTTPStatus.LENGTH_REQUIRED, f"{exc}.\n"))
            yield
        except (HeaderLineTooLong, TooManyHeaders) as exc:
            protocol.handshake_exc = exc
            protocol.send_response(
                protocol.reject(http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"{exc}.\n")
            )
            yield
        except Exception as exc:
            protocol.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
            protocol.handshake_exc.__cause__ = exc
            protocol.send_eof()
            protocol.parser = protocol.discard()
            next(protocol.parser)
            yield
        protocol.events.append(request)
    yield from Protocol.parse(protocol)


class BodyServerConnection(ServerConnection):
    """``ServerConnection`` whose opening request may carry a bounded body (non-GET)."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        # Nothing has been received yet: the parser can still be swapped.
        protocol.parser = _parse(protocol)
        next(protocol.parser)
        super().__init__(protocol, *args, **kwargs)
