"""The control-plane wire format: versioned JSON lines over a Unix stream socket.

One JSON object per line, UTF-8, ``\\n``-terminated, at most :data:`MAX_LINE` bytes::

    request  {"v":1,"id":1,"method":"status","params":{}}
    result   {"v":1,"id":1,"ok":true,"result":{...}}
    error    {"v":1,"id":1,"ok":false,"error":{"code":"not_found","message":"...","details":...}}
    event    {"v":1,"id":7,"event":"alert","data":{...}}          (streams only)
    done     {"v":1,"id":7,"ok":true,"done":true}                  (end of a stream)

Unknown fields are ignored, so additive changes keep ``v``; a breaking change bumps
:data:`PROTO` and the daemon keeps serving ``MIN_PROTO..PROTO``.

The CLI imports this module on every command: it stays stdlib-only and tiny.
"""

from __future__ import annotations

import json

from wsgate.errors import ControlError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing

if TYPE_CHECKING:  # typing costs ~4 ms of import time on every CLI call
    from typing import Any

__all__ = [
    "BAD_REQUEST",
    "CONFLICT",
    "CONNECTION_LOST",
    "DAEMON_NOT_RUNNING",
    "EXIT_CODES",
    "INTERNAL",
    "INVALID_CONFIG",
    "INVALID_PARAMS",
    "LINE_TOO_LONG",
    "MAX_LINE",
    "MIN_PROTO",
    "NOT_FOUND",
    "OK",
    "PERMISSION_DENIED",
    "PROTO",
    "TIMEOUT",
    "TOO_MANY_CONNECTIONS",
    "UNKNOWN_METHOD",
    "UNSUPPORTED_VERSION",
    "RequestId",
    "decode_line",
    "decode_reply",
    "encode_done",
    "encode_error",
    "encode_event",
    "encode_request",
    "encode_result",
    "exit_code",
]

PROTO = 1
MIN_PROTO = 1
MAX_LINE = 1 << 20

# Stable error codes: scripts match on these, so never rename one.
OK = "ok"
BAD_REQUEST = "bad_request"
UNKNOWN_METHOD = "unknown_method"
INVALID_PARAMS = "invalid_params"
PERMISSION_DENIED = "permission_denied"
INVALID_CONFIG = "invalid_config"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
INTERNAL = "internal"
UNSUPPORTED_VERSION = "unsupported_version"
LINE_TOO_LONG = "line_too_long"
TOO_MANY_CONNECTIONS = "too_many_connections"
# Raised by the client only, never sent by the daemon.
DAEMON_NOT_RUNNING = "daemon_not_running"
TIMEOUT = "timeout"
CONNECTION_LOST = "connection_lost"

# 0 ok, 1 failed, 2 usage, 3 daemon not running, 4 permission denied.
EXIT_CODES: dict[str, int] = {
    OK: 0,
    BAD_REQUEST: 2,
    UNKNOWN_METHOD: 2,
    INVALID_PARAMS: 2,
    LINE_TOO_LONG: 2,
    TOO_MANY_CONNECTIONS: 1,
    PERMISSION_DENIED: 4,
    INVALID_CONFIG: 1,
    NOT_FOUND: 1,
    CONFLICT: 1,
    INTERNAL: 1,
    UNSUPPORTED_VERSION: 1,
    DAEMON_NOT_RUNNING: 3,
    TIMEOUT: 1,
    CONNECTION_LOST: 1,
}

RequestId = int | str | None

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def exit_code(code: str) -> int:
    """The CLI exit code for an error code; a code this CLI does not know yet is a failure (1)."""
    return EXIT_CODES.get(code, 1)


def _line(obj: dict[str, Any]) -> bytes:
    return _dumps(obj).encode("utf-8") + b"\n"


def encode_request(id: RequestId, method: str, params: dict[str, Any] | None = None) -> bytes:
    return _line({"v": PROTO, "id": id, "method": method, "params": params or {}})


def encode_result(id: RequestId, result: Any) -> bytes:
    return _line({"v": PROTO, "id": id, "ok": True, "result": result})


def encode_error(id: RequestId, code: str, message: str, details: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return _line({"v": PROTO, "id": id, "ok": False, "error": error})


def encode_event(id: RequestId, event: str, data: Any) -> bytes:
    return _line({"v": PROTO, "id": id, "event": event, "data": data})


def encode_done(id: RequestId) -> bytes:
    return _line({"v": PROTO, "id": id, "ok": True, "done": True})


def _decode_envelope(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ControlError(LINE_TOO_LONG, f"line of {len(line)} bytes exceeds {MAX_LINE} bytes")
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(BAD_REQUEST, f"not a JSON line: {exc}") from None
    except RecursionError:  # json's C scanner gives up on deep nesting this way
        raise ControlError(BAD_REQUEST, "not a JSON line: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ControlError(BAD_REQUEST, f"expected a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    # bool is an int subclass; {"v": true} is garbage, not version 1.
    if not isinstance(v, int) or isinstance(v, bool):
        raise ControlError(BAD_REQUEST, 'missing or non-integer protocol version "v"')
    if not MIN_PROTO <= v <= PROTO:
        raise ControlError(
            UNSUPPORTED_VERSION,
            f"protocol version {v} is not supported (this side speaks {MIN_PROTO}..{PROTO}); "
            "upgrade the older of wsgate CLI and daemon",
            {"proto": PROTO, "min_proto": MIN_PROTO},
        )
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, int | str) or isinstance(rid, bool)):
        raise ControlError(BAD_REQUEST, '"id" must be an integer, a string or null')
    return obj


def decode_line(line: bytes) -> dict[str, Any]:
    """Decode one request line; raise ``ControlError`` with a stable code when it is unusable.

    ``params`` is normalised to a dict (missing → ``{}``); a non-object ``params`` is
    ``invalid_params`` rather than ``bad_request`` because the envelope itself is fine.
    """
    obj = _decode_envelope(line)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise ControlError(BAD_REQUEST, 'missing "method" (a non-empty string)')
    params = obj.get("params")
    if params is None:
        obj["params"] = {}
    elif not isinstance(params, dict):
        raise ControlError(
            INVALID_PARAMS, f'"params" must be an object, got {type(params).__name__}'
        )
    return obj


def decode_reply(line: bytes) -> dict[str, Any]:
    """Decode one reply line (result, error, event or done) as the client receives it."""
    obj = _decode_envelope(line)
    if "event" not in obj and not isinstance(obj.get("ok"), bool):
        raise ControlError(BAD_REQUEST, 'reply has neither "ok" nor "event"')
    return obj
