"""Code-quality gates, run with the tests: ruff, mypy, the import-linter layer contract (all
configured in pyproject.toml) and size limits on harness/. A gate is skipped only where its
tool is not installed; CI installs them all with ``.[test]``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent      # the venv's bin/, next to the interpreter running the tests

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 60


def _run_tool(name: str, *args: str) -> None:
    tool = BIN / name
    if not tool.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    res = subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 0, f"`{name} {' '.join(args)}` exited {res.returncode}:\n{res.stdout}\n{res.stderr}"


def test_ruff():
    _run_tool("ruff", "check", "--no-fix", "harness", "tests")


def test_mypy():
    _run_tool("mypy")                   # packages and flags: [tool.mypy] in pyproject.toml


def test_import_layers():
    _run_tool("lint-imports", "--no-cache")


def _sizes(src: str, name: str) -> list[str]:
    """The size limits the module ``src`` breaks, one line each. A class or function counts from
    its ``class``/``def`` line to its last line."""
    found = []
    lines = len(src.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: module of {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(src, name)):
        if isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS_LINES
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, limit = "function", MAX_FUNCTION_LINES
        else:
            continue
        n = (node.end_lineno or node.lineno) - node.lineno + 1
        if n > limit:
            found.append(f"{name}:{node.lineno}: {kind} {node.name} of {n} lines (limit {limit})")
    return found


def test_size_limits():
    files = sorted((ROOT / "harness").rglob("*.py"))
    assert len(files) > 10
    found = [msg for f in files for msg in _sizes(f.read_text(), str(f.relative_to(ROOT)))]
    assert not found, "split these into smaller pieces:\n" + "\n".join(found)


def test_size_limits_are_measured():
    """The check itself: methods count inside their class, a decorated def from its ``def`` line."""
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    src = f"class C:\n    @staticmethod\n    def fits():\n{body}\n    def too_long():\n{body}        pass\n"
    assert _sizes(src, "m.py") == [f"m.py:{MAX_FUNCTION_LINES + 4}: function too_long of {MAX_FUNCTION_LINES + 1} "
                                   f"lines (limit {MAX_FUNCTION_LINES})"]
    assert _sizes("x = 1\n" * (MAX_MODULE_LINES + 1), "big.py") == [
        f"big.py: module of {MAX_MODULE_LINES + 1} lines (limit {MAX_MODULE_LINES})"]


def find_cycles(package: str) -> list[list[str]]:
    """Import cycles among the modules of ``package`` (TYPE_CHECKING imports included)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph(package)
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        path.append(mod)
        for dep in adj[mod]:
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep in adj and not state.get(dep):
                visit(dep, path)
        path.pop()
        state[mod] = 2

    for mod in sorted(adj):
        if not state.get(mod):
            visit(mod, [])
    return cycles


def test_no_import_cycle():
    assert find_cycles("harness") == []
