"""Helpers shared by tests: snapshots of what a store serves, for exact comparisons; a free port."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

from rag.config import StoreSettings
from rag.store import IndexStore


def snapshot(store_path: Path, alias: str) -> dict[str, tuple[dict, np.ndarray]]:
    """Every point of the live build: id -> (payload, vector)."""
    with IndexStore.open(StoreSettings(location=str(store_path))) as store:
        live = store.alias_target(alias)
        assert live is not None, f"alias {alias} has no live build"
    return points_of(store_path, live)


def points_of(store_path: Path, collection: str) -> dict[str, tuple[dict, np.ndarray]]:
    """Every point of one collection: id -> (payload, vector)."""
    with IndexStore.open(StoreSettings(location=str(store_path))) as store:
        return {p.id: (p.payload, p.vector) for p in store.scan_rows(collection, vectors=True)}


def assert_same_index(actual: dict, expected: dict) -> None:
    """Same point ids, same payloads, same vectors (to float noise from batch composition)."""
    assert sorted(actual) == sorted(expected)
    for point_id, (payload, vector) in expected.items():
        assert actual[point_id][0] == payload, point_id
        np.testing.assert_allclose(actual[point_id][1], vector, atol=2e-5)


def doc_ids(points: dict) -> set[str]:
    """Documents present in a snapshot."""
    return {payload["doc_id"] for payload, _ in points.values()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
