"""A LlamaIndex retriever over the alias: in-process (a ``Retriever``) or over HTTP (``ragops serve``).

Example:
    >>> from rag.config import Settings
    >>> from rag.serving import Retriever
    >>> from rag.serving.llamaindex import RagopsRetriever
    >>> retriever = RagopsRetriever(Retriever.from_settings(Settings.load("ragops.yaml")), k=3)
    >>> nodes = retriever.retrieve("how do I undo a bad promotion?")
    >>> nodes[0].node.metadata["doc_id"], nodes[0].score
"""

from __future__ import annotations

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.serving.client import ServiceClient, search_hits
from rag.serving.retriever import Retriever
from rag.serving.schema import SearchFilter


class RagopsRetriever(BaseRetriever):
    """Nodes from the promoted build of the alias; each node's metadata names the build that answered."""

    def __init__(self, source: Retriever | ServiceClient, *, k: int = 5,
                 filter: dict | SearchFilter | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source, self.k, self.filter = source, k, filter

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = []
        for hit in search_hits(self.source, query_bundle.query_str, self.k, self.filter):
            metadata = {"doc_id": hit.doc_id, "source_uri": hit.source_uri, "chunk_index": hit.chunk_index,
                        "title": hit.title, "page": hit.page, "version": hit.version}
            node = TextNode(id_=f"{hit.doc_id}#{hit.chunk_index}", text=hit.text, metadata=metadata)
            nodes.append(NodeWithScore(node=node, score=hit.score))
        return nodes
