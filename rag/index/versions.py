"""Index versions of an alias: listing, the gate's verdict on a candidate, promotion, rollback and retention.

Rules kept here, whatever calls them:
- the alias moves only by compare-and-swap (``IndexStore.swap_alias``);
- the live collection is never deleted, and no build writes to it. The one write it gets is its own
  promotion record, confirmed right after the alias moved onto it (below);
- retention deletes only builds no alias points at, and always keeps the build the live one replaced,
  so ``rollback`` has somewhere to go.

A move's record is what ``rollback`` and retention rely on: the promotion event on the build the alias
moved onto says which build it replaced. On the embedded store (``IndexStore.atomic_records``) the
event, the move and its audit entry are one catalog transaction (``IndexStore.move_alias``): a kill
leaves all of them or none, a process that loses the compare-and-swap writes nothing, and nothing else
writes a build's promotion history, so two racing moves (a ``promote`` and a ``rollback``) cannot erase
each other's record.

A server has no such transaction, so there a promotion is two writes around one move, and a run can be
killed between any two of them:

1. a *pending* ``PromotionEvent`` goes into the incoming build's manifest (not live yet);
2. the alias moves (one atomic request);
3. the event is confirmed (``pending=False``) on the build that is now live, then audited.

Why not write the record only after the move: killed between 2 and 3, the live build would carry no
record of what it replaced, so ``rollback`` and retention would follow an older event and might delete
the real rollback target. Why not write it only before: killed between 1 and 2, the manifest claims a
promotion that never happened. With the pending mark, the alias decides: ``settle_promotions`` treats
a pending event as done when it is the last event of the build the alias points at (nothing else can
have moved it there: every move onto a build appends its event first, and a live build is never
promoted again), and as never having happened on any other build. Everything that reads promotions
(``status``, ``rollback``, retention) reads settled manifests. Confirming the event in 3 writes to the
now-live collection's metadata: that is the live build's own promotion record, not a build writing into
it. A pending event left on the build the alias later moves away from is confirmed on disk then (it is
no longer live, and it was live, so its last event did happen). Racing moves on a server are kept apart
by the alias's lease (one run per alias, rag/store/locks.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from rag.errors import AliasConflictError, PromotionRefused, StoreError, VersionError
from rag.failpoints import failpoint
from rag.index import audit
from rag.models import EvaluationRecord, GateResult, Manifest, PromotionEvent, VersionInfo, utc_now
from rag.store import IndexStore, Row
from rag.store.names import collection_name, version_of

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


def build_to_read(store: IndexStore, alias: str, version: str | None) -> str:
    """The collection an evaluation or drift check reads: ``version``'s, else the live build's.

    Raises:
        VersionError: no such build, or the alias has no live build yet.
    """
    if version is not None:
        return resolve_collection(store, alias, version)
    live = store.alias_target(alias)
    if live is None:
        raise VersionError(f"alias {alias!r} has no live build yet; run `ragops reindex` first")
    return live


def list_versions(store: IndexStore, alias: str) -> list[VersionInfo]:
    """Every build of ``alias``, newest first, with its (settled) manifest, point count, status and
    damage (``IndexStore.damage``, the quick checks)."""
    live = store.alias_target(alias)
    infos = []
    for collection in reversed(store.list_builds(alias)):
        manifest = store.read_manifest(collection)
        infos.append(
            VersionInfo(
                version=version_of(collection),
                collection=collection,
                live=collection == live,
                points=store.count(collection),
                status=store.status(collection),
                manifest=settle_promotions(manifest, live) if manifest else None,
                damage=store.damage(collection),
            )
        )
    return infos


def settle_promotions(manifest: Manifest, live: str | None) -> Manifest:
    """The manifest with its pending promotion events resolved against where the alias points (``live``).

    A pending event that is the last event of the live build happened (the run died before confirming
    it); any other pending event is dropped: its alias move never happened, or cannot be shown to have.
    Returns a copy when something changed; nothing is written.
    """
    if not any(event.pending for event in manifest.promotions):
        return manifest
    last = len(manifest.promotions) - 1
    settled = []
    for index, event in enumerate(manifest.promotions):
        if not event.pending:
            settled.append(event)
        elif index == last and manifest.collection == live:
            settled.append(event.model_copy(update={"pending": False}))
    return manifest.model_copy(update={"promotions": settled})


def check_promotable(store: IndexStore, manifest: Manifest) -> str:
    """Sanity checks before a build may serve; returns a one-line reason it passed.

    Checks: the build completed (a rejected build did: it is being gated again); it indexed at least
    one document and one chunk; the collection holds exactly the chunks the build wrote; Qdrant reports
    the collection green (indexed, no errors).

    Raises:
        PromotionRefused: with the failed check and its figures.
    """
    counts = manifest.counts
    if manifest.state not in ("complete", "rejected"):
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


def record_verdict(
    store: IndexStore, manifest: Manifest, gate: GateResult, evaluation: EvaluationRecord | None
) -> Manifest:
    """Write the gate's verdict and the evaluation into the build's manifest; a failed gate rejects it,
    and a rejected build that passes when gated again (its golden set or gate fixed) is complete again.

    Only ever called on a candidate, never on the live build.
    """
    manifest.gate, manifest.evaluation = gate, evaluation
    if not gate.passed and manifest.state == "complete":
        manifest.state, manifest.error = "rejected", gate.reason
    elif gate.passed and manifest.state == "rejected":
        manifest.state, manifest.error = "complete", None
    store.write_manifest(manifest)
    if evaluation is not None:
        audit.record(store, manifest.alias, "evaluation", build=manifest.collection, why="gate evaluation",
                     details={"metrics": evaluation.metrics, "queries": evaluation.queries})
    audit.record(store, manifest.alias, "gate", build=manifest.collection, why=gate.reason,
                 details={"passed": gate.passed, "live": gate.live, "checks": [c.model_dump(mode="json")
                                                                              for c in gate.checks]})
    return manifest


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
    """Move ``alias`` to ``collection`` if it still points at ``expected``; record it in the manifest and
    the audit trail.

    On the embedded store the move and both records are one transaction; on a server, pending record
    on the incoming build, the move, then the confirmation (the module docstring says why). A lost race
    writes nothing (a server's pending record is withdrawn); any other interruption leaves a server's
    pending record for ``settle_promotions`` to resolve against the alias.

    Returns:
        The promoted build's manifest, its new event confirmed.

    Raises:
        AliasConflictError: the alias no longer points at ``expected``; it was left untouched.
        VersionError: the collection does not exist, has no manifest, or is already live.
    """
    live = store.alias_target(alias)
    if live == collection:
        raise VersionError(f"{collection} is already live for alias {alias!r}")
    kind = "rollback" if by == "rollback" else "forced_promotion" if forced else "promotion"
    record = audit.entry(alias, kind, build=collection, why=reason, details={"replaced": expected, "command": by})
    event = PromotionEvent(by=by,  # type: ignore[arg-type]  # a str, validated against its Literal
                           at=utc_now(), replaced=expected, reason=reason, forced=forced)
    if store.atomic_records:
        _manifest(store, collection)  # a build ragops did not make is refused before anything moves
        manifest = store.move_alias(alias, expected=expected, target=collection, event=event, records=[record])
        failpoint("promote")
    else:
        manifest = _promote_in_steps(store, alias, collection, expected, event, record)
    log.info("alias %s -> %s (was %s): %s", alias, collection, expected, reason)
    return manifest


def _promote_in_steps(store: IndexStore, alias: str, collection: str, expected: str | None,
                      event: PromotionEvent, record: tuple[str, Row]) -> Manifest:
    """A server's promotion: pending record, move, confirmation, audit entry (the module docstring)."""
    # Not live, so any pending event it carries never made it live: drop it before adding ours.
    manifest = settle_promotions(_manifest(store, collection), store.alias_target(alias))
    event.pending = True
    manifest.promotions.append(event)
    store.write_manifest(manifest)
    try:
        store.swap_alias(alias, expected=expected, target=collection)
    except AliasConflictError:
        _withdraw(store, manifest, event)
        raise
    failpoint("promote")
    event.pending = False
    try:
        store.write_manifest(manifest)  # the now-live build's own promotion record
    except StoreError as exc:  # the move happened: a pending record on the live build says so too
        log.warning("alias %s moved to %s, but confirming its record failed: %s", alias, collection, exc)
    _confirm_outgoing(store, expected)
    table, row = record
    try:
        store.put_rows(table, [row])
    except StoreError as exc:  # the move happened: raising would report it as failed
        log.error("alias %s moved to %s, but its audit entry could not be written: %s", alias, collection, exc)
    return manifest


def _withdraw(store: IndexStore, manifest: Manifest, event: PromotionEvent) -> None:
    """Remove a pending event whose swap was refused (best effort: readers settle it anyway)."""
    manifest.promotions.remove(event)
    try:
        store.write_manifest(manifest)
    except StoreError as exc:
        log.warning("could not withdraw the pending promotion of %s: %s", manifest.collection, exc)


def _confirm_outgoing(store: IndexStore, outgoing: str | None) -> None:
    """Confirm on disk a pending last event of the build the alias just left (best effort).

    It was live until the swap, so the event that made it live happened; its run died before
    confirming it. It is no longer live, so writing its manifest is a write to a kept build.
    """
    if outgoing is None:
        return
    try:
        manifest = store.read_manifest(outgoing) if store.exists(outgoing) else None
        if manifest and manifest.promotions and manifest.promotions[-1].pending:
            manifest.promotions[-1].pending = False
            store.write_manifest(manifest)
    except (StoreError, VersionError) as exc:
        log.warning("could not confirm the last promotion of %s: %s", outgoing, exc)


def promote_version(store: IndexStore, alias: str, version: str, *, force: bool = False, reason: str = "") -> Manifest:
    """Point ``alias`` at a kept build by hand (``ragops promote``), compare-and-swap against the live one.

    Without ``force`` the build must be complete, have passed its gate, and pass the sanity checks. A
    build with no verdict at all (its run died before the gate, or it was made outside ``reindex``) is
    refused here: gating needs the golden set and the model, which live above this package, so the
    caller gates it first (``ragops promote`` does, through ``flows.evaluate.gate_for_promotion``) and
    the verdict lands in its manifest. With ``force`` a rejected or ungated build is promoted too;
    ``reason`` is required and recorded with the event. A failed (incomplete) build is never promoted.

    Raises:
        PromotionRefused: the build was rejected by its gate, was never gated, or fails a sanity check
            (and no ``force``).
        VersionError: no such version, it is already live, it is incomplete or damaged, or ``force``
            lacks a reason.
        AliasConflictError: the alias moved meanwhile.
    """
    collection = resolve_collection(store, alias, version)
    manifest = _manifest(store, collection)
    if manifest.state in ("building", "failed"):
        raise VersionError(f"build {manifest.version} is {manifest.state} (incomplete); it can never be promoted")
    if damage := store.damage(collection, deep=True):  # not even with --force: it would serve what it no longer holds
        raise VersionError(f"build {manifest.version} is damaged ({damage}); it cannot be promoted")
    if force and not reason.strip():
        raise VersionError("--force needs --reason TEXT: the override is recorded in the build's manifest")
    if not force:
        if manifest.state == "rejected" or (manifest.gate is not None and not manifest.gate.passed):
            why = manifest.error or (manifest.gate.reason if manifest.gate else "no reason recorded")
            raise PromotionRefused(
                f"build {manifest.version} was rejected: {why}; pass --force --reason TEXT to promote it "
                "anyway (recorded in its manifest)"
            )
        if manifest.gate is None:
            raise PromotionRefused(
                f"build {manifest.version} was never gated (no verdict in its manifest); `ragops promote` "
                "gates it on the alias's golden set first, or pass --force --reason TEXT to promote it ungated"
            )
        reason = reason.strip() or f"manual promotion: {manifest.gate.reason}; {check_promotable(store, manifest)}"
    live = store.alias_target(alias)
    return promote(store, alias, collection, expected=live, by="promote", reason=reason.strip(), forced=force)


def needs_gate(store: IndexStore, alias: str, version: str) -> Manifest | None:
    """The manifest of a build that ``promote_version`` would refuse only for lacking a passing verdict.

    That is a build, not live, that is complete with no gate verdict, or rejected: a rejected build is
    gated again (on today's golden set and gate, against today's live build), so that fixing what
    rejected it is enough to promote it without ``--force``. None for anything else
    (``promote_version`` then promotes it or says why not).

    Raises:
        VersionError: no such version.
    """
    collection = resolve_collection(store, alias, version)
    manifest = store.read_manifest(collection)
    if manifest is None or not (manifest.state == "rejected" or (manifest.state == "complete" and manifest.gate is None)):
        return None
    return None if store.alias_target(alias) == collection else manifest


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
        target = _rollback_target(store, live)
        if target is None or not store.exists(target):
            raise VersionError(
                f"the live build {version_of(live)} did not replace any build still in the store; "
                "pass --to VERSION (see `ragops status`)"
            )
    target_manifest = _manifest(store, target)
    if target_manifest.state != "complete":
        raise VersionError(f"cannot roll back to {version_of(target)}: it is {target_manifest.state}")
    if damage := store.damage(target, deep=True):
        raise VersionError(f"cannot roll back to {version_of(target)}: it is damaged ({damage}); pass --to "
                           "another version (see `ragops status`)")
    promote(store, alias, target, expected=live, by="rollback", reason=f"rollback from {version_of(live)}")
    return live, target


def apply_retention(
    store: IndexStore,
    alias: str,
    keep: int,
    *,
    protect: set[str] | None = None,
    grace: timedelta = timedelta(0),
    now: datetime | None = None,
) -> list[str]:
    """Keep at most ``keep`` builds of ``alias``, delete husks and orphaned tables; return what was deleted.

    Never deletes: a build an alias points at, the build the live one replaced (the rollback target,
    read from the settled manifest so a promotion killed before its confirmation still counts), or
    anything in ``protect``. These are *pinned* and take slots first; the newest other complete builds
    fill the rest (a collection without a readable manifest counts as one of them, as it always did),
    then rejected ones, and older ones are deleted.

    A rejected build never takes a slot from a good one, not even the one a run just made (an accidental
    run must not push the user's kept builds out). The newest rejected build made after the live one is
    kept besides, without a slot, so that it can be re-gated (``ragops eval --version``, then
    ``promote``) once what rejected it is fixed: at most ``keep + 1`` builds remain.

    A *husk* is a build in state ``building`` or ``failed`` that no running run owns: what a killed run
    (``building``) or one that stopped on an error (``failed``) left. Husks are always deleted and never
    take a slot, so they cannot push a good build out. Why a ``building`` build found here is a husk:
    only one run per alias runs at a time (the alias's lock, flows/locking.py), and the run applying
    retention is that run. Its own build may still be ``building``, which is why callers must pass it in
    ``protect``; any other ``building`` build of the alias belongs to a run that is no longer running.

    A build that stopped being live less than ``grace`` ago is not deleted yet, even past ``keep``:
    serving processes that follow the alias may still be answering from it. It takes no slot, and a
    later run deletes it (``StoreSettings.grace``).

    Also deleted: document tables ``<alias>__<version>__docs`` whose build collection is gone, left by
    a deletion killed half-way (``IndexStore.orphan_tables``). They are listed in the result too.
    """
    builds = store.list_builds(alias)
    live = store.alias_target(alias)
    pinned = set(protect or ()) & set(builds)
    if live:
        pinned.add(live)
        target = _rollback_target(store, live)
        if target in builds:
            pinned.add(target)
    states = {c: _state(store, c) for c in builds}
    husks = {c for c in builds if c not in pinned and states[c] in ("building", "failed")}
    rejected = [c for c in builds if states[c] == "rejected" and c != live]
    # The newest rejected build since the live one: kept for re-gating, but it takes no slot.
    regate = rejected[-1] if rejected and (live is None or rejected[-1] > live) else None
    pinned.discard(regate)
    kept = set(pinned)
    for collection in [c for c in reversed(builds) if c not in rejected] + rejected[::-1]:
        # newest first, good builds before rejected ones, into the slots left after the pinned builds
        if len(kept) >= keep:
            break
        if collection not in husks and collection != regate:
            kept.add(collection)
    if regate:
        kept.add(regate)
    held = _recently_live(store, builds, live, (now or utc_now()) - grace) if grace > timedelta(0) else set()
    deleted = []
    for collection in builds:
        if collection in kept or store.aliases_of(collection):
            continue
        if collection in held:
            log.info("retention: kept %s for now: it was live less than %s ago", collection, grace)
            continue
        why = "a husk: no run owns it" if collection in husks else f"older than the {keep} builds kept (retention)"
        store.delete_build(collection, records=[audit.entry(alias, "retention_delete", build=collection, why=why)])
        deleted.append(collection)
        log.info("retention: deleted %s (%s)", collection, why)
    for table in store.orphan_tables(alias):
        store.delete_orphan_table(table)
        deleted.append(table)
        log.info("retention: deleted %s (its build was already deleted)", table)
    return deleted


def _recently_live(store: IndexStore, builds: list[str], live: str | None, since: datetime) -> set[str]:
    """Builds an alias moved away from after ``since``: the ``replaced`` of every later promotion event."""
    held = set()
    for collection in builds:
        manifest = store.read_manifest(collection)
        if manifest is None:
            continue
        for event in settle_promotions(manifest, live).promotions:
            if event.replaced and event.at > since:
                held.add(event.replaced)
    return held


def _rollback_target(store: IndexStore, live: str) -> str | None:
    """The build the live one replaced, by its settled manifest (a pending last event counts: it is live)."""
    manifest = store.read_manifest(live)
    return settle_promotions(manifest, live).replaced if manifest else None


def _state(store: IndexStore, collection: str) -> str | None:
    """The build's recorded state, or None when it has no readable manifest."""
    manifest = store.read_manifest(collection)
    return manifest.state if manifest else None


def _manifest(store: IndexStore, collection: str) -> Manifest:
    manifest = store.read_manifest(collection)
    if manifest is None:
        raise VersionError(f"collection {collection} has no ragops manifest; it was not built by ragops")
    return manifest
