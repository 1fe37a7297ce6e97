"""Fuzzing control parameters: any JSON for any method's params ends in a clean result or
``invalid_params`` — never an internal error, never a traceback in the daemon's log."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import Stack
from wsgate.control import wire
from wsgate.control.api import build_handlers
from wsgate.control.client import ControlClient
from wsgate.control.schema import Kind
from wsgate.errors import ControlError

if TYPE_CHECKING:
    from wsgate.daemon import Daemon

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
HANDLERS = build_handlers(cast("Daemon", None))
# Methods that are safe to call with valid parameters on the shared fuzz daemon: reads
# only (a valid `stop` or `connections.disable` would end the run for every other test).
READS = sorted(name for name, h in HANDLERS.items() if not h.mutating and not h.stream and h.params)

edge_numbers = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 + 1, 10**30, -(10**30), 1e308, -1e308, 0.5, 1e-300, 200, 10_000]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | edge_numbers
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["15m", "1d12h", "", " ", "\x00", "adaptive", "echo", "x" * 300])
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def method_and_params(draw: st.DrawFn, methods: list[str]) -> tuple[str, dict[str, Any]]:
    method = draw(st.sampled_from(methods))
    schema = HANDLERS[method].params
    assert schema is not None
    names = [*schema.params, "limt", "", "x"]
    keys = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    return method, {k: draw(json_values) for k in keys}


def _conforms(method: str, clean: dict[str, Any]) -> None:
    schema = HANDLERS[method].params
    assert schema is not None
    for name, value in clean.items():
        spec = schema.params[name]
        if spec.kind is Kind.STRING:
            assert isinstance(value, str) and len(value) <= spec.max_len
        elif spec.kind is Kind.STRINGS:
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif spec.kind is Kind.INTEGER:
            assert type(value) is int
        else:
            assert type(value) is float and math.isfinite(value)
        if spec.kind in (Kind.INTEGER, Kind.NUMBER, Kind.DURATION):
            assert spec.lo is None or value >= spec.lo
            assert spec.hi is None or value <= spec.hi


@settings(max_examples=600, deadline=None)
@given(method_and_params(sorted(HANDLERS)))
def test_schema_check_returns_clean_params_or_invalid_params(
    case: tuple[str, dict[str, Any]],
) -> None:
    method, params = case
    schema = HANDLERS[method].params
    assert schema is not None
    try:
        clean = schema.check(method, params)
    except ControlError as exc:
        assert exc.code == wire.INVALID_PARAMS
        assert exc.message.startswith(method + ":"), exc.message
        return
    assert set(clean) <= set(schema.params)
    _conforms(method, clean)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.lists(method_and_params(READS), min_size=1, max_size=5))
def test_daemon_answers_fuzzed_params_cleanly(
    stack: Stack, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    with ControlClient(stack.daemon.socket, timeout=10) as client:
        for method, params in calls:
            try:
                client.call(method, params)
            except ControlError as exc:
                # not_found: a well-formed id or route that does not exist.
                assert exc.code in (wire.INVALID_PARAMS, wire.NOT_FOUND), (method, params, exc)
