"""The store room's shape, read from the code's own imports: only ``open_store`` picks a backend, and
the room's modules import each other without a circle (imports inside functions counted too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "rag" / "store"
#: a backend's own modules: only the package's ``open_store`` (and the backends among themselves) import them
BACKEND_MODULES = {"rag.store.edge", "rag.store.qdrant", "rag.store.catalog"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at any depth of its code (``from rag.store import edge``
    counts as importing ``rag.store.edge``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if (ROOT / Path(*submodule.split("."))).with_suffix(".py").exists():
                    found.add(submodule)
    return found


def test_only_open_store_and_the_backends_import_a_backend_module() -> None:
    offenders = []
    for folder in ("rag", "flows", "evals", "connectors", "ragops"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = _module_name(path)
            if name == "rag.store" or name in BACKEND_MODULES:
                continue
            reached = sorted(_imports(path) & BACKEND_MODULES)
            if reached:
                offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(reached)}")
    assert not offenders, ("open a store with rag.store.open_store and use the names rag.store exports; "
                           "these modules reach into a backend:\n" + "\n".join(offenders))


def test_the_store_room_has_no_import_circle() -> None:
    graph = {_module_name(path): {m for m in _imports(path) if m == "rag.store" or m.startswith("rag.store.")}
             for path in sorted(STORE.glob("*.py"))}
    assert "rag.store.edge" in graph and "rag.store.migrate" in graph  # the room was read
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                circles.append(" -> ".join(path[path.index(imported):] + [imported]))
            elif imported in graph:
                visit(imported, path + [imported])

    for module in graph:
        visit(module, [module])
    assert not circles, "import circles in rag/store:\n" + "\n".join(sorted(set(circles)))
