"""The data plane's frame messages between nodes (subject ``<name>.md.<route>.<token>``).

Two formats travel on a key's subject; a follower reads both, an owner writes the newer
one unless a follower of that key asked for its state without saying it reads it:

* **v1**: one JSON list per NATS message, ``[epoch, seq, channel, kind, text, start, end,
  ts]`` (one frame), or ``[epoch, start, old epoch, at]`` (a successor's link). Links are
  always v1.
* **v2**: consecutive frames of one key in one message (what one loop turn of the owner
  fanned out), so a busy key costs one NATS message per turn instead of one per frame,
  and a frame's text travels raw instead of as an escaped JSON string::

      b"W2 " + JSON [epoch, first seq, [[channel, kind, start, end, ts, n], ...]] + b"\\n"
      + text 1 + text 2 + ...  (each text UTF-8, n its length in bytes)

  Frame ``i`` has sequence ``first seq + i``.

A message in neither format (a later ``W<n>``, garbage) decodes to ``None``: the follower
ignores it and says so once, it never guesses. Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from wsgate.dialects import base as d

__all__ = ["V2", "decode", "encode_frames", "encode_v1", "version_of"]

V2 = b"W2 "
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def encode_v1(epoch: str, seq: int, ev: d.ChannelData) -> bytes:
    body = [epoch, seq, ev.channel, ev.kind.value, ev.text, ev.start, ev.end, ev.ts]
    return _DUMPS(body).encode()


def encode_frames(epoch: str, first: int, events: list[d.ChannelData]) -> bytes:
    """One v2 message: ``events`` carry the sequences ``first``, ``first + 1``, ..."""
    texts = [ev.text.encode() for ev in events]
    meta = [
        [ev.channel, ev.kind.value, ev.start, ev.end, ev.ts, len(t)]
        for ev, t in zip(events, texts, strict=True)
    ]
    return b"".join((V2, _DUMPS([epoch, first, meta]).encode(), b"\n", *texts))


def version_of(payload: bytes) -> str:
    """What a message says it is, for a log line about one this node cannot read."""
    if payload[:1] == b"[":
        return "v1"
    head = payload[:8].split(b" ", 1)[0]
    return head.decode(errors="replace") or "empty"


def decode(payload: bytes) -> list[list[Any]] | None:
    """The message's bodies in v1's layout (frames: 8 items, a link: 4), in order; None
    when the message is in no format this node knows or is malformed."""
    if payload[:1] == b"[":
        try:
            body = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(body, list) or len(body) not in (4, 8):
            return None
        return [body]
    if not payload.startswith(V2):
        return None
    return _decode_v2(payload)


def _decode_v2(payload: bytes) -> list[list[Any]] | None:
    nl = payload.find(b"\n")
    if nl < 0:
        return None
    try:
        epoch, first, meta = json.loads(payload[len(V2) : nl])
        pos = nl + 1
        bodies: list[list[Any]] = []
        for i, (channel, kind, start, end, ts, n) in enumerate(meta):
            if not isinstance(n, int) or n < 0 or pos + n > len(payload):
                return None
            text = payload[pos : pos + n].decode()
            pos += n
            bodies.append([epoch, first + i, channel, kind, text, start, end, ts])
    except (ValueError, TypeError):  # bad JSON, wrong shapes, bad UTF-8
        return None
    if pos != len(payload) or not isinstance(epoch, str) or not isinstance(first, int):
        return None
    return bodies
