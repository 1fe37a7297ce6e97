"""Every compat test runs against the simulator writing compact JSON (as the exchanges do)
and pretty-printed JSON (as other exchange-compatible servers may): a bot must get the same
data through wsgate either way. A module may widen the set with ``JSON_STYLES``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat import rig

DEFAULT_STYLES = ("compact", "pretty")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "json_style" in metafunc.fixturenames:
        styles = getattr(metafunc.module, "JSON_STYLES", DEFAULT_STYLES)
        metafunc.parametrize("json_style", styles, indirect=True)


@pytest.fixture(autouse=True)
def json_style(request: pytest.FixtureRequest) -> Iterator[str]:
    """The simulator's ``json_style`` for every ``rig.stack()`` in this test."""
    style: str = getattr(request, "param", "compact")
    rig.JSON_STYLE = style
    try:
        yield style
    finally:
        rig.JSON_STYLE = "compact"
