"""Control parameter schemas: types, ranges and names checked before any handler runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import pytest

from wsgate.control import wire
from wsgate.control.api import build_handlers
from wsgate.control.schema import (
    NO_PARAMS,
    Schema,
    duration,
    integer,
    number,
    parse_duration,
    string,
    strings,
)
from wsgate.errors import ControlError

if TYPE_CHECKING:
    from wsgate.daemon import Daemon

HISTORY = Schema(since=duration(), limit=integer(1, 10_000, default=200), route=string())


def refused(schema: Schema, params: dict[str, Any]) -> str:
    with pytest.raises(ControlError) as info:
        schema.check("m", params)
    assert info.value.code == wire.INVALID_PARAMS
    return info.value.message


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        (1e308, "between 1 and 10000"),
        (-1, "between 1 and 10000"),
        (0, "between 1 and 10000"),
        (10**30, "between 1 and 10000"),
        (2.5, "expected an integer"),
        (float("nan"), "expected an integer"),
        (True, "expected an integer, got boolean"),
        ("5", "expected an integer, got string"),
        ([5], "expected an integer, got list"),
    ],
)
def test_limit_out_of_range_or_of_the_wrong_type_is_invalid_params(
    limit: object, reason: str
) -> None:
    message = refused(HISTORY, {"limit": limit})
    assert message.startswith("m: limit: ") and reason in message, message


def test_clean_values_defaults_and_null_as_absent() -> None:
    assert HISTORY.check("m", {}) == {"limit": 200}
    assert HISTORY.check("m", {"limit": None, "route": None, "since": None}) == {"limit": 200}
    assert HISTORY.check("m", {"limit": 7.0, "since": "1h30m"}) == {"limit": 7, "since": 5400.0}
    assert HISTORY.check("m", {"since": 90}) == {"limit": 200, "since": 90.0}


def test_unknown_parameter_is_refused_with_a_hint() -> None:
    message = refused(HISTORY, {"limt": 5})
    assert "unknown parameter 'limt'" in message and "did you mean 'limit'?" in message
    assert "unknown parameter 'x'" in refused(NO_PARAMS, {"x": 1})


def test_strings_required_choices_and_lengths() -> None:
    schema = Schema(
        id=string(required=True),
        strategy=string(choices=("round_robin", "adaptive")),
        matchers=strings(max_items=2),
    )
    assert "missing parameter 'id'" in refused(schema, {})
    assert "must not be empty" in refused(schema, {"id": "  "})
    assert "expected a string, got number" in refused(schema, {"id": 5})
    assert "at most 256 characters" in refused(schema, {"id": "x" * 257})
    assert "NUL" in refused(schema, {"id": "a\x00b"})
    assert "did you mean 'adaptive'?" in refused(schema, {"id": "c", "strategy": "adaptiv"})
    assert "at most 2 items" in refused(schema, {"id": "c", "matchers": ["a", "b", "c"]})
    assert "expected a string" in refused(schema, {"id": "c", "matchers": ["a", 1]})
    assert "at least one item" in refused(schema, {"id": "c", "matchers": []})
    assert schema.check("m", {"id": "c", "matchers": ["a=b"]}) == {"id": "c", "matchers": ["a=b"]}


def test_numbers_are_finite_and_bounded() -> None:
    schema = Schema(interval=number(0.2, 60.0, default=1.0))
    assert schema.check("m", {}) == {"interval": 1.0}
    assert schema.check("m", {"interval": 2}) == {"interval": 2.0}
    assert "finite" in refused(schema, {"interval": float("inf")})
    assert "between 0.2 and 60" in refused(schema, {"interval": 0.01})
    assert "between 0.2 and 60" in refused(schema, {"interval": 10**400})


@pytest.mark.parametrize(
    ("text", "seconds"), [(90, 90.0), ("45s", 45.0), ("15m", 900.0), ("1d12h", 129600.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 minutes", "-5", "9" * 400 + "d", 1e308, -1.0])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ControlError) as info:
        parse_duration(text)
    assert info.value.code == wire.INVALID_PARAMS


def test_every_control_method_declares_its_schema() -> None:
    # Handlers close over the daemon; building them touches nothing of it.
    handlers = build_handlers(cast("Daemon", None))
    missing = sorted(name for name, h in handlers.items() if h.params is None)
    assert not missing, f"control methods without a parameter schema: {missing}"
