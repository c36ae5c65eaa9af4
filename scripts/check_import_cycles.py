"""Fail when hifitrt's modules import each other in a cycle, or a layer imports upwards.

Reads every module of the package (not tests/ or scripts/) with ``ast`` and follows the imports
that run at import time: module level, including ``try``/``if`` blocks, but not imports inside
functions (lazy, for optional dependencies) or under ``if TYPE_CHECKING:``. Importing a package
runs its ``__init__``, so ``from hifitrt.engines.build import x`` also depends on
``hifitrt.engines``. Prints each cycle (strongly connected component) and each import against
the layering (serving -> runtime -> engines -> export -> root; validation above engines and
runtime; cli above everything), then exits 1 if there was any.

    python scripts/check_import_cycles.py
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hifitrt"
SKIP = {"tests", "scripts", "docs", ".venv", ".git", "build", "dist"}
# Which top-level packages each layer may import (the root modules are below everything).
ALLOWED = {
    "export": {"export"},
    "engines": {"engines", "export"},
    "runtime": {"runtime", "engines", "export"},
    "validation": {"validation", "runtime", "engines", "export"},
    "serving": {"serving", "runtime", "engines", "export", "validation"},
    "cli": {"cli", "serving", "validation", "runtime", "engines", "export"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or any(p.startswith(".") for p in rel.parts):
            continue
        if len(rel.parts) > 1 and not (ROOT / rel.parts[0] / "__init__.py").is_file():
            continue
        found[module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if isinstance(node, ast.ClassDef):
                yield from _import_time_nodes(node.body)
            continue
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
            continue
        if isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _import_time_nodes(block)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    targets: set[str] = set()
    for node in _import_time_nodes(tree.body):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            candidates = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        for cand in candidates:
            if not (cand == PACKAGE or cand.startswith(PACKAGE + ".")):
                continue
            parts = cand.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name:
                    targets.add(prefix)
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def main() -> int:
    modules = package_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    problems = 0
    for component in cycles(graph):
        problems += 1
        print("import cycle: " + " <-> ".join(component))
    for name, targets in sorted(graph.items()):
        mine = layer(name)
        if mine not in ALLOWED:
            continue
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is not None and theirs not in ALLOWED[mine]:
                problems += 1
                print(f"layering: {name} imports {target} ({mine} may import {', '.join(sorted(ALLOWED[mine]))})")
    edges = sum(len(t) for t in graph.values())
    print(f"{len(modules)} modules, {edges} import-time edges inside {PACKAGE}: "
          + ("no cycles, layering respected" if not problems else f"{problems} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
