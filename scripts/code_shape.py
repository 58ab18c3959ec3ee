"""Measure the code's shape: largest modules and functions, the import graph and its cycles.

Run `python scripts/code_shape.py [--json]` from the repository root. Every import counts,
also those inside functions (a lazy import is still a dependency). Used for the redesign's
before/after figures and by tests/unit/test_code_shape.py, which keeps the graph acyclic.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "exporters")

# The layers, lowest first: a module may import its own layer and the ones below, never above.
# A name matches a module and everything inside it; the longest match wins.
LAYERS: dict[str, int] = {
    # 0 base: the records every room speaks
    "agents": 0,
    "agents.errors": 0,
    "agents.units": 0,
    "agents.results": 0,
    "agents.records": 0,
    "agents.logs": 0,
    "agents.paths": 0,
    # 1 configuration
    "agents.config": 1,
    # 2 rooms: each does one kind of work
    "agents.backup": 2,
    "agents.monitor": 2,
    "agents.cases": 2,
    "agents.restore_test": 2,
    "agents.state": 2,
    "agents.audit": 2,
    "agents.timers": 2,
    "agents.freshness": 2,
    "agents.ssh": 2,
    "exporters": 2,
    # 3 what joins the rooms: the results pipeline, job definitions, the status document
    "agents.pipeline": 3,
    "agents.jobs": 3,
    "agents.status": 3,
    "agents.reports": 3,
    # 4 drivers: the daemon, the fleet, the demo
    "agents.daemon": 4,
    "agents.fleet": 4,
    "agents.demo": 4,
    # 5 the command line and what is generated from it
    "agents.cli": 5,
    "agents.__main__": 5,
    "agents.docs": 5,
}


def module_name(path: Path) -> str:
    """`agents/backup/pack.py` -> `agents.backup.pack`; a package's `__init__` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies in (`a.b.C` -> `a.b`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other project modules, lazy and TYPE_CHECKING ones included."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for imported in names:
                target = _resolve(imported, known)
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int | None:
    """The layer of a module: its longest prefix in LAYERS (None: not placed)."""
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer into a higher one, and modules no layer places."""
    found: list[str] = []
    for module, targets in sorted(graph.items()):
        own = layer(module)
        if own is None:
            found.append(f"{module}: in no layer")
            continue
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is not None and theirs > own:
                found.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    return found


def functions(known: dict[str, Path]) -> list[tuple[int, str]]:
    """(lines, module:qualified name) of every function and method."""
    sizes: list[tuple[int, str]] = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))

        def walk(node: ast.AST, prefix: str, name: str = name) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    qual = f"{prefix}{child.name}"
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    sizes.append((lines, f"{name}:{qual}"))
                    walk(child, qual + ".")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")

        walk(tree, "")
    return sorted(sizes, reverse=True)


def measure() -> dict[str, object]:
    known = modules()
    graph = imports(known)
    lines = sorted(((len(p.read_text().splitlines()), n) for n, p in known.items()), reverse=True)
    return {
        "modules": len(known),
        "lines": sum(n for n, _ in lines),
        "largest_modules": [{"module": m, "lines": n} for n, m in lines[:12]],
        "largest_functions": [{"function": f, "lines": n} for n, f in functions(known)[:12]],
        "import_edges": sum(len(v) for v in graph.values()),
        "cycles": cycles(graph),
        "upward_imports": upward(graph),
        "graph": {k: sorted(v) for k, v in sorted(graph.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="Print everything as JSON.")
    args = parser.parse_args()
    shape = measure()
    if args.json:
        print(json.dumps(shape, indent=2))
        return 0
    print(f"{shape['modules']} modules, {shape['lines']} lines, {shape['import_edges']} imports")
    print("largest modules:")
    for row in shape["largest_modules"]:  # type: ignore[attr-defined]
        print(f"  {row['lines']:5d}  {row['module']}")
    print("largest functions:")
    for row in shape["largest_functions"]:  # type: ignore[attr-defined]
        print(f"  {row['lines']:5d}  {row['function']}")
    found = shape["cycles"]
    print(f"import cycles: {len(found)}")  # type: ignore[arg-type]
    for component in found:  # type: ignore[attr-defined]
        print("  " + " <-> ".join(component))
    up = shape["upward_imports"]
    print(f"upward imports: {len(up)}")  # type: ignore[arg-type]
    for line in up:  # type: ignore[attr-defined]
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
