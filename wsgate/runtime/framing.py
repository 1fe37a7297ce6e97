"""Server-to-client WebSocket frames, encoded once and written to many transports.

Server frames are unmasked (RFC 6455 §5.1) and the bot-facing server negotiates no
extensions, so a frame's bytes are the same for every session: the fan-out path
encodes each upstream message once and hands the same ``bytes`` to every transport.
Encoding runs once per upstream frame (and once per relayed frame), so it is written
for speed: short headers come from a table, no helper call, no tuple per frame.
"""

from __future__ import annotations

import struct

__all__ = ["encode_binary", "encode_text"]

_OP_TEXT = 0x81  # FIN + text
_OP_BINARY = 0x82  # FIN + binary
_SHORT_TEXT = [bytes((_OP_TEXT, n)) for n in range(126)]
_SHORT_BINARY = [bytes((_OP_BINARY, n)) for n in range(126)]
_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def encode_text(payload: str | bytes) -> bytes:
    """Encode a text frame; ``bytes`` input must already be valid UTF-8."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data)
    if n < 126:
        return _SHORT_TEXT[n] + data
    if n < 65536:
        return _HEAD16(_OP_TEXT, 126, n) + data
    return _HEAD64(_OP_TEXT, 127, n) + data


def encode_binary(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return _SHORT_BINARY[n] + payload
    if n < 65536:
        return _HEAD16(_OP_BINARY, 126, n) + payload
    return _HEAD64(_OP_BINARY, 127, n) + payload
