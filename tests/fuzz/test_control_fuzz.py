"""Bad input on the control socket: every request gets an error reply or a clean close, and
the daemon keeps answering ``status`` to everyone else."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import wait_until
from tests.fuzz.conftest import Stack, send_and_drain
from wsgate.control import wire
from wsgate.control.admission import MAX_CONNECTIONS, PRIVILEGED_RESERVE
from wsgate.control.client import ControlClient
from wsgate.errors import ControlError

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# Envelopes that look almost right: each field has a random type, some are missing.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 0, 2, True, "1", None, 1.0]),
        "id": json_values,
        "method": st.sampled_from(["status", "hello", "connections", "nope", ""]) | json_values,
        "params": json_values,
    },
)


def _exchange(path: str, data: bytes, *, half_close: bool = True) -> list[dict[str, Any]]:
    """Send ``data``, optionally half-close, and read reply lines until the daemon closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        buf = send_and_drain(s, data, half_close=half_close)
    return [json.loads(line) for line in buf.splitlines()]


def _assert_replies(replies: list[dict[str, Any]]) -> None:
    for r in replies:
        assert r["v"] == wire.PROTO
        if r["ok"] is False:
            assert isinstance(r["error"]["code"], str) and r["error"]["message"]


def _status_ok(stack: Stack) -> None:
    with ControlClient(stack.daemon.socket, timeout=5) as client:
        assert client.call("status")["routes"]


@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.binary(max_size=300))
def test_random_bytes_get_an_error_or_a_close(stack: Stack, garbage: bytes) -> None:
    replies = _exchange(stack.daemon.socket, garbage + b"\n")
    _assert_replies(replies)
    if garbage.strip():
        assert all(r["ok"] is False for r in replies)


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.lists(envelopes | json_values, min_size=1, max_size=4))
def test_json_of_wrong_shapes(stack: Stack, lines: list[Any]) -> None:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    replies = _exchange(stack.daemon.socket, data)
    assert replies, "every connection gets at least one reply line before the close"
    _assert_replies(replies)


def test_malformed_and_deeply_nested_lines_get_bad_request(stack: Stack) -> None:
    for line in (b'{"v":1,"id":3,"method":"status"', b"[" * 100_000, b'{"v":1,"a":' * 50_000):
        (reply,) = _exchange(stack.daemon.socket, line + b"\n")
        assert reply["ok"] is False and reply["error"]["code"] == wire.BAD_REQUEST, reply
    _status_ok(stack)


def test_huge_line_is_refused_and_closed(stack: Stack) -> None:
    huge = b'{"v":1,"id":1,"method":"status","params":{"x":"' + b"a" * (wire.MAX_LINE + 10)
    replies = _exchange(stack.daemon.socket, huge + b'"}}\n')
    assert [r["error"]["code"] for r in replies] == [wire.LINE_TOO_LONG]
    _status_ok(stack)


def test_half_closed_connection_still_gets_its_replies(stack: Stack) -> None:
    data = wire.encode_request(1, "status") + wire.encode_request(2, "hello")
    replies = _exchange(stack.daemon.socket, data)
    assert [(r["id"], r["ok"]) for r in replies] == [(1, True), (2, True)]


def test_many_concurrent_connections_idle_and_busy(stack: Stack) -> None:
    cap = MAX_CONNECTIONS + PRIVILEGED_RESERVE  # root's cap (these tests run as root or the owner)
    socks = []
    try:
        for _ in range(cap - 1):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(stack.daemon.socket)
            socks.append(s)
        socks[0].sendall(b"half a line without an end")
        _status_ok(stack)  # idle and half-written connections do not block anyone
        for i, s in enumerate(socks[1:], 1):
            s.sendall(wire.encode_request(i, "status"))
        for i, s in enumerate(socks[1:], 1):
            reply = json.loads(s.makefile("rb").readline())
            assert reply["id"] == i and reply["ok"] is True
        # Past the cap: one line saying why, then the hang-up.
        socks.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        socks[-1].settimeout(10)
        socks[-1].connect(stack.daemon.socket)
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.settimeout(10)
        extra.connect(stack.daemon.socket)
        socks.append(extra)
        refusal = json.loads(extra.makefile("rb").readline())
        assert refusal["error"]["code"] == wire.TOO_MANY_CONNECTIONS, refusal
    finally:
        for s in socks:
            s.close()
    wait_until(_status_answers(stack), 10, "status once the connections are gone")


def _status_answers(stack: Stack) -> Callable[[], bool]:
    def check() -> bool:
        try:
            _status_ok(stack)
        except ControlError:
            return False
        return True

    return check
