"""A lease's renewal (rag/store/locks.py) costs one opening of the store, on both backends.

The stores are real; a subclass of each backend counts its openings and its lease writes, per thread, so
that the renewer thread's work is told apart from the test's own reads.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import Counter

import pytest

from rag.config import StoreSettings
from rag.store.locks import AliasLock

BACKENDS = {"edge": ("rag.store.edge", "EdgeStore"), "qdrant": ("rag.store.qdrant", "QdrantStore")}


@pytest.mark.parametrize("engine", sorted(BACKENDS))
def test_each_renewal_of_a_lease_opens_the_store_once(tmp_path, monkeypatch, engine) -> None:
    module_name, class_name = BACKENDS[engine]
    module = importlib.import_module(module_name)
    backend = getattr(module, class_name)
    opened: Counter[str] = Counter()
    renewed: Counter[str] = Counter()

    class Counting(backend):  # the real store; open_store builds it in place of the plain one
        def __init__(self, *args, **kwargs) -> None:
            opened[threading.current_thread().name] += 1
            super().__init__(*args, **kwargs)

        def write_lock(self, alias: str, holder: dict) -> None:
            renewed[threading.current_thread().name] += 1
            super().write_lock(alias, holder)

    monkeypatch.setattr(module, class_name, Counting)
    lock = AliasLock(StoreSettings(location=str(tmp_path / "store"), engine=engine), "kb", kind="lease",
                     ttl=0.3, settle=0, poll=0.05)
    renewer = "ragops-lock-kb"
    with lock.held(run="renewal-under-test") as holder:
        deadline = time.monotonic() + 60  # a generous bound for a busy machine: 3 renewals take ~0.3 s
        while renewed[renewer] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.current().token == holder.token
    assert renewed[renewer] >= 3, "the lease was not renewed"
    assert opened[renewer] == renewed[renewer], f"{opened[renewer]} openings for {renewed[renewer]} renewals"
