"""The steps of an index build, as plain functions (the reindex flow orchestrates them).

A build is a new collection ``<alias>__<version>`` plus its document table. It is incremental: it starts
from a *base*, the live build when it was made with the same model and chunking (else the newest such
complete build, else nothing), and does only what changed:

1. ``plan_against_store`` reads the live build, picks the base and plans against its document table
   (the decisions are pure functions in rag/index/plan.py). Unchanged documents are *carried* (points
   copied, nothing parsed), and new or changed ones become *work*. Documents a complete listing lacks
   are deleted by not being carried. A source whose listing failed keeps every document as it was.
2. ``begin_build`` creates the empty build; ``carry_documents`` copies carried documents' points and
   records from the base.
3. The work, batch by batch (rag/index/batches.py): fetched, parsed, chunked, embedded (cache misses
   only) and written; a document that fails is quarantined and its previous good version kept.
   rag/index/progress.py adds up what the batches did.
4. ``finish_build`` marks the build complete once everything is durably written; ``fail_build`` (or
   ``failing_on_error`` round the steps) marks it failed with the reason.

Nothing here touches the serving alias or writes to any collection but the new build's (and the cache).
The gate's verdict on the finished build is recorded by ``rag.index.versions.record_verdict``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime
from typing import Collection, Iterator, Mapping, Sequence

from pydantic import BaseModel, Field

from rag.config import FolderSource, S3Source
from rag.errors import ConfigError, DamagedBuildError
from rag.failpoints import failpoint
from rag.index import audit
from rag.index.plan import BuildPlan, choose_base, deleted_at_source, plan_build, why_full
from rag.index.progress import BatchReport, BuildProgress, timed
from rag.index.versions import new_version
from rag.ingest.redaction import Redactor
from rag.ingest.redaction import describe as describe_redaction
from rag.listing import Listing
from rag.models import DocumentRecord, Manifest, ModelFingerprint, utc_now
from rag.runtime import stop_reason
from rag.secrets import redact_url
from rag.store import IndexStore
from rag.store.names import collection_name, docs_collection

log = logging.getLogger(__name__)

#: failures kept in a manifest (the run summary and the document table keep them all)
MANIFEST_FAILURES = 200

class StartingPoint(BaseModel):
    """Where a run stands before it builds: the live build, the base, and the plan against the base."""

    live: str | None = Field(description="The collection the alias pointed at when the run planned.")
    plan: BuildPlan
    base_manifest: Manifest | None = None
    deleted_from_live: int = Field(0, description="Live documents the listings show deleted at their source.")
    live_damage: str | None = Field(None, description="Why the live build cannot be trusted (IndexStore.damage).")
    regate: Manifest | None = Field(
        None, description="A rejected build that already is what this run would build: gated again, not rebuilt."
    )

    @property
    def nothing_changed(self) -> bool:
        """The base is complete, the listings changed nothing and the live build is sound: no build is needed."""
        return self.base_manifest is not None and not self.plan.has_changes and not self.live_damage


def plan_against_store(
    store: IndexStore, alias: str, listings: Sequence[Listing], fingerprint: ModelFingerprint, chunking: dict,
    *, full_rebuild: bool, now: datetime, redaction: Mapping[str, str | None] | None = None,
    forget: Collection[str] = (),
) -> StartingPoint:
    """Read what the store holds of the alias and plan the build (``rag.index.plan``). Reads only.

    ``redaction``: each redacting source's policy id (``rag.index.plan.plan_build``). ``forget``: sources
    whose documents this run deletes (``ragops reindex --forget-source``).

    Raises:
        ConfigError: ``forget`` names a source this run lists, or one the live build holds nothing of; or
            the run has no base to carry the documents of a live source it does not list from (a full
            build must list every source it keeps).

    A damaged build (``IndexStore.damage``, deep checks) is never the base, and a damaged live build is
    never "unchanged": the run rebuilds it, with vectors from the embedding cache.
    """
    live = store.alias_target(alias)
    live_damage = store.damage(live, deep=True) if live else None
    notes = [f"the live build {live} is damaged ({live_damage}); not trusted: this run builds a replacement, "
             "with vectors from the embedding cache"] if live_damage else []
    base = None
    if not full_rebuild:
        manifests = [store.read_manifest(c) for c in store.list_builds(alias)]
        while (base := choose_base(live, manifests, fingerprint, chunking)) is not None:
            damage = live_damage if base == live else store.damage(base, deep=True)
            if not damage:
                break
            if base != live:
                notes.append(f"build {base} is damaged ({damage}); not used as a base")
            manifests = [m for m in manifests if m is None or m.collection != base]
    base_records = store.read_records(base) if base else {}
    live_records = base_records if base == live else store.read_records(live) if live and not live_damage else {}
    _check_sources(listings, base, base_records, live_records, forget)
    plan = plan_build(listings, base, base_records, now, redaction, forget)
    if base is None:
        plan.full = why_full(store.read_manifest(live) if live and not live_damage else None, fingerprint,
                             chunking, full_rebuild=full_rebuild, live_damage=live_damage)
    plan.notes[:0] = notes
    regate = None
    if plan.has_changes and not full_rebuild:
        regate = _rejected_twin(store, alias, live, listings, fingerprint, chunking, now, redaction, forget)
        if regate is not None:
            plan.notes.append(f"nothing changed since build {regate.version}, which the gate rejected "
                              f"({regate.error}); it is gated again instead of being built again")
    return StartingPoint(
        live=live, plan=plan, base_manifest=store.read_manifest(base) if base else None,
        deleted_from_live=deleted_at_source(listings, live_records, now, forget), live_damage=live_damage,
        regate=regate,
    )


def _rejected_twin(
    store: IndexStore, alias: str, live: str | None, listings: Sequence[Listing], fingerprint: ModelFingerprint,
    chunking: dict, now: datetime, redaction: Mapping[str, str | None] | None, forget: Collection[str],
) -> Manifest | None:
    """The newest build made after the live one, if the gate rejected it and it holds exactly what this
    run would build (same vector space, chunking and parsing, no document changed since): rebuilding it
    would only make one more identical build for the gate to reject again."""
    newer = [c for c in store.list_builds(alias) if live is None or c > live]
    if not newer:
        return None
    manifest = store.read_manifest(newer[-1])
    if (manifest is None or manifest.state != "rejected" or manifest.chunking != chunking
            or not manifest.model.same_space(fingerprint) or store.damage(manifest.collection)):
        return None
    records = store.read_records(manifest.collection)
    again = plan_build(listings, manifest.collection, records, now, redaction, forget)
    return None if again.has_changes else manifest


def _check_sources(listings: Sequence[Listing], base: str | None, base_records: dict[str, DocumentRecord],
                   live_records: dict[str, DocumentRecord], forget: Collection[str]) -> None:
    """Refuse a ``forget`` that would do something else than the user meant, and a run that would drop
    a live source it does not list because it has nothing to carry its documents from."""
    listed = {listing.source for listing in listings}
    held = sorted({r.source for r in live_records.values()} | {r.source for r in base_records.values()})
    for name in forget:
        if name in listed:
            raise ConfigError(f"--forget-source {name}: {name!r} is one of this run's sources; to delete its "
                              "documents, remove it from the sources (or from --source) and forget it")
        if name not in held:
            raise ConfigError(f"--forget-source {name}: the alias holds no documents of a source {name!r}"
                              + (f" (its sources: {', '.join(held)})" if held else " (it holds none)"))
    missing = sorted({r.source for r in live_records.values()} - listed - set(forget)
                     - {r.source for r in base_records.values()})
    if missing:
        why = "a full build" if base is None else f"its base {base} lacks them"
        raise ConfigError(
            f"the live build holds documents of {', '.join(map(repr, missing))}, which this run does not list, and "
            f"this run cannot keep them ({why}): add the source(s) to this run, or delete their documents with "
            + " ".join(f"--forget-source {name}" for name in missing))


def begin_build(
    store: IndexStore, alias: str, sources: Sequence[FolderSource | S3Source], fingerprint: ModelFingerprint,
    chunking: dict, base: str | None = None, redactors: Mapping[str, Redactor] | None = None,
) -> Manifest:
    """Create the empty collection (and document table) of a new build, manifest state "building".

    Each source's entry names its redaction (entities, mode, policy id), so the audit trail's policy
    hash of the build covers it.
    """
    redaction = describe_redaction(redactors or {})
    store.require_space()
    version = new_version(store, alias)
    manifest = Manifest(
        alias=alias,
        version=version,
        collection=collection_name(alias, version),
        created_at=utc_now(),
        model=fingerprint,
        chunking=chunking,
        sources=[{"name": s.name, "kind": s.kind, "uri": s.uri, "redact": redaction.get(s.name)} for s in sources],
        base=base,
    )
    store.create_build(manifest)
    log.info("build %s started in %s (base: %s)", version, manifest.collection, base or "none")
    return manifest


def carry_documents(store: IndexStore, base: str, collection: str, records: Sequence[DocumentRecord]) -> BatchReport:
    """Copy documents' points and records from the base build unchanged. Idempotent.

    Raises:
        DamagedBuildError: the base lacks points its document table lists.
    """
    report = BatchReport(records=list(records))
    store.require_space()
    with timed(report.timings, "reuse"):
        ids = [point_id for record in records for point_id in record.point_ids]
        copied = store.copy_points(base, collection, ids)
        if copied != len(ids):
            raise DamagedBuildError(
                f"base build {base} lacks {len(ids) - copied} of the {len(ids)} points its document table lists: "
                "it is damaged and this run cannot carry documents from it; run `ragops reindex --full` to build "
                "without it (the live build is unchanged)")
        store.write_records(collection, records)
    report.chunks = report.chunks_reused = copied
    return report


def finish_build(store: IndexStore, manifest: Manifest, progress: BuildProgress) -> Manifest:
    """Restore indexing, wait for the collection to be green, and mark the build complete.

    Called only after every batch is written, so "complete" in a manifest means durably complete.
    """
    failpoint("finish")
    status = store.finish_bulk_load(manifest.collection)
    store.sync(manifest.collection)  # durably written before it is recorded as complete
    store.sync(docs_collection(manifest.collection))
    manifest.counts = progress.counts.model_copy()
    manifest.failures = progress.failures[:MANIFEST_FAILURES]
    manifest.completed_at = utc_now()
    manifest.state = "complete"
    if status != "green":
        manifest.state, manifest.error = "failed", f"collection stayed {status} after the bulk load"
    store.write_manifest(manifest)
    _audit_build(store, manifest)
    return manifest


def _audit_build(store: IndexStore, manifest: Manifest) -> None:
    """The build's entry in the audit trail: what it was made from and under which policy."""
    # Not the model's install path: the same weights installed elsewhere are the same policy.
    policy = manifest.model_dump(mode="json", include={"sources", "model", "chunking"}, exclude={"model": {"path"}})
    audit.record(store, manifest.alias, "build", build=manifest.collection,
                 why=manifest.error or f"build {manifest.state}",
                 details={"state": manifest.state, "base": manifest.base, "policy_sha256": audit.policy_hash(policy),
                          "policy": policy, "counts": manifest.counts.model_dump(mode="json")})


@contextmanager
def failing_on_error(store: IndexStore, manifest: Manifest) -> Iterator[None]:
    """Mark the build failed if the ``with`` block raises anything (an interrupt included), then re-raise."""
    try:
        yield
    except BaseException as exc:
        fail_build(store, manifest, stop_reason(exc))  # "stopped by Ctrl-C (SIGINT)", not "KeyboardInterrupt: "
        raise


def fail_build(store: IndexStore, manifest: Manifest, error: str) -> None:
    """Record that a build stopped before completing (best effort: the store may be what failed)."""
    # The manifest outlives the run and `ragops status` shows it: an error quoting a URL is redacted.
    manifest.state, manifest.error = "failed", redact_url(error)[:500]
    try:
        store.write_manifest(manifest)
    except Exception as exc:  # the original error matters more than this one
        log.warning("could not mark build %s failed: %s", manifest.version, exc)
        return
    _audit_build(store, manifest)
