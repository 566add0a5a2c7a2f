"""Sources of documents. Each connector turns a configured source into ``DocumentRef``s."""

from __future__ import annotations

from connectors.folder import list_folder
from rag.config import FolderSource
from rag.models import DocumentRef

__all__ = ["list_documents", "list_folder"]


def list_documents(source: FolderSource) -> list[DocumentRef]:
    """The complete listing of any configured source, in a stable order (metadata only, no content).

    Raises:
        SourceError: the source as a whole cannot be listed.
    """
    return list(list_folder(source))
