"""Sources of documents. Each connector turns a configured source into ``DocumentRef``s and fetches them.

A listing is all or nothing: a connector either returns a source's complete listing or raises
``SourceError``, so the build can infer deletions from what a listing lacks.
"""

from __future__ import annotations

from pathlib import Path

from connectors.folder import list_folder
from connectors.s3 import fetch_s3, list_s3, s3_client
from rag.config import FolderSource, S3Source
from rag.models import DocumentRef

__all__ = ["Fetcher", "list_documents", "list_folder", "list_s3"]


def list_documents(source: FolderSource | S3Source) -> list[DocumentRef]:
    """The complete listing of any configured source, in a stable order (metadata only, no content).

    Raises:
        SourceError: the source as a whole cannot be listed.
    """
    if isinstance(source, S3Source):
        return list(list_s3(source))
    return list(list_folder(source))


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
        return ref.path
