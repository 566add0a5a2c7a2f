"""The config room stays at the bottom: light to import, importing no room above it, and the one home of
metric names."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from testkit.paths import ROOT

# A metric with a cut-off, as evaluations report it and renderers show it.
METRIC_WITH_CUTOFF = re.compile(r"^(ndcg|recall|precision|hit_rate|map|mrr)@\d+$")
# Where such a name may be written out: the room that owns the names (rag/config/metrics.py, and the gate's
# and drift's defaults in rag/config/settings.py), and the module that computes them.
OWNERS = ("rag/config/", "evals/metrics.py")


def test_only_the_config_room_and_the_metrics_code_write_metric_names() -> None:
    """Renderers (CLI text, artifacts, the approval form, log lines) pick metrics by rag.config's names."""
    found = []
    for top in ("rag", "flows", "evals", "ragops", "connectors"):
        for path in sorted((ROOT / top).rglob("*.py")):
            shown = str(path.relative_to(ROOT))
            if shown.startswith(OWNERS):
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=shown)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and METRIC_WITH_CUTOFF.match(node.value):
                    found.append(f"{shown}:{node.lineno} {node.value}")
    assert not found, "metric names written outside rag/config/metrics.py:\n" + "\n".join(found)


def test_import_loads_only_the_kernel_and_no_heavy_library() -> None:
    """``import rag.config`` brings in the kernel modules it needs, no other room, and no engine or model."""
    code = ("import sys, rag.config\n"
            "print(' '.join(sorted(m for m in sys.modules if m == 'rag' or m.startswith('rag.'))))\n"
            "heavy = ('torch', 'numpy', 'qdrant_client', 'qdrant_edge', 'unstructured', 'presidio_analyzer', 'spacy',"
            " 'prefect', 'sentence_transformers', 'onnxruntime')\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=True)
    rag_modules, heavy = shown.stdout.split("\n")[:2]
    outside = [m for m in rag_modules.split() if m not in ("rag", "rag.errors", "rag.secrets")
               and not m.startswith("rag.config")]
    assert outside == [], f"import rag.config loads {outside}"
    assert heavy == ""


def test_the_room_has_its_modules_and_each_imports_only_those_before_it() -> None:
    """base < metrics < sources < loading < settings < __init__: no circle inside the room, by construction."""
    order = ["base", "metrics", "sources", "loading", "settings"]
    for position, name in enumerate(order):
        tree = ast.parse((ROOT / "rag" / "config" / f"{name}.py").read_text())
        imported = {node.module.removeprefix("rag.config.") for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rag.config")}
        assert "rag.config" not in imported, f"{name}.py imports the package that imports it"
        assert imported <= set(order[:position]), f"{name}.py imports {sorted(imported - set(order[:position]))}"
