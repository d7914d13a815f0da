"""The package's architecture, checked from its imports: packages stack in one order and no module imports its way
back to itself. Every import counts, those inside functions too (they are cycles all the same, only deferred)."""

from __future__ import annotations

import ast
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "zoo"
#: lowest first: a package may import from its own layer and those below it
LAYERS = ("core", "data", "metrics", "models", "deploy", "inference", "training", "bench", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ZOO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each zoo module -> the zoo modules it imports (a `from package import name` names the module if one exists)."""
    modules = {module_name(p): p for p in ZOO.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("zoo")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_module_imports_its_way_back_to_itself():
    graph = imports()
    cycles = []

    def visit(node, stack, done):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, stack + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_packages_import_only_their_own_layer_and_those_below():
    wrong = [f"{a} imports {b}" for a, targets in imports().items() for b in targets
             if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


def test_the_package_root_holds_its_face_and_subpackages():
    modules = sorted(p.name for p in ZOO.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py"] or len(modules) <= 3, modules
    assert {p.name for p in ZOO.iterdir() if p.is_dir() and (p / "__init__.py").exists()} >= set(LAYERS)
