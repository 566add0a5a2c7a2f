"""The layout keeps its rules: no import circles, no upward imports, and a map that names every module."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from testkit.paths import ROOT

MAPPED_PACKAGES = ("rag", "flows", "evals", "connectors", "ragops")


def run_checker(root: Path) -> subprocess.CompletedProcess:
    """``python -m tools.imports`` as a developer runs it, from the repository root, on the tree at ``root``."""
    return subprocess.run([sys.executable, "-m", "tools.imports", "--json", "--root", str(root)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_no_import_circles_and_no_upward_imports() -> None:
    shown = subprocess.run([sys.executable, "-m", "tools.imports"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, check=False)
    assert (shown.returncode, shown.stdout) == (0, "0 circles, 0 upward imports\n"), shown.stdout + shown.stderr


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_circles_upward_imports_and_roomless_modules(tmp_path: Path) -> None:
    """On a small tree with one of each: what it finds, and its exit code; a clean tree passes."""
    clean = {
        "rag/__init__.py": "",
        "rag/errors.py": "import os\n",
        "rag/config/__init__.py": "from rag.errors import ConfigError\n",
        "rag/store/__init__.py": "from rag.store.base import IndexStore\n",
        "rag/store/base.py": "from rag import errors\nfrom rag.config import StoreSettings\n",
        "rag/embed/__init__.py": "",
        "rag/ingest/__init__.py": "",
        "rag/ingest/redaction.py": "",
        "rag/index/__init__.py": "",
        "rag/index/plan.py": "import rag.store.base\n",
        "rag/serving/__init__.py": "",
        "connectors/__init__.py": "from rag.config import FolderSource\nfrom rag.errors import SourceError\n",
        "evals/__init__.py": "",
        "evals/gate.py": "from rag.serving import Retriever\n",
        "flows/__init__.py": "",
        "flows/reindex.py": "from evals.gate import gate\nfrom connectors import list_source\n",
        "ragops/__init__.py": "",
        "ragops/cli.py": "def main():\n    from flows.reindex import reindex\n",
    }
    _write(tmp_path, clean)
    shown = run_checker(tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert json.loads(shown.stdout) == {"circles": [], "upward": [], "roomless": []}

    _write(tmp_path, {
        # the package and its module import each other: a circle of two nodes
        "rag/store/__init__.py": "from rag.store.base import IndexStore\n",
        "rag/store/base.py": "def open():\n    from rag.store import IndexStore\n",
        # relative imports inside one room, round a loop of three
        "rag/index/a.py": "from . import b\n",
        "rag/index/b.py": "from .c import thing\n",
        "rag/index/c.py": "from rag.index.a import x\n",
        # config above its floor (the submodule named by `from ... import`), inside a function
        "rag/config/__init__.py": "def f():\n    from rag.ingest import redaction\n",
        # a sibling on the same floor, only under TYPE_CHECKING
        "rag/embed/embedder.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rag.store.base\n",
        # connectors may use the kernel and config only, not the index below them
        "connectors/__init__.py": "from rag.index.plan import Listing\n",
        "evals/drift.py": "import flows.reindex\n",
        "rag/newthing.py": "",
    })
    shown = run_checker(tmp_path)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    found = json.loads(shown.stdout)
    assert [c["modules"] for c in found["circles"]] == [
        ["rag.index.a", "rag.index.b", "rag.index.c"], ["rag.store", "rag.store.base"]]
    assert {(e["importer"], e["imported"], e["line"]) for e in found["circles"][1]["imports"]} == {
        ("rag.store", "rag.store.base", 1), ("rag.store.base", "rag.store", 2)}
    assert sorted((e["importer"], e["imported"], e["path"], e["line"]) for e in found["upward"]) == [
        ("connectors", "rag.index.plan", "connectors/__init__.py", 1),
        ("evals.drift", "flows.reindex", "evals/drift.py", 1),
        ("rag.config", "rag.ingest.redaction", "rag/config/__init__.py", 2),
        ("rag.embed.embedder", "rag.store.base", "rag/embed/embedder.py", 3),
    ]
    assert found["roomless"] == ["rag.newthing"]


MAP_ROW = re.compile(r"^\|\s*`([^`]+\.py)`\s*\|")
MAP_ROOM = re.compile(r"^###\s.*?`([a-z_/]+/)`")


def mapped_modules(text: str) -> list[str]:
    """The files the map's tables name: each ``### `folder/` ...`` heading, then rows ``| `file.py` | ... |``."""
    assert "\n## The map\n" in text, "docs/architecture.md has no section '## The map'"
    section = text.split("\n## The map\n", 1)[1].split("\n## ", 1)[0]
    folder, names = None, []
    for line in section.splitlines():
        if room := MAP_ROOM.match(line):
            folder = room.group(1)
        elif (row := MAP_ROW.match(line)) and folder:
            names.append(folder + row.group(1))
    return names


def test_the_map_names_every_module_and_only_modules() -> None:
    """docs/architecture.md has a row for every module (an empty ``__init__.py`` aside), and no row for a
    file that is not there."""
    mapped = mapped_modules((ROOT / "docs" / "architecture.md").read_text())
    assert len(mapped) == len(set(mapped)), f"named twice: {sorted({m for m in mapped if mapped.count(m) > 1})}"
    files = {path: str(path.relative_to(ROOT)) for top in MAPPED_PACKAGES for path in (ROOT / top).rglob("*.py")}
    present = {name for path, name in files.items() if path.name != "__init__.py" or path.read_text().strip()}
    missing = sorted(present - set(mapped))
    assert not missing, f"docs/architecture.md's map lacks {missing}"
    unknown = sorted(set(mapped) - set(files.values()))
    assert not unknown, f"docs/architecture.md's map names modules that do not exist: {unknown}"

def test_the_map_reader_sees_rooms_and_rows() -> None:
    """The map's reader itself: rows belong to the room heading above them, other tables are ignored."""
    text = ("# A\n\n| `x.py` | not in the map |\n\n## The map\n\n### Kernel, `rag/` (floor 0)\n\n"
            "| module | what |\n|---|---|\n| `errors.py` | errors |\n\n### `ragops/`\n\n| `cli/index.py` | c |\n\n"
            "## Next\n\n| `y.py` | after the map |\n")
    assert mapped_modules(text) == ["rag/errors.py", "ragops/cli/index.py"]
