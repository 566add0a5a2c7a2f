"""The serving room: the live build of an alias, to applications and agents, in-process or over HTTP.

- ``retriever``: ``Retriever``, search that follows the alias (``Retriever.from_settings(settings)``);
  ``Answer`` (hits of one build) and ``Switch`` (a move of the alias it followed);
- ``batcher``: the queries of concurrent searches embedded together, one forward pass for all that wait;
- ``querylog``: the query log (query embeddings for ``ragops drift``) and its writer thread;
- ``app``: the HTTP service ``ragops serve`` runs (FastAPI under uvicorn): ``create_app``, the routes;
- ``service``: what the routes share (the Retriever opened in the background, keys, metrics) and their errors;
- ``asgi``: the ASGI wrappers around the app: the search fast path, the metrics, the body guard;
- ``schema``: the HTTP request and response bodies (the OpenAPI document);
- ``auth``: API keys, as SHA-256 hashes, with the aliases and scopes they allow;
- ``limits``: what a client may cost (body, header and time bounds, connections);
- ``telemetry``: the service's Prometheus metrics;
- ``client``: ``ServiceClient``, an HTTP client for the service;
- ``mcp``: the MCP tools ``ragops mcp`` serves over stdio;
- ``llamaindex``, ``langchain``: framework retrievers over a Retriever or a ServiceClient.

Importing this package loads no model, no web framework and opens nothing (``ServiceClient`` is imported
when first asked for: it loads httpx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rag.serving.retriever import Answer, Retriever, Switch

if TYPE_CHECKING:
    from rag.serving.client import ServiceClient

__all__ = ["Answer", "Retriever", "ServiceClient", "Switch"]


def __getattr__(name: str) -> Any:
    if name == "ServiceClient":
        from rag.serving.client import ServiceClient

        return ServiceClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
