"""Where things are: the repository's root, its demo corpus, ../shared beside it, the socket guard."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "demo" / "corpus"
#: ../shared (datasets, the docs corpus, notes); tests that need it are marked ``requires_shared``
SHARED = ROOT.parent / "shared"
#: put this folder on a child's ``PYTHONPATH`` and Python imports its sitecustomize.py at start-up
SOCKET_GUARD = Path(__file__).resolve().parent / "socket_guard"
