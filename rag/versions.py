"""Index versions of an alias: listing, promotion, rollback and retention.

Rules kept here, whatever calls them:
- the alias moves only by compare-and-swap (``IndexStore.swap_alias``);
- the live collection is never written to and never deleted: a promotion is recorded in the manifest of
  the build that is about to go live, before the alias moves;
- retention deletes only builds no alias points at, and always keeps the build the live one replaced,
  so ``rollback`` has somewhere to go.
"""

from __future__ import annotations

import logging
from datetime import datetime

from rag.errors import PromotionRefused, VersionError
from rag.models import Manifest, PromotionEvent, VersionInfo, utc_now
from rag.store import IndexStore, collection_name, version_of

log = logging.getLogger(__name__)


def new_version(store: IndexStore, alias: str, now: datetime | None = None) -> str:
    """A fresh version name: the UTC build time, ``YYYYMMDD-HHMMSS``, suffixed if that collection exists.

    Names sort in build order, which retention and ``status`` rely on.
    """
    base = (now or utc_now()).strftime("%Y%m%d-%H%M%S")
    version, n = base, 1
    while store.exists(collection_name(alias, version)):
        n += 1
        version = f"{base}-{n}"
    return version


def resolve_collection(store: IndexStore, alias: str, version: str) -> str:
    """Accept a version (``20261122-101500``) or a full collection name; return the collection.

    Raises:
        VersionError: no such build of this alias.
    """
    collection = version if version.startswith(f"{alias}__") else collection_name(alias, version)
    if not store.exists(collection):
        known = ", ".join(version_of(c) for c in store.list_builds(alias)) or "none"
        raise VersionError(f"alias {alias!r} has no version {version!r} (versions: {known})")
    return collection


def list_versions(store: IndexStore, alias: str) -> list[VersionInfo]:
    """Every build of ``alias``, newest first, with its manifest, point count and status."""
    live = store.alias_target(alias)
    infos = []
    for collection in reversed(store.list_builds(alias)):
        infos.append(
            VersionInfo(
                version=version_of(collection),
                collection=collection,
                live=collection == live,
                points=store.count(collection),
                status=store.status(collection),
                manifest=store.read_manifest(collection),
            )
        )
    return infos


def check_promotable(store: IndexStore, manifest: Manifest) -> str:
    """Sanity checks before a build may serve; returns a one-line reason it passed.

    Checks: the build completed; it indexed at least one document and one chunk; the collection holds
    exactly the chunks the build wrote; Qdrant reports the collection green (indexed, no errors).

    Raises:
        PromotionRefused: with the failed check and its figures.
    """
    counts = manifest.counts
    if manifest.state != "complete":
        raise PromotionRefused(f"build {manifest.version} is {manifest.state}, not complete")
    if counts.documents_indexed == 0 or counts.chunks == 0:
        raise PromotionRefused(
            f"build {manifest.version} indexed no documents ({counts.documents_failed} of "
            f"{counts.documents_seen} failed); see the failures in the run summary"
        )
    points = store.count(manifest.collection)
    if points != counts.chunks:
        raise PromotionRefused(
            f"build {manifest.version} holds {points} points but wrote {counts.chunks} chunks; rebuild it"
        )
    status = store.status(manifest.collection)
    if status != "green":
        raise PromotionRefused(f"collection {manifest.collection} is {status}, not green")
    return (
        f"complete: {counts.documents_indexed}/{counts.documents_seen} documents, "
        f"{counts.chunks} chunks, collection green"
    )


def promote(
    store: IndexStore,
    alias: str,
    collection: str,
    *,
    expected: str | None,
    by: str,
    reason: str,
    forced: bool = False,
) -> Manifest:
    """Move ``alias`` to ``collection`` if it still points at ``expected``; record it in the manifest.

    The record is written to the incoming build before the swap (the live build is never written to).
    If the swap then loses the race, the record names a promotion that did not happen; ``status``
    trusts the alias, not the record, and the next promotion appends a new event.

    Raises:
        AliasConflictError: the alias no longer points at ``expected``; it was left untouched.
        VersionError: the collection does not exist or has no manifest.
    """
    manifest = _manifest(store, collection)
    if store.alias_target(alias) == collection:
        raise VersionError(f"{collection} is already live for alias {alias!r}")
    event = PromotionEvent(at=utc_now(), by=by, replaced=expected, reason=reason, forced=forced)  # type: ignore[arg-type]
    manifest.promotions.append(event)
    store.write_manifest(manifest)
    store.swap_alias(alias, expected=expected, target=collection)
    log.info("alias %s -> %s (was %s): %s", alias, collection, expected, reason)
    return manifest


def promote_version(store: IndexStore, alias: str, version: str, *, force: bool = False, reason: str = "") -> Manifest:
    """Point ``alias`` at a kept build by hand (``ragops promote``), compare-and-swap against the live one.

    Without ``force`` the build must be complete, pass the sanity checks, and not have failed its gate.
    With ``force`` a rejected build is promoted too; ``reason`` is required and recorded with the event.
    A failed (incomplete) build is never promoted.

    Raises:
        PromotionRefused: the build was rejected by its gate or fails a sanity check (and no ``force``).
        VersionError: no such version, it is already live, it is incomplete, or ``force`` lacks a reason.
        AliasConflictError: the alias moved meanwhile.
    """
    collection = resolve_collection(store, alias, version)
    manifest = _manifest(store, collection)
    if manifest.state in ("building", "failed"):
        raise VersionError(f"build {manifest.version} is {manifest.state} (incomplete); it can never be promoted")
    if force and not reason.strip():
        raise VersionError("--force needs --reason TEXT: the override is recorded in the build's manifest")
    if not force:
        if manifest.state == "rejected":
            raise PromotionRefused(
                f"build {manifest.version} was rejected: {manifest.error}; pass --force --reason TEXT to "
                "promote it anyway (recorded in its manifest)"
            )
        reason = reason.strip() or "manual promotion: " + check_promotable(store, manifest)
    live = store.alias_target(alias)
    return promote(store, alias, collection, expected=live, by="promote", reason=reason.strip(), forced=force)


def rollback(store: IndexStore, alias: str, to: str | None = None) -> tuple[str, str]:
    """Point ``alias`` back at the build the live one replaced (or at version ``to``).

    Returns:
        (previous live collection, new live collection).

    Raises:
        VersionError: the alias does not exist, there is no earlier build, or the target is not complete.
        AliasConflictError: the alias moved while rolling back.
    """
    live = store.alias_target(alias)
    if live is None:
        raise VersionError(f"alias {alias!r} does not exist in {store.location}; nothing to roll back")
    if to is not None:
        target = resolve_collection(store, alias, to)
    else:
        live_manifest = store.read_manifest(live)
        target = live_manifest.replaced if live_manifest else None
        if target is None or not store.exists(target):
            raise VersionError(
                f"the live build {version_of(live)} did not replace any build still in the store; "
                "pass --to VERSION (see `ragops status`)"
            )
    target_manifest = _manifest(store, target)
    if target_manifest.state != "complete":
        raise VersionError(f"cannot roll back to {version_of(target)}: it is {target_manifest.state}")
    promote(store, alias, target, expected=live, by="rollback", reason=f"rollback from {version_of(live)}")
    return live, target


def apply_retention(store: IndexStore, alias: str, keep: int, *, protect: set[str] | None = None) -> list[str]:
    """Delete the oldest builds of ``alias`` so that at most ``keep`` remain; return what was deleted.

    Never deletes: a build an alias points at, the build the live one replaced (the rollback target),
    or anything in ``protect`` (the running build). These count towards ``keep``.
    """
    builds = store.list_builds(alias)
    live = store.alias_target(alias)
    keepers = set(protect or ())
    if live:
        keepers.add(live)
        live_manifest = store.read_manifest(live)
        if live_manifest and live_manifest.replaced:
            keepers.add(live_manifest.replaced)
    # Newest first, fill the remaining slots after the protected builds.
    for collection in reversed(builds):
        if len(keepers) >= keep:
            break
        keepers.add(collection)
    deleted = []
    for collection in builds:
        if collection in keepers or store.aliases_of(collection):
            continue
        store.delete_build(collection)
        deleted.append(collection)
        log.info("retention: deleted %s", collection)
    return deleted


def _manifest(store: IndexStore, collection: str) -> Manifest:
    manifest = store.read_manifest(collection)
    if manifest is None:
        raise VersionError(f"collection {collection} has no ragops manifest; it was not built by ragops")
    return manifest
