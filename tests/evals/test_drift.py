"""Drift statistics and checks on their own: the MMD test, the query log, the model checks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from evals.drift import (
    check_compatibility,
    check_model,
    check_queries,
    mmd_permutation_test,
)
from evals.models import DriftCheck
from rag.config import StoreSettings
from rag.models import ModelFingerprint, utc_now
from rag.serving.querylog import QueryLog
from rag.store import open_store

FINGERPRINT = ModelFingerprint(name="m", path="/x", weights_sha256="a" * 64, dimension=8, normalize=True,
                               dtype="float32", max_seq_length=16)


def _queries(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = np.zeros(8)
    centre[0] = shift
    vectors = rng.normal(centre, 1.0, size=(n, 8))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_mmd_finds_no_drift_between_samples_of_one_distribution() -> None:
    p_values = [mmd_permutation_test(_queries(seed, 60), _queries(seed + 100, 60), 200)[1] for seed in range(3)]
    assert all(p >= 0.01 for p in p_values), p_values
    # Deterministic: the same data, the same verdict.
    assert mmd_permutation_test(_queries(1, 60), _queries(2, 60), 200) == mmd_permutation_test(
        _queries(1, 60), _queries(2, 60), 200)


def test_mmd_detects_a_shift_in_what_users_ask() -> None:
    mmd2, p_value = mmd_permutation_test(_queries(1, 60), _queries(2, 60, shift=1.5), 200)
    assert p_value < 0.01 and mmd2 > 0
    check = check_queries(_queries(1, 60), _queries(2, 60, shift=1.5), 200, 0.01, 30)
    assert check.status == "drift" and check.value == pytest.approx(p_value)
    assert "centroid cosine distance" in check.message


def test_the_query_check_waits_for_enough_queries() -> None:
    check = check_queries(_queries(1, 10), _queries(2, 60), 200, 0.01, 30)
    assert check.status == "skipped"
    assert check.message.startswith("60 recent and 10 reference queries logged; the check needs 30 in each")


def test_model_check_names_what_differs() -> None:
    assert check_model(FINGERPRINT, FINGERPRINT.model_copy(update={"path": "/elsewhere"})).status == "ok"
    other = FINGERPRINT.model_copy(update={"weights_sha256": "b" * 64, "name": "new"})
    check = check_model(other, FINGERPRINT)
    assert check.status == "drift"
    assert "weights bbbbbbbbbbbb != aaaaaaaaaaaa" in check.message and "rebuild" in check.message


def test_model_check_names_a_quantization_change_and_defers_to_the_compatibility_figure() -> None:
    """The live build is int8, the configured model float32: the message said "...'s m: ;" (nothing after the
    colon) and "miss the live documents" one line above a compatibility of 0.993."""
    live = FINGERPRINT.model_copy(update={"backend": "onnx", "quantization": "int8"})
    close = DriftCheck(name="compatibility", status="ok", value=0.993, threshold=0.9, message="…")
    check = check_model(FINGERPRINT, live, close)
    assert check.status == "drift"
    assert check.message.startswith(f"configured model m (float32, {'a' * 12}) is not the live build's "
                                    f"m (int8, {'a' * 12}): quantization none != int8; ")
    assert "mean cosine 0.9930" in check.message and "miss the live documents" not in check.message
    far = close.model_copy(update={"status": "drift", "value": 0.45})
    assert "miss the live documents" in check_model(FINGERPRINT, live, far).message
    bf16 = FINGERPRINT.model_copy(update={"dtype": "bfloat16"})
    assert ": dtype bfloat16 != float32; " in check_model(bf16, FINGERPRINT).message


def test_query_log_keeps_windows_and_prunes_old_entries(store_path: Path) -> None:
    now = utc_now()
    with open_store(StoreSettings(location=str(store_path))) as store:
        log = QueryLog(store, "kb", FINGERPRINT)
        assert log.read().shape == (0, 8)
        log.record(_queries(1, 5), at=now - timedelta(days=40))
        log.record(_queries(2, 3), at=now - timedelta(days=3))
        log.record(_queries(3, 4), at=now - timedelta(hours=1), max_age=timedelta(days=30))
        assert len(log.read()) == 7  # the 40-day-old entries were pruned
        assert len(log.read(now - timedelta(days=1), now)) == 4
        assert len(log.read(now - timedelta(days=8), now - timedelta(days=1))) == 3
        assert len(log.read(limit=2)) == 2


@pytest.mark.slow
def test_compatibility_preflight_tells_a_different_vector_space(store_path: Path, embedder, cls_embedder) -> None:
    from rag.models import Chunk

    texts = ["Descale the espresso machine every two months.", "Replace the chain at 0.5% elongation.",
             "An alias points at one collection.", "Tides follow the moon."]
    chunks = [Chunk(doc_id=f"kb/{i}", chunk_index=0, text=t, source_uri="file:///x", source="kb")
              for i, t in enumerate(texts)]
    with open_store(StoreSettings(location=str(store_path))) as store:
        from rag.models import Manifest

        manifest = Manifest(alias="kb", version="v1", collection="kb__v1", created_at=utc_now(),
                            model=embedder.fingerprint, chunking={}, sources=[])
        store.create_build(manifest)
        store.upsert_chunks("kb__v1", chunks, embedder.embed(texts))
        same = check_compatibility(store, "kb__v1", embedder, 3, 0.9)
        other = check_compatibility(store, "kb__v1", cls_embedder, 3, 0.9)
    assert same.status == "ok" and same.value > 0.999
    assert other.status == "drift" and other.value < 0.9
    assert "a different vector space" in other.message


def test_the_golden_baseline_follows_a_promotion_whose_run_died_before_confirming_it(store_path: Path) -> None:
    """Killed between the alias move and its confirmation, the live build's last event is still pending:
    the drift baseline must still come from the build it replaced."""
    from datetime import datetime, timezone

    from evals.drift import find_baseline
    from rag.config import StoreSettings
    from rag.models import EvaluationRecord, PromotionEvent
    from testkit.builds import complete_build

    # A server's store: the embedded one records a move in the move's transaction, never pending.
    with open_store(StoreSettings(location=str(store_path), engine="qdrant")) as store:
        old, new = complete_build(store, "kb", "20260101-000000"), complete_build(store, "kb", "20260102-000000")
        evaluated = store.read_manifest(old)
        evaluated.evaluation = EvaluationRecord(
            version="20260101-000000", golden="g.yaml", golden_sha256="abc", queries=3, query_model="m",
            metrics={"ndcg@10": 0.9}, evaluated_at=datetime.now(timezone.utc))
        store.write_manifest(evaluated)
        live = store.read_manifest(new)
        live.promotions.append(PromotionEvent(at=datetime.now(timezone.utc), by="reindex", replaced=old,
                                              reason="passed", pending=True))
        store.write_manifest(live)
        store.swap_alias("kb", expected=None, target=new)
        baseline = find_baseline(store, store.read_manifest(new), "abc")
    assert baseline is not None and baseline.metrics == {"ndcg@10": 0.9}
