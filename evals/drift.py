"""Drift checks on the live build of an alias: has retrieval quietly stopped being what was promoted?

Four checks, each reported with its figure and threshold (``DriftCheck``):

- **golden** (one per metric in ``drift.tolerance``): the golden queries are re-embedded with the
  query model and re-scored on the live build. Drift when a metric is more than its tolerance below
  the baseline: the live build's evaluation from its own run, else the newest one along the builds it
  replaced that used the same golden set (a build promoted without evaluation inherits it).
- **model**: the configured embedding model is not the one the live build was embedded with (weights,
  dimension, dtype, quantization...: the message names each difference). New builds, and any
  application that embeds queries with the configured model, would be in another vector space than the
  live documents; how far apart, the compatibility check measures.
- **compatibility**: a pre-flight for a model change. A seeded sample of stored chunks is
  re-embedded with the configured model and compared with the stored vectors. Drift when the mean
  cosine is below ``drift.min_cosine`` (0.9, as RAGFlow checks before switching models).
- **queries**: the distribution of recent query embeddings (the query log) against the window
  before it, without labels. Statistic: the unbiased MMD² with a Gaussian kernel (bandwidth by the
  median heuristic) and a seeded permutation test. Drift when the p-value is below ``drift.alpha``.
  Skipped until both windows hold ``drift.min_queries`` queries.

Everything is deterministic for the same data (seeded sampling and permutations), so an unchanged
system gives the same verdict every time. Reads only.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime

import numpy as np

from evals.evaluate import QueryEmbedders, evaluate_build
from evals.golden import GoldenSet
from evals.models import DriftCheck, DriftReport
from rag.config import Settings
from rag.embed.embedder import Embedder
from rag.errors import VersionError
from rag.index.versions import settle_promotions
from rag.models import EvaluationRecord, Manifest, ModelFingerprint, utc_now
from rag.serving.querylog import QueryLog
from rag.store import IndexStore

log = logging.getLogger(__name__)

SEED = 20261123


def check_drift(
    store: IndexStore, settings: Settings, golden: GoldenSet | None, embedder: Embedder, now: datetime | None = None
) -> DriftReport:
    """Run every drift check on the live build of ``settings.alias``.

    Args:
        embedder: the configured embedding model (``settings.embedding``), loaded.

    Raises:
        VersionError: the alias does not exist or its build has no manifest.
    """
    now = now or utc_now()
    live = store.alias_target(settings.alias)
    if live is None:
        raise VersionError(f"alias {settings.alias!r} does not exist in {store.location}; nothing to check")
    manifest = store.read_manifest(live)
    if manifest is None:
        raise VersionError(f"live collection {live} has no ragops manifest; cannot tell its model")

    checks: list[DriftCheck] = []
    if golden is None:
        checks.append(DriftCheck(name="golden", status="skipped", message="no golden set (evaluation.golden)"))
    else:
        embedders = QueryEmbedders(settings.evaluation, settings.embedding, embedder)
        checks += check_golden(store, manifest, golden, settings, embedders)
    compatibility = check_compatibility(store, live, embedder, settings.drift.compat_sample, settings.drift.min_cosine)
    checks += [check_model(embedder.fingerprint, manifest.model, compatibility), compatibility]
    window = settings.drift
    query_log = QueryLog(store, settings.alias, manifest.model)
    recent = query_log.read(now - window.recent_window, now, window.max_queries)
    reference = query_log.read(now - window.recent_window - window.reference_window, now - window.recent_window,
                          window.max_queries)
    checks.append(check_queries(reference, recent, window.permutations, window.alpha, window.min_queries))
    report = DriftReport(alias=settings.alias, live=live, version=manifest.version, checked_at=now, checks=checks,
                         drifted=any(check.status == "drift" for check in checks))
    log.info("drift check of %s (%s): %s", settings.alias, manifest.version, report.headline)
    return report


def find_baseline(store: IndexStore, manifest: Manifest, golden_sha256: str) -> EvaluationRecord | None:
    """The evaluation to compare the live build with: its own, else the newest one up the chain of
    builds it replaced that used the same golden set (and is still in the store)."""
    seen: set[str] = set()
    # The live build's: a pending last promotion happened (its run died before confirming it).
    current: Manifest | None = settle_promotions(manifest, manifest.collection)
    while current is not None and current.collection not in seen:
        seen.add(current.collection)
        if current.evaluation is not None and current.evaluation.golden_sha256 == golden_sha256:
            return current.evaluation
        previous = current.replaced
        current = store.read_manifest(previous) if previous and store.exists(previous) else None
    return None


def check_golden(
    store: IndexStore, manifest: Manifest, golden: GoldenSet, settings: Settings, embedders: QueryEmbedders
) -> list[DriftCheck]:
    """Re-score the golden queries on the live build; one check per metric in ``drift.tolerance``."""
    baseline = find_baseline(store, manifest, golden.sha256)
    if baseline is None:
        return [DriftCheck(
            name="golden", status="skipped",
            message=f"no baseline: build {manifest.version} and the builds it replaced were never evaluated on "
            f"this golden set (sha {golden.sha256[:12]}); the next reindex records one",
        )]
    report = evaluate_build(store, manifest.collection, golden, settings.evaluation,
                            embedders.for_build(manifest), strict=False)
    checks = []
    for metric, tolerance in settings.drift.tolerance.items():
        now, before = report.record.metrics.get(metric), baseline.metrics.get(metric)
        if now is None or before is None:
            checks.append(DriftCheck(name=f"golden:{metric}", status="skipped", threshold=tolerance,
                                     message=f"{metric} is not in both evaluations"))
            continue
        drop = before - now
        drifted = drop > tolerance + 1e-9
        checks.append(DriftCheck(
            name=f"golden:{metric}", status="drift" if drifted else "ok", value=now, baseline=before,
            threshold=tolerance,
            message=f"{metric} {now:.5f} vs {before:.5f} at build {baseline.version}: "
            + (f"dropped {drop:.5f}, more than the {tolerance:.5f} tolerated" if drifted else "within tolerance")
            + (f"; {len(report.missing)} relevant document(s) no longer served" if report.missing else ""),
        ))
    return checks


def check_model(
    configured: ModelFingerprint, live: ModelFingerprint, compatibility: DriftCheck | None = None
) -> DriftCheck:
    """Is the configured model the one the live build was embedded with (the same vector space)?

    Args:
        compatibility: the compatibility check's result on the same build, when it ran: the message then
            says how far apart the two spaces measured, rather than guess.
    """
    if configured.same_space(live):
        return DriftCheck(name="model", status="ok", message=f"configured model {configured.label} is the live "
                          f"build's ({live.label})")
    differences = configured.differences(live) or ["its vector space differs"]
    if compatibility is not None and compatibility.status == "ok" and compatibility.value is not None:
        consequence = (f"its vectors are close to the live build's (compatibility: mean cosine "
                       f"{compatibility.value:.4f}) but not the ones the gate measured")
    elif compatibility is not None and compatibility.status == "drift":
        consequence = "queries embedded with it miss the live documents (compatibility below)"
    else:
        consequence = "queries embedded with it are compared with vectors of another space"
    return DriftCheck(
        name="model", status="drift",
        message=f"configured model {configured.label} is not the live build's {live.label}: "
        + ", ".join(differences) + f"; {consequence}: rebuild with it, or configure the live build's model",
    )


def check_compatibility(
    store: IndexStore, collection: str, embedder: Embedder, sample: int, min_cosine: float
) -> DriftCheck:
    """Re-embed a seeded sample of stored chunks with ``embedder``; mean cosine to the stored vectors."""
    ids = sorted(store.point_ids(collection))
    if not ids:
        return DriftCheck(name="compatibility", status="skipped", message="the live build holds no chunks")
    chosen = random.Random(SEED).sample(ids, min(sample, len(ids)))
    points = store.read_points(collection, chosen, fields=["text"])
    stored = np.asarray([p.vector for p in points], dtype=np.float32)
    if stored.shape[1] != embedder.fingerprint.dimension:
        return DriftCheck(
            name="compatibility", status="drift", value=0.0, threshold=min_cosine,
            message=f"configured model makes {embedder.fingerprint.dimension}-d vectors, the live build holds "
            f"{stored.shape[1]}-d ones: incompatible",
        )
    fresh = embedder.embed([(p.payload or {}).get("text", "") for p in points])
    cosine = float(np.mean(np.sum(_unit(stored) * _unit(fresh), axis=1)))
    drifted = cosine < min_cosine
    return DriftCheck(
        name="compatibility", status="drift" if drifted else "ok", value=cosine, threshold=min_cosine,
        message=f"mean cosine {cosine:.4f} between {len(points)} stored chunk vectors and their re-embedding "
        f"with the configured model " + (f"is below {min_cosine}: a different vector space" if drifted
                                         else f">= {min_cosine}"),
    )


def check_queries(
    reference: np.ndarray, recent: np.ndarray, permutations: int, alpha: float, min_queries: int
) -> DriftCheck:
    """Has the distribution of what users ask moved? MMD² permutation test, recent vs reference."""
    if len(reference) < min_queries or len(recent) < min_queries:
        return DriftCheck(
            name="queries", status="skipped", threshold=alpha,
            message=f"{len(recent)} recent and {len(reference)} reference queries logged; the check needs "
            f"{min_queries} in each (Retriever(log_queries=True) logs them)",
        )
    mmd2, p_value = mmd_permutation_test(reference, recent, permutations)
    centroid = 1.0 - float(np.dot(_unit(reference.mean(axis=0)), _unit(recent.mean(axis=0))))
    drifted = p_value < alpha
    return DriftCheck(
        name="queries", status="drift" if drifted else "ok", value=p_value, threshold=alpha,
        message=f"MMD² {mmd2:.5f} between {len(recent)} recent and {len(reference)} reference queries, "
        f"permutation p-value {p_value:.4f} " + ("<" if drifted else ">=") + f" {alpha}; "
        f"centroid cosine distance {centroid:.4f}",
    )


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int = SEED) -> tuple[float, float]:
    """Unbiased MMD² between samples ``x`` and ``y`` (Gaussian kernel, median-heuristic bandwidth) and the
    permutation p-value of observing one at least as large if both came from one distribution.

    Returns:
        (MMD², p-value in (0, 1]).
    """
    z = np.vstack([x, y]).astype(np.float64)
    squared = np.maximum(np.sum(z**2, 1)[:, None] + np.sum(z**2, 1)[None, :] - 2 * z @ z.T, 0.0)
    off_diagonal = squared[np.triu_indices(len(z), k=1)]
    median = float(np.median(off_diagonal[off_diagonal > 0])) if np.any(off_diagonal > 0) else 1.0
    kernel = np.exp(-squared / median)  # exp(-d² / (2σ²)) with 2σ² = median d²

    def mmd2(first: np.ndarray) -> float:
        second = ~first
        n, m = first.sum(), second.sum()
        kxx = kernel[np.ix_(first, first)]
        kyy = kernel[np.ix_(second, second)]
        kxy = kernel[np.ix_(first, second)]
        return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())

    labels = np.zeros(len(z), dtype=bool)
    labels[: len(x)] = True
    observed = mmd2(labels)
    rng = np.random.default_rng(seed)
    exceed = sum(mmd2(rng.permutation(labels)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)

