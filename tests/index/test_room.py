"""The index and ingest rooms' packages: their public names resolve, and importing them stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import rag.index
import rag.ingest
from testkit.paths import ROOT

HEAVY = ("torch", "unstructured", "qdrant_client", "qdrant_edge", "presidio_analyzer", "spacy", "transformers",
         "onnxruntime", "docutils", "pypdf", "prefect")


@pytest.mark.parametrize("room", [rag.index, rag.ingest])
def test_every_public_name_resolves_to_its_module_s_object(room) -> None:
    for name in room.__all__:
        value = getattr(room, name)
        assert value.__module__.startswith(room.__name__ + "."), (name, value.__module__)


def test_importing_the_rooms_loads_no_heavy_library() -> None:
    """`import rag.index` and `import rag.ingest` in a fresh interpreter: none of the parsers, models,
    engines or Prefect; and a module of the index room does not drag the ingest room in through the package."""
    script = (
        "import json, sys\n"
        "import rag.index.versions\n"
        "versions_only = sorted(m for m in sys.modules if m.startswith('rag.ingest'))\n"
        "import rag.index, rag.ingest\n"
        "print(json.dumps({'versions_only': versions_only, 'modules': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded["versions_only"] == []
    assert not [m for m in loaded["modules"] if m.split(".")[0] in HEAVY]
