from __future__ import annotations

import json

import pytest

from wsgate.control import wire
from wsgate.errors import ControlError


def _code(line: bytes) -> str:
    with pytest.raises(ControlError) as info:
        wire.decode_line(line)
    return info.value.code


def test_request_round_trip() -> None:
    line = wire.encode_request(7, "status", {"route": "bitfinex"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.decode_line(line) == {
        "v": 1,
        "id": 7,
        "method": "status",
        "params": {"route": "bitfinex"},
    }


def test_encoders_produce_the_documented_envelopes() -> None:
    assert json.loads(wire.encode_result(1, {"a": 1})) == {
        "v": 1,
        "id": 1,
        "ok": True,
        "result": {"a": 1},
    }
    assert json.loads(wire.encode_error(2, wire.NOT_FOUND, "no route 'x'")) == {
        "v": 1,
        "id": 2,
        "ok": False,
        "error": {"code": "not_found", "message": "no route 'x'"},
    }
    err = json.loads(wire.encode_error(3, wire.INVALID_CONFIG, "bad", [{"path": "a"}]))
    assert err["error"]["details"] == [{"path": "a"}]
    assert json.loads(wire.encode_event(4, "alert", {"n": 1})) == {
        "v": 1,
        "id": 4,
        "event": "alert",
        "data": {"n": 1},
    }
    assert wire.encode_done(5) == b'{"v":1,"id":5,"ok":true,"done":true}\n'


def test_non_ascii_stays_one_line_of_utf8() -> None:
    line = wire.encode_result("x", {"msg": "prix €\nligne"})
    assert line.count(b"\n") == 1
    assert "€".encode() in line
    assert wire.decode_reply(line)["result"]["msg"] == "prix €\nligne"


def test_params_default_to_empty_object() -> None:
    assert wire.decode_line(b'{"v":1,"id":1,"method":"hello"}')["params"] == {}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", wire.BAD_REQUEST),
        (b"\xff\xfe", wire.BAD_REQUEST),
        (b"[1,2]", wire.BAD_REQUEST),
        (b'{"id":1,"method":"status"}', wire.BAD_REQUEST),
        (b'{"v":"1","id":1,"method":"status"}', wire.BAD_REQUEST),
        (b'{"v":true,"id":1,"method":"status"}', wire.BAD_REQUEST),
        (b'{"v":1,"id":1}', wire.BAD_REQUEST),
        (b'{"v":1,"id":1,"method":""}', wire.BAD_REQUEST),
        (b'{"v":1,"id":[1],"method":"status"}', wire.BAD_REQUEST),
        (b'{"v":2,"id":1,"method":"status"}', wire.UNSUPPORTED_VERSION),
        (b'{"v":0,"id":1,"method":"status"}', wire.UNSUPPORTED_VERSION),
        (b'{"v":1,"id":1,"method":"status","params":[1]}', wire.INVALID_PARAMS),
    ],
)
def test_decode_line_rejects_with_stable_codes(line: bytes, code: str) -> None:
    assert _code(line) == code


def test_over_long_line_is_line_too_long() -> None:
    line = b'{"v":1,"id":1,"method":"x","params":{"p":"' + b"a" * wire.MAX_LINE + b'"}}'
    assert _code(line) == wire.LINE_TOO_LONG


def test_decode_reply_needs_ok_or_event() -> None:
    assert wire.decode_reply(wire.encode_done(1))["done"] is True
    with pytest.raises(ControlError) as info:
        wire.decode_reply(b'{"v":1,"id":1}')
    assert info.value.code == wire.BAD_REQUEST


def test_exit_codes() -> None:
    assert wire.exit_code(wire.OK) == 0
    assert wire.exit_code(wire.NOT_FOUND) == 1
    assert wire.exit_code(wire.INVALID_PARAMS) == 2
    assert wire.exit_code(wire.DAEMON_NOT_RUNNING) == 3
    assert wire.exit_code(wire.PERMISSION_DENIED) == 4
    assert wire.exit_code("a_code_from_a_newer_daemon") == 1
    # Every daemon-side code has an explicit exit code.
    for code in (
        wire.BAD_REQUEST,
        wire.UNKNOWN_METHOD,
        wire.INVALID_CONFIG,
        wire.CONFLICT,
        wire.INTERNAL,
        wire.UNSUPPORTED_VERSION,
        wire.LINE_TOO_LONG,
    ):
        assert code in wire.EXIT_CODES
