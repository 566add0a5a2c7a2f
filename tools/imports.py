"""Check the rooms' import rules from the code's own imports: ``python -m tools.imports [--json] [--root DIR]``.

Reads every ``import`` of rag/, flows/, evals/, connectors/ and ragops/ (with ``ast``, so imports inside
functions and under ``TYPE_CHECKING`` count too) and prints

- import circles: groups of two or more modules that import each other, directly or round a loop (a
  package's ``__init__`` is a module of its own; ``import rag.store.base`` is an edge to ``rag.store.base``,
  not to ``rag.store``);
- upward imports: a module importing a module of a higher room, or of another room on its own floor.

The rooms and their floors (docs/architecture.md, rag/__init__.py) are ``ROOMS`` below; imports inside a
room are free. Exit code 1 when it finds a circle, an upward import or a module in no room, else 0 with
"0 circles, 0 upward imports".
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

TOP_PACKAGES = ("rag", "flows", "evals", "connectors", "ragops")
KERNEL = ("rag", "rag.errors", "rag.models", "rag.secrets", "rag.failpoints", "rag.runtime", "rag.listing")

# room name -> (floor, module prefixes). A room may import rooms on lower floors only; rooms that share a
# floor (store, embed, ingest; connectors, evals) do not import each other.
ROOMS: dict[str, tuple[int, tuple[str, ...]]] = {
    "kernel": (0, KERNEL),
    "config": (1, ("rag.config",)),
    "store": (2, ("rag.store",)),
    "embed": (2, ("rag.embed",)),
    "ingest": (2, ("rag.ingest",)),
    "index": (3, ("rag.index",)),
    "serving": (4, ("rag.serving",)),
    "connectors": (5, ("connectors",)),
    "evals": (5, ("evals",)),
    "flows": (6, ("flows",)),
    "ragops": (7, ("ragops",)),
}
# Rooms whose imports are narrower than "any lower floor": connectors see only plain types and settings.
ONLY = {"connectors": {"kernel", "config"}}


@dataclass(frozen=True)
class Edge:
    """One import statement's target: ``importer`` imports ``imported`` at ``path:line``."""

    importer: str
    imported: str
    path: str
    line: int


def modules_under(root: Path) -> dict[str, Path]:
    """Every module of the checked packages, by dotted name (a package's ``__init__.py`` by the package's)."""
    found = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names, relative levels resolved against the importer."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path], root: Path) -> list[Edge]:
    """The project modules ``name`` imports, one edge per imported module and statement."""
    tree = ast.parse(path.read_text(), filename=str(path))
    shown = str(path.relative_to(root))
    edges = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve_from(node, name, path.name == "__init__.py")
            for alias in node.names:
                # `from rag.index import build` imports the module rag.index.build when there is one.
                submodule = f"{module}.{alias.name}"
                targets.append(submodule if submodule in modules else module)
        for target in dict.fromkeys(targets):
            # `import rag.store.base` when only rag.store is a module here: the nearest enclosing module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.append(Edge(name, target, shown, node.lineno))
    return edges


def room_of(module: str) -> str | None:
    """The room a module belongs to (the longest matching prefix), or None when it is in none."""
    best, length = None, -1
    for room, (_, prefixes) in ROOMS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = room, len(prefix)
    if best == "kernel" and module not in KERNEL:
        return None  # a new module directly under rag/ is not kernel until the map says so
    return best


def circles(modules: list[str], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    graph: dict[str, list[str]] = {module: [] for module in modules}
    for edge in edges:
        graph[edge.importer].append(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in modules:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def upward(edges: list[Edge]) -> list[Edge]:
    """Imports from a room to a higher room, a sibling room on the same floor, or one its rule excludes."""
    wrong = []
    for edge in edges:
        source, target = room_of(edge.importer), room_of(edge.imported)
        if source is None or target is None or source == target:
            continue
        allowed = ONLY.get(source)
        if allowed is not None:
            if target not in allowed:
                wrong.append(edge)
        elif ROOMS[target][0] >= ROOMS[source][0]:
            wrong.append(edge)
    return wrong


def check(root: Path) -> dict:
    """The circles, upward imports and roomless modules of the tree at ``root``."""
    modules = modules_under(root)
    edges = [edge for name, path in modules.items() for edge in imports_of(name, path, modules, root)]
    return {
        "circles": [
            {"modules": component,
             "imports": [asdict(e) for e in edges if e.importer in component and e.imported in component]}
            for component in circles(sorted(modules), edges)
        ],
        "upward": [asdict(edge) | {"from_room": room_of(edge.importer), "to_room": room_of(edge.imported)}
                   for edge in upward(edges)],
        "roomless": sorted(name for name in modules if room_of(name) is None),
    }


def _floor(room: str) -> str:
    return f"{room}, floor {ROOMS[room][0]}"


def render(found: dict) -> str:
    """The report as text: one line per finding, then the counts."""
    lines = []
    for circle in found["circles"]:
        lines.append(f"circle of {len(circle['modules'])} modules: {', '.join(circle['modules'])}")
        lines += [f"  {e['path']}:{e['line']}: {e['importer']} imports {e['imported']}" for e in circle["imports"]]
    for e in found["upward"]:
        lines.append(f"{e['path']}:{e['line']}: {e['importer']} ({_floor(e['from_room'])}) imports "
                     f"{e['imported']} ({_floor(e['to_room'])})")
    for name in found["roomless"]:
        lines.append(f"{name}: in no room; add it to tools/imports.py ROOMS and to docs/architecture.md")
    summary = f"{len(found['circles'])} circles, {len(found['upward'])} upward imports"
    if found["roomless"]:
        summary += f", {len(found['roomless'])} modules in no room"
    return "\n".join(lines + [summary])


def main(argv: list[str] | None = None) -> int:
    """Print the findings (text or ``--json``); exit 1 when there are any."""
    parser = argparse.ArgumentParser(prog="python -m tools.imports", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the repository to check (default: the one holding this script)")
    args = parser.parse_args(argv)
    found = check(args.root.resolve())
    print(json.dumps(found, indent=2) if args.json else render(found))
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
