"""A LangChain retriever over the alias: in-process (a ``Retriever``) or over HTTP (``ragops serve``).

Example:
    >>> from rag.serving.client import ServiceClient
    >>> from rag.serving.langchain import RagopsRetriever
    >>> retriever = RagopsRetriever(source=ServiceClient("http://127.0.0.1:8000"), k=3)
    >>> docs = retriever.invoke("how do I undo a bad promotion?")
    >>> docs[0].metadata["doc_id"], docs[0].metadata["score"]
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from rag.serving.client import search_hits


class RagopsRetriever(BaseRetriever):
    """Documents from the promoted build of the alias; each one's metadata names the build and its score."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    source: Any  # a rag.serving.Retriever or a rag.serving.client.ServiceClient
    k: int = 5
    filter: dict | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [
            Document(id=f"{hit.doc_id}#{hit.chunk_index}", page_content=hit.text, metadata={
                "doc_id": hit.doc_id, "source_uri": hit.source_uri, "chunk_index": hit.chunk_index,
                "title": hit.title, "page": hit.page, "score": hit.score, "version": hit.version})
            for hit in search_hits(self.source, query, self.k, self.filter)
        ]
