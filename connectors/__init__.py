"""Sources of documents. Each connector turns a configured source into ``DocumentRef``s and fetches them.

A listing is all or nothing: a connector either returns a source's complete listing or raises
``SourceError``, so the build can infer deletions from what a listing lacks. Complete means every
entry is accounted for: listed, skipped with a reason, or unreadable with a reason (its documents are
then kept as they were, not deleted).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from connectors.folder import list_folder
from connectors.ids import printable
from connectors.s3 import fetch_s3, list_s3, s3_client
from rag.config import FolderSource, S3Source
from rag.errors import DocumentError, SourceError
from rag.failpoints import failpoint
from rag.listing import Listing, Skipped, SourceListing
from rag.models import DocumentRef, utc_now

__all__ = ["Fetcher", "Skipped", "SourceListing", "list_documents", "list_folder", "list_s3", "list_source"]


def list_source(source: FolderSource | S3Source) -> Listing:
    """A source's listing for a run: complete, or failed with the reason (never raises ``SourceError``).

    One source's outage never stops the others: a failed listing keeps that source's documents as
    they were (rag/index/plan.py). Throttling and server errors from S3 were already retried by botocore.
    """
    listed_at = utc_now()
    failpoint("listing")
    try:
        listed = list_documents(source)
    except SourceError as exc:
        return Listing(source=source.name, kind=source.kind, uri=source.uri, listed_at=listed_at, error=str(exc))
    return Listing(source=source.name, kind=source.kind, uri=source.uri, listed_at=listed_at,
                   refs=listed.refs, skipped=listed.skipped, unreadable=listed.unreadable)


def list_documents(source: FolderSource | S3Source) -> SourceListing:
    """The complete listing of any configured source, in a stable order (metadata only, no content):
    its documents (``refs``), and the entries it skipped or could not read, with reasons.

    Raises:
        SourceError: the source as a whole cannot be listed.
    """
    if isinstance(source, S3Source):
        return SourceListing(refs=list(list_s3(source)))
    return list_folder(source)


class Fetcher:
    """Makes a listed document available as a local file; one per run (it reuses S3 clients)."""

    def __init__(self, sources: list[FolderSource | S3Source]) -> None:
        self._sources = {source.name: source for source in sources}
        self._clients: dict[str, object] = {}

    def __call__(self, ref: DocumentRef, folder: Path) -> Path:
        """A local path to the document's bytes: the file itself for folders, a download for S3.

        Raises:
            DocumentError: the document could not be fetched.
        """
        source = self._sources[ref.source]
        if isinstance(source, S3Source):
            if source.name not in self._clients:
                self._clients[source.name] = s3_client(source)
            return fetch_s3(source, ref, folder, self._clients[source.name])
        assert ref.path is not None
        return _parseable(ref.path, folder)


def _parseable(path: Path, folder: Path) -> Path:
    """The file itself; or, when its path is not valid UTF-8, a link to it under a printable name in
    ``folder``: parsers encode file names as UTF-8 and fail on undecodable bytes.

    Raises:
        DocumentError: the link could not be made.
    """
    try:
        str(path).encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        # A folder of its own: two such files of a batch may have the same printable name.
        alias = Path(tempfile.mkdtemp(dir=folder)) / printable(path.name)
        os.symlink(path, alias)
    except OSError as exc:
        where = printable(str(path))
        raise DocumentError("fetch", f"cannot link {where} under a readable name: {exc.strerror}") from None
    return alias
