"""The alias as MCP tools for agents (``ragops mcp``, stdio): ``search`` and ``status``.

The tools answer from an in-process Retriever, which follows promotions and rollbacks like the HTTP
service does. A call the tool refuses (a bad query, an unknown version, an unreadable store) returns its
reason to the agent as the tool's error; only a bug stays a bare "Error executing tool" with its
traceback on stderr. Logs go to stderr: on stdio, stdout is the protocol.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from rag.config import Settings
from rag.errors import RagopsError
from rag.serving.retriever import Retriever
from rag.serving.schema import ModelInfo, SearchFilter, k_problem, query_problem
from rag.store.names import version_of

log = logging.getLogger(__name__)


def _reasons_for_the_agent(tool: Callable) -> Callable:
    """The tool, with what it refuses raised as the SDK's ``ToolError``: the agent reads that message, where
    any other exception reaches it as a bare "Error executing tool <name>" (the reason only in our stderr)."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(tool)
    def call(*args, **kwargs):
        try:
            return tool(*args, **kwargs)
        except RagopsError as exc:  # expected (a store that cannot be read...): its message says what to do
            raise ToolError(str(exc)) from exc

    return call


def build_server(settings: Settings, retriever: Retriever):
    """An MCP server whose tools search and describe ``settings.alias`` through ``retriever``."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("ragops", instructions=f"Search the documents indexed in alias {settings.alias!r}. Every "
                     "answer names the index version that produced it.")
    serve = settings.serve

    @server.tool()
    @_reasons_for_the_agent
    def search(query: str, k: int = 5, filter: SearchFilter | None = None) -> dict:
        """Find the passages most relevant to `query` in the promoted index, best first.

        Args:
            query: what to look for, in natural language.
            k: how many passages (1 to serve.max_k).
            filter: only passages meeting all these conditions (source, doc_id, doc_id_prefix, title, page).
        """
        for field, problem in (("query", query_problem(query, serve)), ("k", k_problem(k, serve))):
            if problem:
                raise ToolError(f"{field}: {problem}")  # the agent reads the reason (the same words as HTTP's 422)
        answer = retriever.answer([query], k, where=filter.conditions() if filter else ())
        return {"version": answer.version, "model": answer.manifest.model.name,
                "model_info": ModelInfo.of(answer.manifest.model).model_dump(), "truncated": answer.truncated[0],
                "hits": [hit.model_dump(mode="json") for hit in answer.hits[0]]}

    @server.tool()
    @_reasons_for_the_agent
    def status() -> dict:
        """What the index holds now: the live version, its model, its documents and chunks, its gate."""
        manifest = retriever.manifest
        with retriever.reading() as store:
            builds = store.list_builds(settings.alias)
        return {"alias": settings.alias, "version": manifest.version, "model": manifest.model.name,
                "model_info": ModelInfo.of(manifest.model).model_dump(),
                "documents": manifest.counts.documents_indexed, "chunks": manifest.counts.chunks,
                "created_at": manifest.created_at.isoformat(),
                "gate_passed": manifest.gate.passed if manifest.gate else None,
                "metrics": manifest.evaluation.metrics if manifest.evaluation else {},
                "kept_versions": [version_of(b) for b in builds]}

    return server


def run_stdio(settings: Settings) -> None:
    """Open the alias and serve its tools over stdio until the host closes the pipe."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with Retriever.from_settings(settings) as retriever:
        build_server(settings, retriever).run("stdio")
