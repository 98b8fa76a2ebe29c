"""The floor plan's arrows (README "Where things are"): no import cycle inside raft/,
nothing under raft/ imports spec, benchmarks import nothing from tests, the node
does not know the client protocol. Imports are read from the source (ast for .py,
the import lines of .pyx and the .pxi parts they include), lazy ones included:
a function-level import is still a dependency; ``if TYPE_CHECKING:`` ones are not.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAFT = ROOT / "raft"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _raft_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(RAFT.rglob("*.py")) + sorted(RAFT.rglob("*.pyx"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(n.lineno for n in ast.walk(node) if hasattr(n, "lineno"))
    return lines


def _imports(path: Path, name: str) -> set[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for every import in the file."""
    text = path.read_text(encoding="utf-8")
    out: set[tuple[str, tuple[str, ...]]] = set()
    if path.suffix == ".pyx":
        for inc in re.findall(r'^include "([^"]+)"', text, re.M):
            text += (path.parent / inc).read_text(encoding="utf-8")
        for m in re.finditer(r"^\s*from\s+([\w.]+)\s+c?import\s+\(?([\w, ]+)", text, re.M):
            out.add((m.group(1), tuple(x.strip().split(" as ")[0] for x in m.group(2).split(","))))
        for m in re.finditer(r"^\s*c?import\s+([\w.]+)", text, re.M):
            out.add((m.group(1), ()))
        return out
    tree = ast.parse(text, str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update((a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add((base, tuple(a.name for a in node.names)))
    return out


def _graph() -> dict[str, set[str]]:
    """raft module -> the raft/spec modules it imports (``from pkg import submodule``
    counts as importing the submodule)."""
    mods = _raft_modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for base, names in _imports(path, name):
            if base.split(".")[0] not in ("raft", "spec"):
                continue
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in mods]
            edges.update(subs)
            if len(subs) < len(names) or not names:
                edges.add(base)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
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
                        found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_core_and_lazy_imports():
    graph = _graph()
    assert "raft._core" in graph and "raft.errors" in graph["raft._core"]   # a .pxi import
    assert "raft.trace_checker" in graph["raft.testing.sim.invariants"]                        # a lazy import
    assert "raft.kv.codec" in graph["raft.kv"]                               # from pkg import mod


def test_no_import_cycle_in_raft():
    assert _cycles(_graph()) == []


def test_nothing_under_raft_imports_spec():
    offenders = {m: sorted(e for e in edges if e.split(".")[0] == "spec")
                 for m, edges in _graph().items()}
    assert {m: e for m, e in offenders.items() if e} == {}


def test_node_does_not_import_a_client_protocol():
    graph = _graph()
    assert not {e for e in graph["raft.node"] if e.startswith("raft.resp")}


def test_benchmarks_import_nothing_from_tests():
    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests", "conftest"}
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for base, _names in _imports(script, script.stem):
            assert base.split(".")[0] not in test_modules, f"{script.name} imports {base}"


def test_one_message_name_table_for_every_message_type():
    import raft._core as core
    from raft.trace import MSG_NAMES
    from raft.trace_checker import MSG_NAME

    types = {getattr(core, n) for n in dir(core) if n.startswith("MSG_") and n != "MSG_NAMES"}
    assert set(MSG_NAMES) == types
    assert MSG_NAMES is core.MSG_NAMES and MSG_NAME is core.MSG_NAMES
