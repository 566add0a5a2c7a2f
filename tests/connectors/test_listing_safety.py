"""Listing safety, on real files: nothing outside a source root is read through a link, a listing that
could not see an entry does not delete it, and poison file names make printable, reversible ids."""

from __future__ import annotations

import os
import shutil
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pytest

from connectors import list_documents, list_source
from connectors.folder import LINK_NOT_FOLLOWED
from connectors.ids import decode_document_id, document_id
from rag.config import FolderSource
from rag.index.plan import deleted_at_source, plan_build
from rag.listing import Listing
from rag.models import DocumentRecord
from rag.store.names import record_id

SECRET = "the launch codes are 0000"
NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A source folder "kb" with files, and links of every kind; a secret file outside it."""
    (tmp_path / "secret.md").write_text(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "leaked.md").write_text(SECRET)
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n")
    (root / "sub" / "b.md").write_text("# B\n")
    os.symlink(tmp_path / "secret.md", root / "secret.md")  # absolute link out of the root
    os.symlink("../outside", root / "outside")  # folder link out of the root
    os.symlink("a.md", root / "alias.md")  # file link inside the root
    os.symlink("sub", root / "linked")  # folder link inside the root
    if Path("/etc/passwd").exists():
        os.symlink("/etc/passwd", root / "passwd")
    return root


def _ids(entries) -> list[str]:
    return [entry.doc_id for entry in entries]


def _reasons(entries) -> dict[str, str]:
    return {entry.doc_id: entry.reason for entry in entries}


def _assert_nothing_outside(listing, root: Path) -> None:
    real_root = root.resolve()
    for ref in listing.refs:
        assert ref.path.resolve().is_relative_to(real_root), ref
        assert ref.uri.startswith(real_root.as_uri() + "/"), ref
        assert SECRET not in ref.path.read_text()


# --- A. symbolic links --------------------------------------------------------------------------------


def test_links_are_not_followed_by_default_and_each_is_reported(tree: Path) -> None:
    listing = list_documents(FolderSource(path=tree))

    assert _ids(listing.refs) == ["kb/a.md", "kb/sub/b.md"]
    _assert_nothing_outside(listing, tree)
    links = {"kb/alias.md", "kb/linked", "kb/outside", "kb/secret.md"}
    if (tree / "passwd").is_symlink():
        links.add("kb/passwd")
    assert _reasons(listing.skipped) == {doc_id: LINK_NOT_FOLLOWED for doc_id in links}
    assert LINK_NOT_FOLLOWED == "symbolic link (set follow_symlinks: true to follow links that stay inside the source)"
    assert listing.unreadable == []


def test_followed_links_stay_inside_the_root(tree: Path, tmp_path: Path) -> None:
    listing = list_documents(FolderSource(path=tree, follow_symlinks=True))

    # Inside the root: followed; the id is the link's path, the uri and path the target's.
    assert _ids(listing.refs) == ["kb/a.md", "kb/alias.md", "kb/linked/b.md", "kb/sub/b.md"]
    by_id = {ref.doc_id: ref for ref in listing.refs}
    assert by_id["kb/alias.md"].uri == (tree / "a.md").resolve().as_uri()
    assert by_id["kb/alias.md"].path == (tree / "a.md").resolve()
    assert by_id["kb/linked/b.md"].uri == (tree / "sub" / "b.md").resolve().as_uri()
    # Outside the root: never read, reported with the target.
    _assert_nothing_outside(listing, tree)
    reasons = _reasons(listing.skipped)
    assert reasons["kb/secret.md"] == f"symbolic link to {(tmp_path / 'secret.md').resolve()} leaves the source root"
    assert reasons["kb/outside"] == f"symbolic link to {(tmp_path / 'outside').resolve()} leaves the source root"
    if (tree / "passwd").is_symlink():
        assert reasons["kb/passwd"] == f"symbolic link to {Path('/etc/passwd').resolve()} leaves the source root"
    assert not any("passwd" in ref.uri for ref in listing.refs)


def test_link_loops_end_and_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "b.md").write_text("# B\n")
    os.symlink("..", root / "sub" / "up")  # to an ancestor
    os.symlink(".", root / "here")  # to itself
    os.symlink("ping", root / "pong")  # two links to each other
    os.symlink("pong", root / "ping")

    listing = list_documents(FolderSource(path=root, follow_symlinks=True))

    assert _ids(listing.refs) == ["kb/sub/b.md"]
    reasons = _reasons(listing.skipped)
    assert reasons["kb/sub/up"] == f"link loop: {root.resolve()} contains this link"
    assert reasons["kb/here"] == f"link loop: {root.resolve()} contains this link"
    assert set(_ids(listing.unreadable)) == {"kb/ping", "kb/pong"}
    assert "Too many levels of symbolic links" in _reasons(listing.unreadable)["kb/ping"]


def test_a_root_reached_through_a_link_is_listed_normally(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.md").write_text("# A\n")
    os.symlink(real, tmp_path / "kb")

    listing = list_documents(FolderSource(path=tmp_path / "kb"))

    assert _ids(listing.refs) == ["kb/a.md"] and listing.skipped == []
    assert listing.refs[0].uri == (real / "a.md").as_uri()


def test_broken_links_and_named_pipes(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    (root / "a.md").write_text("# A\n")
    os.symlink("gone.md", root / "broken.md")
    os.mkfifo(root / "pipe.md")  # opening it to parse would block the run forever

    followed = list_documents(FolderSource(path=root, follow_symlinks=True))
    assert _ids(followed.refs) == ["kb/a.md"]
    assert _reasons(followed.unreadable) == {
        "kb/broken.md": f"broken symbolic link to {root.resolve() / 'gone.md'}: it does not exist"
    }
    assert _reasons(followed.skipped) == {"kb/pipe.md": "not a regular file (named pipe)"}

    default = list_documents(FolderSource(path=root))
    assert _reasons(default.skipped) == {
        "kb/broken.md": LINK_NOT_FOLLOWED, "kb/pipe.md": "not a regular file (named pipe)"
    }
    assert default.unreadable == []


def test_excluded_links_are_not_reported(tree: Path) -> None:
    listing = list_documents(FolderSource(path=tree, include=["*.md"], exclude=["secret*", "outside", "passwd"]))
    assert set(_ids(listing.skipped)) == {"kb/alias.md", "kb/linked"}


# --- B. an entry that cannot be read is kept, not deleted ---------------------------------------------


def _record(doc_id: str, signal: str = "1:1") -> DocumentRecord:
    return DocumentRecord(
        doc_id=doc_id, source="kb", uri=f"file:///old/{doc_id}", signal=signal, content_hash="h" * 64,
        modified=1.0, first_seen=datetime(2025, 1, 1, tzinfo=timezone.utc),
        last_seen=datetime(2025, 6, 1, tzinfo=timezone.utc), indexed_at=datetime(2025, 6, 1, tzinfo=timezone.utc),
        indexed_in="20250601-000000", chunks=2,
    )


def _listing(source: FolderSource) -> Listing:
    """What the reindex flow's list step makes of a source."""
    return list_source(source)


def test_unreadable_entries_keep_their_base_records_and_the_run_says_so(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "data").mkdir(parents=True)
    (root / "mnt" / "nas").mkdir(parents=True)
    (root / "a.md").write_text("# A\n")
    (tmp_path / "secret.md").write_text(SECRET)
    os.symlink("data/guide.md", root / "guide.md")  # its target is about to be removed
    os.symlink("mnt/nas", root / "share")  # a share that is about to be unmounted
    os.symlink(tmp_path / "secret.md", root / "leak.md")  # an old release indexed it through the link
    os.symlink("loop", root / "mnt" / "loop")  # a link loop on the way to a file:
    os.symlink("mnt/loop/loop/x.md", root / "looped.md")  # its stat fails with ELOOP
    info = (root / "a.md").stat()
    base = {r.doc_id: r for r in [
        _record("kb/a.md", f"{info.st_size}:{info.st_mtime_ns}"),  # unchanged
        _record("kb/guide.md"), _record("kb/share/manual.md"), _record("kb/looped.md"),  # now unreadable
        _record("kb/removed.md"),  # simply gone: a deletion
        _record("kb/leak.md"),  # now skipped: a deletion
    ]}
    (root / "mnt" / "nas").rmdir()  # "unmounted": share is a broken link now

    listing = _listing(FolderSource(path=root, follow_symlinks=True))
    plan = plan_build([listing], "kb__20250601-000000", base, NOW)

    assert set(_ids(listing.unreadable)) == {"kb/guide.md", "kb/share", "kb/looped.md", "kb/mnt/loop"}
    carried = {r.doc_id: r for r in plan.carry}
    for doc_id in ("kb/guide.md", "kb/share/manual.md", "kb/looped.md"):
        assert carried[doc_id] == base[doc_id]  # exactly as it was: not even last_seen moved
    assert carried["kb/a.md"].last_seen == NOW
    assert sorted(_ids(plan.deleted)) == ["kb/leak.md", "kb/removed.md"]
    assert (plan.kept, plan.unchanged, plan.work) == (3, 1, [])
    unreadable_note, skipped_note = plan.notes
    assert unreadable_note.startswith("source 'kb': 4 entries could not be read")
    assert "kept 3 of their documents as they were" in unreadable_note
    gone = root.resolve() / "data" / "guide.md"
    assert f"kb/guide.md (broken symbolic link to {gone}: it does not exist)" in unreadable_note
    assert unreadable_note.endswith("; and 1 more")
    assert skipped_note == (
        f"source 'kb': skipped 1 entries: kb/leak.md (symbolic link to {(tmp_path / 'secret.md').resolve()} "
        "leaves the source root)"
    )
    # The gate counts only the real deletions as explained losses.
    assert deleted_at_source([listing], base, NOW) == 2


def test_a_file_gone_from_a_listing_is_still_a_deletion(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    listing = _listing(FolderSource(path=root, follow_symlinks=True))
    plan = plan_build([listing], "kb__20250601-000000", {"kb/gone.md": _record("kb/gone.md")}, NOW)
    assert _ids(plan.deleted) == ["kb/gone.md"] and plan.carry == [] and plan.notes == []


# --- C. poison file names -----------------------------------------------------------------------------


def test_undecodable_names_get_printable_reversible_ids_and_stay_fetchable(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9.md"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as file:
        file.write(b"# Cafe\n")

    [ref] = list_documents(FolderSource(path=root)).refs

    assert ref.doc_id == "kb/caf%E9.md" and ref.doc_id.isprintable()
    assert ref.uri == (root.resolve()).as_uri() + "/caf%E9.md"
    assert ref.path.read_bytes() == b"# Cafe\n"  # the real file system path, for fetching
    source, relative = decode_document_id(ref.doc_id)
    assert source == "kb" and os.fsencode(root / relative) == raw
    record_id(ref.doc_id)
    record_id(os.fsdecode(raw))  # the store never crashes on a raw name either


def test_control_bidi_and_format_characters_are_escaped_in_ids(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    root.mkdir()
    names = {
        "new\nline.md": "new%0Aline.md",
        "tab\there.md": "tab%09here.md",
        "cmd\u202etxt.md": "cmd%E2%80%AEtxt.md",  # RIGHT-TO-LEFT OVERRIDE: would print as "cmdtxt.md" reversed
        "rlm\u200f.md": "rlm%E2%80%8F.md",
        "del\x7f.md": "del%7F.md",
        "c1\x85.md": "c1%C2%85.md",
        "line\u2028sep.md": "line%E2%80%A8sep.md",
        "50%.md": "50%25.md",
        # Ordinary names keep the ids they always had.
        "plain.md": "plain.md",
        "café crème.md": "café crème.md",
        "文档.md": "文档.md",
        "Ünïcødé ñ.md": "Ünïcødé ñ.md",
    }
    for name in names:
        (root / name).write_text(f"# {name!r}\n")

    refs = list_documents(FolderSource(path=root)).refs

    assert sorted(r.doc_id for r in refs) == sorted(f"kb/{escaped}" for escaped in names.values())
    for ref in refs:
        assert ref.doc_id.isprintable() and not any(unicodedata.category(c) in ("Cc", "Cf") for c in ref.doc_id)
        assert ref.uri.isascii() and ref.uri.isprintable()
        assert decode_document_id(ref.doc_id) == ("kb", ref.path.name)
        assert ref.path.exists()


def test_document_ids_round_trip() -> None:
    names = ["a/b.md", "%41.md", "%%", "x%2Fy", "\udce9\udcff.md", "a\u202e\u2066/\x00\x1f\x9f.md", "日本/語"]
    for relative in names:
        doc_id = document_id("kb", relative)
        assert doc_id.isprintable()
        assert decode_document_id(doc_id) == ("kb", relative)


@pytest.mark.slow  # starts the real S3 server (SeaweedFS)
def test_s3_keys_use_the_same_ids(bucket, s3_endpoint: str) -> None:
    from rag.config import S3Source

    client, name = bucket
    for key in ("docs/plain.md", "docs/tab\there.md", "docs/cmd\u202etxt.md"):
        client.put_object(Bucket=name, Key=key, Body=b"# x\n")
    source = S3Source(url=f"s3://{name}/docs/", endpoint_url=s3_endpoint, name="s3docs")
    assert _ids(list_documents(source).refs) == ["s3docs/cmd%E2%80%AEtxt.md", "s3docs/plain.md", "s3docs/tab%09here.md"]


# --- end to end: the reindex flow ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_reindex_keeps_a_document_behind_an_unmounted_share(tmp_path: Path) -> None:
    import yaml

    from flows.reindex import reindex
    from testkit.helpers import doc_ids, snapshot

    root, store_path = tmp_path / "kb", tmp_path / "qdrant"
    (root / "mnt" / "nas").mkdir(parents=True)
    (root / "guide.md").write_text("# Guide\n\nThe guide explains how to rotate the API keys every month.\n")
    (root / "old.md").write_text("# Old\n\nAn old page about the parking rules for bicycles.\n")
    (root / "mnt" / "nas" / "manual.md").write_text("# Manual\n\nThe manual describes the espresso machine.\n")
    with open(os.fsencode(root) + b"/caf\xe9.md", "wb") as file:
        file.write(b"# Cafe\n\nThe cafe opens at eight in the morning.\n")
    os.symlink("mnt/nas", root / "share")  # the share is reached through a link inside the root
    (tmp_path / "secret.md").write_text(f"# Secret\n\n{SECRET}\n")
    os.symlink(tmp_path / "secret.md", root / "leak.md")
    config = tmp_path / "ragops.yaml"
    config.write_text(yaml.safe_dump({
        "alias": "kb", "store": {"location": str(store_path)}, "chunking": {"max_tokens": 96},
        "sources": [{"path": str(root), "name": "kb", "follow_symlinks": True,
                     "exclude": [".*", "*/.*", "*~", "mnt/*"]}],
    }))

    first = reindex(config=str(config))
    assert first["promoted"]
    assert doc_ids(snapshot(store_path, "kb")) == {"kb/guide.md", "kb/old.md", "kb/caf%E9.md", "kb/share/manual.md"}
    assert any("kb/leak.md (symbolic link to" in note and "leaves the source root" in note for note in first["notes"])
    assert not any(SECRET in payload["text"] for payload, _ in snapshot(store_path, "kb").values())

    shutil.move(root / "mnt" / "nas", tmp_path / "nas-offline")  # "unmounted": share is a broken link
    (root / "old.md").unlink()  # a real deletion, for contrast
    (root / "new.md").write_text("# New\n\nA new page about the lockers on the first floor.\n")
    second = reindex(config=str(config))

    assert second["promoted"] and second["counts"]["documents_deleted"] == 1
    assert second["counts"]["documents_new"] == 1
    assert doc_ids(snapshot(store_path, "kb")) == {"kb/guide.md", "kb/new.md", "kb/caf%E9.md", "kb/share/manual.md"}
    assert any(note.startswith("source 'kb': 1 entries could not be read") and "kept 1 of their documents" in note
               and "kb/share (broken symbolic link" in note for note in second["notes"])
