"""Shared pytest policy: ``@pytest.mark.slow`` drills run only when asked for (``-m slow``)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test` runs plain `pytest`; the long chaos drills belong to `make chaos`.
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow drill: run with `make chaos` (pytest -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
