"""Serving: the live build of an alias, to applications and agents.

- ``Retriever`` (``rag.serving.retriever``): in-process search that follows the alias;
- ``rag.serving.app``: the HTTP service ``ragops serve`` runs (FastAPI under uvicorn);
- ``rag.serving.mcp``: the MCP tools ``ragops mcp`` serves over stdio;
- ``rag.serving.client``: an HTTP client for the service;
- ``rag.serving.llamaindex`` and ``rag.serving.langchain``: framework retrievers over either.

Importing this package loads no model and opens nothing.
"""

from rag.serving.retriever import Answer, Retriever, Switch

__all__ = ["Answer", "Retriever", "Switch"]
