"""Local folder connector: walks a folder and lists a ``DocumentRef`` per file it should index.

Nothing outside the source root is ever read. Every path is resolved, and an entry that resolves
outside the root is skipped, whatever `follow_symlinks` says. Entries that are not listed are
returned with the reason (``SourceListing.skipped`` and ``unreadable``), not just logged, so that the
run can say what it left out and the build can keep what it could not see.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from connectors.globs import selected
from connectors.ids import document_id, printable
from rag.config import FolderSource
from rag.errors import SourceError
from rag.listing import Skipped, SourceListing
from rag.models import DocumentRef

log = logging.getLogger(__name__)

LINK_NOT_FOLLOWED = "symbolic link (set follow_symlinks: true to follow links that stay inside the source)"


def list_folder(source: FolderSource) -> SourceListing:
    """Every file under ``source.path`` that matches its include globs and none of its excludes.

    Files come in a stable order (sorted ids), so runs are reproducible. Document ids are
    ``<source name>/<relative posix path>`` (``connectors.ids``): moving the whole folder keeps the ids,
    renaming a file changes its id. A file reached through a followed link has the link's path as its
    id and the target's ``file://`` URI.

    Symbolic links are skipped unless ``source.follow_symlinks``; even then, a link whose target
    resolves outside the root is skipped, and a link to a folder it lies in (a loop) is not walked.
    Named pipes, sockets and devices are skipped. A file that is listed but cannot be stat-ed (a broken
    link, a vanished file) is *unreadable*: the listing says nothing about it, so the build keeps it.

    Raises:
        SourceError: the folder, or a folder under it, does not exist or cannot be read.
    """
    root = source.path
    if not root.exists():
        raise SourceError(f"source folder {root} does not exist; check `sources[].path` or --source")
    if not root.is_dir():
        raise SourceError(f"source {root} is not a folder; point --source at a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceError(f"source folder {root} is not readable by this user")
    walk = _Walk(source, Path(os.path.realpath(root)))
    walk.run(root)
    return SourceListing(
        refs=sorted(walk.refs, key=lambda ref: ref.doc_id),
        skipped=sorted(walk.skipped, key=lambda entry: entry.doc_id),
        unreadable=sorted(walk.unreadable, key=lambda entry: entry.doc_id),
    )


@dataclass
class _Walk:
    """One walk of a source folder: what it found so far, and the folders still to walk."""

    source: FolderSource
    real_root: Path
    refs: list[DocumentRef] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unreadable: list[Skipped] = field(default_factory=list)
    #: (folder to scan, its relative path + "/", the real folders (st_dev, st_ino) it lies in)
    pending: list[tuple[Path, str, frozenset[tuple[int, int]]]] = field(default_factory=list)

    def run(self, root: Path) -> None:
        """Walk from the root; folders are walked one after another, not recursively (no depth limit)."""
        self._enter(root, "", frozenset())
        while self.pending:
            folder, prefix, ancestors = self.pending.pop()
            for entry in self._scan(folder):
                relative = prefix + entry.name
                if entry.is_symlink():
                    self._link(entry, relative, ancestors)
                elif entry.is_dir(follow_symlinks=False):
                    self._enter(Path(entry.path), relative, ancestors)
                elif entry.is_file(follow_symlinks=False):
                    self._file(relative, Path(entry.path))
                elif self._wanted(relative):
                    self._skip(relative, _not_a_file(entry))

    def _scan(self, folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            # A subfolder we cannot enter must not pass silently: its files would look deleted later.
            where = printable(os.fsdecode(exc.filename or folder))
            raise SourceError(f"cannot read {where} in source {self.source.name!r}: {exc.strerror}") from None

    def _enter(self, folder: Path, relative: str, ancestors: frozenset[tuple[int, int]]) -> None:
        """Queue a folder to walk, unless it is one of the real folders it lies in: a loop.

        Loops are told by the real folders on the way down (``ancestors``), not by every folder walked:
        a link to a folder listed elsewhere is walked again under the link's path, as a file link is.
        """
        try:
            info = os.stat(folder)
        except OSError as exc:
            raise SourceError(
                f"cannot read {printable(str(folder))} in source {self.source.name!r}: {exc.strerror}"
            ) from None
        identity = (info.st_dev, info.st_ino)
        if identity in ancestors:
            if self._not_excluded(relative):
                self._skip(relative, f"link loop: {printable(os.path.realpath(folder))} contains this link")
            return
        self.pending.append((folder, relative + "/" if relative else "", ancestors | {identity}))

    def _link(self, entry: os.DirEntry, relative: str, ancestors: frozenset[tuple[int, int]]) -> None:
        """A symbolic link: skipped, unless followed and its target is inside the root."""
        if not self.source.follow_symlinks:
            # Only a stat of the target, to report folder links by the folder rule; nothing is read.
            shown = self._not_excluded(relative) if _points_at_folder(entry) else self._wanted(relative)
            if shown:
                self._skip(relative, LINK_NOT_FOLLOWED)
            return
        target = Path(os.path.realpath(entry.path))  # non-strict: a broken link still has a target
        if not target.is_relative_to(self.real_root):
            if self._not_excluded(relative):
                self._skip(relative, f"symbolic link to {printable(str(target))} leaves the source root")
            return
        try:
            info = os.stat(target)
        except OSError as exc:
            # File or folder, we cannot tell: whatever the base holds under this path is kept.
            if self._not_excluded(relative):
                self._unreadable(relative, f"broken symbolic link to {printable(str(target))}: {_why(exc)}")
            return
        if stat.S_ISDIR(info.st_mode):
            self._enter(target, relative, ancestors)  # walked like a real folder: the globs judge its files
        elif stat.S_ISREG(info.st_mode):
            self._file(relative, target)
        elif self._wanted(relative):
            self._skip(relative, f"symbolic link to {printable(str(target))}, which is not a regular file")

    def _file(self, relative: str, path: Path) -> None:
        """A regular file (or a followed link's target): listed if the globs select it."""
        if not self._wanted(relative):
            return
        # Resolve even plain files: a folder swapped for a link during the walk must not lead outside.
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.real_root):
            self._skip(relative, f"resolves to {printable(str(real))}, outside the source root")
            return
        try:
            info = os.stat(real)
        except OSError as exc:
            self._unreadable(relative, f"cannot read its size and time: {_why(exc)}")
            return
        self.refs.append(
            DocumentRef(
                doc_id=document_id(self.source.name, relative),
                source=self.source.name,
                uri=real.as_uri(),  # percent-encodes the file name's bytes: always printable
                path=real,
                size=info.st_size,
                modified=info.st_mtime,
                signal=f"{info.st_size}:{info.st_mtime_ns}",
            )
        )

    def _wanted(self, relative: str) -> bool:
        return selected(relative, self.source.include, self.source.exclude)

    def _not_excluded(self, relative: str) -> bool:
        """For folders and entries of unknown type, which ``include`` (file patterns) cannot judge."""
        return selected(relative, ["*"], self.source.exclude)

    def _skip(self, relative: str, reason: str) -> None:
        doc_id = document_id(self.source.name, relative)
        log.info("skipping %s: %s", doc_id, reason)
        self.skipped.append(Skipped(doc_id=doc_id, reason=reason))

    def _unreadable(self, relative: str, reason: str) -> None:
        doc_id = document_id(self.source.name, relative)
        log.warning("cannot read %s (kept as it was): %s", doc_id, reason)
        self.unreadable.append(Skipped(doc_id=doc_id, reason=reason))


def _points_at_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link loop, a target we may not stat: not known to be a folder
        return False


def _not_a_file(entry: os.DirEntry) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "not a regular file"
    for test, kind in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return f"not a regular file ({kind})"
    return "not a regular file"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "it does not exist"
    return exc.strerror or type(exc).__name__
