"""Structure of the package: imports point one way, and modules stay small.

Every import counts — module level, inside functions, and under ``TYPE_CHECKING`` — because
a cycle that only the type checker sees is still two modules that cannot be understood,
tested or moved one without the other. Imports are read with :mod:`ast`, nothing is
imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wsgate

ROOT = Path(wsgate.__file__).parent


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    # A stub without a .py is a compiled module (wsgate/_relayfast.c): a module of its own.
    stubs = [p for p in ROOT.rglob("*.pyi") if not p.with_suffix(".py").exists()]
    for path in [*ROOT.rglob("*.py"), *stubs]:
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The wsgate module an imported name lives in (``a.b.C`` -> ``a.b``), if any."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                dep = _resolve(t, mods)
                if dep is not None and dep != mod:
                    graph[mod].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, sorted(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_counting_type_checking_imports() -> None:
    graph = import_graph()
    assert "wsgate.control.view" in graph["wsgate.control.api"]  # the graph is real
    found = cycles(graph)
    detail = "\n".join(
        " <-> ".join(c) + "\n    " + "; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)
        for c in found
    )
    assert not found, f"import cycles:\n{detail}"


def test_core_and_dialects_import_no_runtime() -> None:
    """core/ and dialects/ decide; runtime/ acts: the deciders never import the actors."""
    graph = import_graph()
    bad = {
        m: sorted(d for d in deps if d.startswith(("wsgate.runtime", "wsgate.control")))
        for m, deps in graph.items()
        if m.startswith(("wsgate.core", "wsgate.dialects"))
    }
    assert not {m: d for m, d in bad.items() if d}


def test_no_module_over_700_lines() -> None:
    """Small modules with one job each: a module past 700 lines is split, not grown."""
    sizes = {
        str(p.relative_to(ROOT.parent)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")
    }
    assert not {m: n for m, n in sizes.items() if n > 700}
