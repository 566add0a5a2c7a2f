"""Local folder connector: walks a folder and yields a ``DocumentRef`` per file it should index."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

from connectors.globs import selected
from rag.config import FolderSource
from rag.errors import SourceError
from rag.models import DocumentRef

log = logging.getLogger(__name__)


def list_folder(source: FolderSource) -> Iterator[DocumentRef]:
    """Yield every file under ``source.path`` that matches its include globs and none of its excludes.

    Files come in a stable order (sorted relative paths), so runs are reproducible. Document ids are
    ``<source name>/<relative posix path>``: moving the whole folder keeps the ids, renaming a file
    changes its id.

    Raises:
        SourceError: the folder does not exist or cannot be read. Files that vanish or cannot be
            stat-ed during the walk are skipped with a warning, not fatal.
    """
    root = source.path
    if not root.exists():
        raise SourceError(f"source folder {root} does not exist; check `sources[].path` or --source")
    if not root.is_dir():
        raise SourceError(f"source {root} is not a folder; point --source at a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceError(f"source folder {root} is not readable by this user")

    def on_error(exc: OSError) -> None:
        # A subfolder we cannot enter must not pass silently: its files would look deleted later.
        raise SourceError(f"cannot read {exc.filename} in source {source.name!r}: {exc.strerror}")

    relative_paths: list[str] = []
    for folder, subfolders, files in os.walk(root, onerror=on_error, followlinks=False):
        subfolders.sort()
        for name in files:
            relative = Path(folder, name).relative_to(root).as_posix()
            if selected(relative, source.include, source.exclude):
                relative_paths.append(relative)

    for relative in sorted(relative_paths):
        path = root / relative
        try:
            stat = path.stat()
        except OSError as exc:
            log.warning("skipping %s: %s", path, exc.strerror)
            continue
        yield DocumentRef(
            doc_id=f"{source.name}/{relative}",
            source=source.name,
            uri=path.resolve().as_uri(),
            path=path,
            size=stat.st_size,
            modified=stat.st_mtime,
            signal=f"{stat.st_size}:{stat.st_mtime_ns}",
        )
