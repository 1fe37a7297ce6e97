"""The production install: a wheel builds, every dependency is bounded and pinned, SPDX license."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    m = re.match(r"[A-Za-z0-9_.\-]+", requirement)
    assert m
    return re.sub(r"[-_.]+", "-", m.group(0)).lower()


def test_license_is_an_spdx_string() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in PYPROJECT["build-system"]["requires"])


def test_every_runtime_dependency_has_an_upper_bound_and_a_pin() -> None:
    project = PYPROJECT["project"]
    runtime = [*project["dependencies"], *project["optional-dependencies"]["fast"]]
    unbounded = [r for r in runtime if "<" not in r and "==" not in r and "~=" not in r]
    assert unbounded == []
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    missing = {_name(r) for r in project["dependencies"]} - set(pins)
    assert missing == set(), f"constraints.txt lacks {sorted(missing)}"


@pytest.mark.timeout(300)
def test_python_m_build_produces_a_wheel(tmp_path: Path) -> None:
    # From a copy: setuptools reuses build/lib, where a deleted module would linger.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deprecated" not in (proc.stdout + proc.stderr).lower()
    wheels = list(out.glob("wsgate-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        assert "wsgate/cli/fast.py" in names
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(meta).decode()
        entry = whl.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "License-Expression: MIT" in metadata
    assert "wsgate = wsgate.cli.fast:main" in entry
    assert any(n.startswith("wsgate/runtime/") for n in names)
    # The relay's C step is compiled into the wheel (the machine building it has a compiler).
    assert any(n.startswith("wsgate/_relayfast.") and n.endswith(".so") for n in names)


def test_make_run_installs_the_runtime_dependencies_and_uvloop_only() -> None:
    # The fast extra (uvloop) is what the daemon runs on when installed (docs/BENCHMARKS.md,
    # "Relay"); the test tools stay out of `make run`.
    make = (ROOT / "Makefile").read_text()
    run = re.search(r"^run: (.*)$", make, re.M)
    assert run and run.group(1).split() == ["$(RUNTIME)"]
    recipe = re.search(r"^\$\(RUNTIME\):.*\n((?:\t.*\n)+)", make, re.M)
    assert recipe and "pip install --quiet -e '.[fast]'\n" in recipe.group(1)
    assert "test" not in recipe.group(1)
