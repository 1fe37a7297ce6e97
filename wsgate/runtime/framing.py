"""Server-to-client WebSocket frames, encoded once and written to many transports.

Server frames are unmasked (RFC 6455 §5.1) and the bot-facing server negotiates no
extensions, so a frame's bytes are the same for every session: the fan-out path
encodes each upstream message once and hands the same ``bytes`` to every transport.
"""

from __future__ import annotations

import struct

__all__ = ["encode_binary", "encode_text"]

_OP_TEXT = 0x81  # FIN + text
_OP_BINARY = 0x82  # FIN + binary


def _encode(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def encode_text(payload: str | bytes) -> bytes:
    """Encode a text frame; ``bytes`` input must already be valid UTF-8."""
    return _encode(_OP_TEXT, payload.encode() if isinstance(payload, str) else payload)


def encode_binary(payload: bytes) -> bytes:
    return _encode(_OP_BINARY, payload)
