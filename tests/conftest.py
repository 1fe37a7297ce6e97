"""Shared pytest policy.

* ``@pytest.mark.slow`` drills run only when asked for (``-m slow``, ``make chaos``).
* ``--fail-on-skip``: any skipped test or module (a missing client, ``importorskip``) fails
  the run. ``make compat`` (part of ``make test``) uses it, so a green CI means every
  third-party client really ran against wsgate.
* Hypothesis is derandomized: a run explores the same examples every time, so CI never
  turns red on a draw that the previous run did not make. ``HYPOTHESIS_PROFILE=explore``
  draws fresh examples (a local bug hunt; add what it finds as an ``@example``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# No per-example deadline: it is a timing assertion, and a loaded CI box turned a 2 ms
# example into 270 ms (test_budget_ledger): slowness is measured in bench/, not here.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("explore", derandomize=False, print_blob=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test` runs plain `pytest`; the long chaos drills belong to `make chaos`.
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow drill: run with `make chaos` (pytest -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        help="fail the run when any test or module was skipped (the compat suite uses it)",
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.getoption("--fail-on-skip"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if not skipped:
        return
    lines = [f"--fail-on-skip: {len(skipped)} skipped, and nothing may be:"]
    for rep in skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        lines.append(f"  {rep.nodeid}: {reason}")
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
