"""Structural config mutations: wrong types, deleted tables, unicode keys, deep nesting.

Whatever the file holds, the loader answers with a clean ``Config`` or a ``ConfigError``
whose every problem names a key path (and a line where the text has one) — never another
exception. ``tests/test_config.py`` already fuzzes the text character by character; these
mutations work on the document tree, so they reach the validators behind the TOML parser.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import tomli
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsgate.config import Config, config_to_dict, load_config, parse_config
from wsgate.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "etc" / "wsgate.toml"
SAMPLE_DOC = tomli.loads(SAMPLE.read_text())

scalars = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.text(max_size=12)
    | st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 1, 1))
    | st.dates()
)
# Keys a person could type: letters and digits of any script. (Control characters need
# escapes, which the line locator does not map back to the text.)
keys = st.text(st.characters(categories=("L", "N", "Pd", "Zs")), min_size=1, max_size=6)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def mutated_docs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    doc = copy.deepcopy(SAMPLE_DOC)
    ops: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        op = draw(st.sampled_from(["retype", "delete", "rename_unicode", "add_unicode"]))
        if op == "retype":
            parent[path[-1]] = draw(values)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            key = draw(st.text(min_size=1, max_size=8) | keys)
            if key in parent:
                continue
            if op == "rename_unicode":
                parent[key] = parent.pop(path[-1])
            else:
                parent[key] = draw(values)
        ops.append(f"{op} {'.'.join(map(str, path))}")
    return doc, ops


def _check(text: str) -> Config | None:
    try:
        cfg = parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems
        n_lines = text.count("\n") + 1
        for p in exc.problems:
            assert p.path and p.message, p
            assert p.line is None or 1 <= p.line <= n_lines, (p, n_lines)
        assert str(exc)
        return None
    assert cfg.routes
    json.dumps(config_to_dict(cfg))
    return cfg


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_docs())
def test_structural_mutations_give_config_or_config_error(
    case: tuple[dict[str, Any], list[str]],
) -> None:
    doc, _ops = case
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return  # not representable as TOML (e.g. a list mixing tables and scalars at top level)
    _check(text)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted({".".join(map(str, p)) for p in _paths(SAMPLE_DOC)})), values)
def test_a_wrong_value_is_reported_with_its_line(path: str, value: Any) -> None:
    doc = copy.deepcopy(SAMPLE_DOC)
    steps = [int(s) if s.isdigit() else s for s in path.split(".")]
    _parent(doc, tuple(steps))[steps[-1]] = value
    text = tomli_w.dumps(doc)
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        # The key is in the text, so at least one problem can point at a line.
        assert any(p.line is not None for p in exc.problems), exc


@pytest.mark.parametrize(
    "body",
    [
        "x = " + "[" * 2000 + "]" * 2000,
        "x = " + "{a = " * 1000 + "1" + "}" * 1000,
        "[daemon]\nnode_id = " + "[" * 600 + "]" * 600,
    ],
)
def test_deeply_nested_values_are_a_config_error_with_a_line(body: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[gateway]\n" + body + "\n", "deep.toml")
    (problem,) = info.value.problems
    assert problem.line is not None and 1 <= problem.line <= 3
    assert "nested" in problem.message


def test_unicode_and_binary_garbage_files(tmp_path: Path) -> None:
    cases = {
        "bom.toml": "\ufeff[daemon]\n".encode(),
        "latin1.toml": "[daemon]\nnode_id = 'caf\xe9'\n".encode("latin-1"),
        "nul.toml": b"[daemon]\x00\n",
        "keys.toml": '[routes."\u00e9\u00e8"]\n"\u2603" = 1\n'.encode(),
        "surrogate.toml": b"x = '\xed\xa0\x80'\n",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.problems and info.value.filename == str(path), name
